"""Pull a short final answer out of free model text, and put it in canonical form so that
votes count "1,000", "1000" and "1000.0" as the same answer.

Small models often ignore the requested format, so extraction falls back in order:
an explicit `\\boxed{}`, an "Answer:" / "the answer is" line, then the last number, then
the last non-empty line (free text only).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUMBER = re.compile(
    r"(?<![\w.])[-−]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?(?![\w])|(?<![\w.])[-−]?\.\d+"
)
_ANSWER_LINE = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*(.+?)(?:\n|$)", re.IGNORECASE)
_CHOICE = re.compile(r"\(([A-J])\)|\b([A-J])\)|(?:option|choice)\s+([A-J])\b|^\s*([A-J])\s*$", re.MULTILINE)


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


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def extract_answer(text: str, format: str = "auto") -> str | None:
    """The model's final answer in canonical form, or None when nothing answer-like is there.

    `format` is one of auto, number, choice, text, math (code answers are not extracted).
    """
    if format == "code":
        return extract_code(text)
    candidate = boxed(text)
    if candidate is None:
        lines = _ANSWER_LINE.findall(text)
        candidate = lines[-1].strip() if lines else None
    if format == "math":
        return _strip_math(candidate if candidate is not None else (last_number(text) or "")) or None
    if format == "choice":
        source = candidate if candidate is not None else text
        letters = ["".join(groups) for groups in _CHOICE.findall(source)]
        if not letters and candidate is not None:
            letters = re.findall(r"\b([A-J])\b", candidate)
        return letters[-1 if candidate is None else 0].upper() if letters else None
    if candidate is not None:
        candidate = _simple_latex(candidate)
        if "\\" in candidate and format == "auto":
            return _strip_math(candidate)
        number = last_number(candidate)
        if number is not None and (format == "number" or _is_mostly_number(candidate, number)):
            return canonical_number(number)
        if format == "number":
            return None
        return canonical_text(candidate)
    number = last_number(text)
    if number is not None and format in ("auto", "number"):
        return canonical_number(number)
    if format == "number":
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return canonical_text(lines[-1]) if lines else None


def _is_mostly_number(candidate: str, number: str) -> bool:
    rest = candidate.replace(number, " ", 1)
    return len(re.findall(r"[A-Za-z]+", rest)) <= 3


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
