"""Pull a short final answer out of free model text, and put it in canonical form so that
votes count "1,000", "1000" and "1000.0" as the same answer. Every strategy, verifier and
dataset grader goes through here, so a vote and a grade never disagree on what was answered.

Small models often ignore the requested format, so extraction falls back in order:
an explicit `\\boxed{}`, an "Answer:" / "the answer is" line, then the last number, then
the last non-empty line. Two rules keep prose out of votes (a prose answer splits a vote:
"correct, and it's 38" is not counted with "38"):

- a final-answer line that holds a number is that number (`auto`, `number`, and `math`
  when the line is prose), whatever words surround it;
- free text becomes an answer only when it looks like one: a word or short phrase of at
  most SHORT_WORDS words, not a verdict on an answer ("the answer is correct" says nothing
  about what the answer is). `text` format takes a marked final-answer line whole (its
  answers may be sentences), but its unmarked fallback is held to the same rule.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

SHORT_WORDS = 3  # "new york city" is an answer; "the result is 38" is prose

_NUMBER = re.compile(
    r"(?<![\w.])[-−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?(?![\w])|(?<![\w.])[-−]?\.\d+"
)
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_ANSWER_LINE = re.compile(r"(?:final answer|\banswer)\s*(?:\bis\b|:|=)\s*:?\s*(.+?)(?:\n|$)", re.IGNORECASE)
_CHOICE = re.compile(r"\(([A-J])\)|\b([A-J])\)|(?:option|choice)\s+([A-J])\b|^\s*([A-J])\s*$", re.MULTILINE)
_VERDICTS = {"correct", "incorrect", "not correct", "wrong", "accurate", "inaccurate"}  # not "true", "yes"
_WORD = re.compile(r"(?<![\\\w])[^\W\d_]{2,}")  # a word of two letters or more, not a LaTeX command
_SENTENCE_BREAK = re.compile(r"[.!?;]\s+\S|[:,]\s*$")


def boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} (or \\fbox{...}), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def final_answer_text(text: str) -> str | None:
    """The raw text the model marked as its final answer: the last \\boxed{} or else the last
    "Answer: ..." / "the answer is ..." line; None when nothing is marked."""
    found = boxed(text)
    if found is None:
        lines = _ANSWER_LINE.findall(text)
        found = lines[-1].strip() if lines else None
    return found


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def is_number(text: str) -> bool:
    """A plain decimal number ("-12", "3.5"): what makes a gold answer a `number` problem."""
    return _PLAIN_NUMBER.fullmatch(text.strip()) is not None


def extract_answer(text: str, format: str = "auto") -> str | None:
    """The model's final answer in canonical form, or None when nothing answer-like is there.

    `format` is one of auto, number, choice, text, math, code (code: the code block).
    """
    if format == "code":
        return extract_code(text)
    marked = final_answer_text(text)
    if marked is not None and _is_verdict(marked):
        marked = None
    if format == "choice":
        return _choice(text, marked)
    if format == "math":
        if marked is not None and "\\" not in marked and _WORD.search(marked) and last_number(marked):
            marked = last_number(marked)  # "42 apples", "correct, and it's 38": the number
        if marked is not None and ("\\" in marked or not _is_prose(marked)):
            return _strip_math(canonical_number(marked) if _NUMBER.fullmatch(marked) else marked) or None
        number = last_number(text)
        return canonical_number(number) if number is not None else None
    if marked is not None:
        marked = _simple_latex(marked)
        if "\\" in marked and format == "auto":
            return _strip_math(marked)
        number = last_number(marked)
        if number is not None and format in ("auto", "number"):
            return canonical_number(number)
        if format == "text" or (format == "auto" and not _is_prose(marked)):
            return canonical_text(marked) or None
    number = last_number(text)
    if format == "number" or (number is not None and format == "auto"):
        return canonical_number(number) if number is not None else None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return canonical_text(lines[-1]) if lines and not _is_prose(lines[-1]) else None


def _choice(text: str, marked: str | None) -> str | None:
    source = marked if marked is not None else text
    letters = ["".join(groups) for groups in _CHOICE.findall(source)]
    if not letters and marked is not None:
        letters = re.findall(r"\b([A-J])\b", marked)
    return letters[-1 if marked is None else 0].upper() if letters else None


def _is_prose(raw: str) -> bool:
    """More than a short phrase: too many words (symbols and numbers are not words, so
    "x = 5, y = 3" is short), or a sentence break inside."""
    s = raw.strip().strip("*_`").strip()
    words = [token for token in s.split() if re.search(r"[^\W\d_]", token)]
    return len(words) > SHORT_WORDS or bool(_SENTENCE_BREAK.search(s))


def _is_verdict(raw: str) -> bool:
    """ "correct", "incorrect": what a model says *about* an answer, e.g. in a revision."""
    return canonical_text(raw) in _VERDICTS


def canonical_number(raw: str) -> str:
    """ "1,000" -> "1000", "1000.0" -> "1000", "$5" -> "5", "-.5" -> "-0.5", "50%" -> "50"."""
    s = raw.replace("−", "-").replace(",", "").replace("$", "").replace("%", "").replace(" ", "")
    if "/" in s:
        num, _, den = s.partition("/")
        try:
            value = Decimal(num) / Decimal(den)
        except (InvalidOperation, ZeroDivisionError):
            return s
        if value == value.to_integral_value():
            return str(int(value))
        return s
    try:
        value = Decimal(s)
    except InvalidOperation:
        return s
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def canonical_text(raw: str) -> str:
    """Case- and whitespace-insensitive form of a word answer, outer punctuation dropped."""
    s = raw.strip().strip("*_`").strip()
    s = re.sub(r"\s+", " ", s).strip(" .,:;!\"'").lower()
    return s


_FRAC = re.compile(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}")


def _simple_latex(s: str) -> str:
    """Rewrite the LaTeX a vote should see through: \\frac{1}{2} -> 1/2, \\text{...} -> ...."""
    s = _FRAC.sub(r"\1/\2", s)
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    return s.replace("\\!", "").replace("\\,", "")


def _strip_math(s: str) -> str:
    s = s.strip().strip("$").strip()
    return s.rstrip(".").strip()


_CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The code of a response: the last fenced block that defines something (models often
    add a usage example after the solution), else the last block (an unterminated last
    block counts), else the whole text."""
    blocks = _CODE_BLOCK.findall(text)
    if blocks:
        defining = [b for b in blocks if re.search(r"^\s*(?:async\s+def|def|class)\s", b, re.MULTILINE)]
        return (defining or blocks)[-1].rstrip() + "\n"
    return text if text.strip() else None
