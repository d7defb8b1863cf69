"""Extraction: table-driven cases (the issue's reproductions included), and the fixture
corpus of real bundled-model samples: no prose answers, fewer split votes than the rule on
main before (a frozen copy in tests/fixtures/extract_before.py.txt)."""

import re
import sys
from pathlib import Path

import pytest

from fakes import ScriptedEngine
from ponder import athink
from ponder.datasets.base import final_answers
from ponder.extract import SHORT_WORDS, canonical_number, extract_answer, extract_code, final_answer_text
from ponder.strategies.refine import Refine

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import vote_split  # noqa: E402  (the benchmark's split count is the test's oracle)


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ("17 + 25 = 42.", "auto", "42"),
        ("The answer is 1,000.", "auto", "1000"),
        ("Answer: $1000.0", "auto", "1000"),
        ("Answer: 42 apples", "auto", "42"),
        ("so the result is \\boxed{\\frac{1}{2}}", "auto", "1/2"),
        ("\\boxed{\\frac{4}{2}}", "auto", "2"),
        ("\\boxed{\\sqrt{2}}", "auto", "\\sqrt{2}"),
        ("x = -3.50", "auto", "-3.5"),
        ("Answer:  Paris. ", "auto", "paris"),
        ("I think it is\n\n  Blue  ", "auto", "blue"),
        ("First 3 then 4, so Answer: 7\nAnswer: 8", "number", "8"),
        ("no digits here", "number", None),
        ("Answer: (B)", "choice", "B"),
        ("I pick option C", "choice", "C"),
        ("", "auto", None),
        ("Final answer: 12%", "auto", "12"),
        ("\\boxed{x^2 + 1}", "math", "x^2 + 1"),
        ("so Answer: x = 5, y = -3", "math", "x = 5, y = -3"),
        ("Answer: x^2 + 2x + 1", "math", "x^2 + 2x + 1"),
        # issue 11: a marked line with a number and words is the number, in every format that counts
        ("= 38 The answer is correct, and it's 38.", "auto", "38"),
        ("= 38 The answer is correct, and it's 38.", "number", "38"),
        ("= 38 The answer is correct, and it's 38.", "math", "38"),
        ("So the final answer is 16*3 = 50 which is what we want.", "auto", "50"),
        ("So, the final answer is 15, which is 15 in this context.", "auto", "15"),
        ("The answer isn't obvious: 6 * 7 = 42", "auto", "42"),
        # a verdict on an answer is not an answer (refine revisions say this)
        ("The answer is correct.", "auto", None),
        ("The answer is correct.\nThe answer is correct.", "auto", None),
        ("2 + 3 = 5. Answer: Correct!", "auto", "5"),
        ("The answer is correct.", "number", None),
        # prose is never a short answer: refine's "correct"-style revisions, direct cut at 16 tokens
        ("A complete and correct answer is provided in the previous response.", "auto", None),
        ("To solve this problem, we need to break it down step by step. First", "auto", None),
        ("The answer is provided in the previous response", "auto", None),
        ("I think the capital of France is Paris, a lovely place", "auto", None),
        ("Answer: New York City", "auto", "new york city"),
        ("The final answer is:", "auto", None),
        # text format: a marked line is taken whole (word answers can be sentences), unmarked prose is not
        ("Answer: the quick brown fox jumps", "text", "the quick brown fox jumps"),
        ("Answer: 12 monkeys", "text", "12 monkeys"),
        ("Let me sort these words for you now\nthen I will be done with it", "text", None),
        ("Sorted:\ncat, dog", "text", "cat, dog"),
        ("The answer is correct.", "text", None),
    ],
)
def test_extract(text: str, fmt: str, expected: str | None) -> None:
    assert extract_answer(text, fmt) == expected


@pytest.mark.parametrize(
    ("raw", "canon"),
    [
        ("1,000", "1000"),
        ("1000.0", "1000"),
        ("1000", "1000"),
        ("-.5", "-0.5"),
        ("0.50", "0.5"),
        ("$3", "3"),
        ("6/3", "2"),
        ("1/3", "1/3"),
    ],
)
def test_canonical_numbers_vote_together(raw: str, canon: str) -> None:
    assert canonical_number(raw) == canon


def test_extract_code_takes_last_block_even_unterminated() -> None:
    text = "Here:\n```python\ndef f():\n    return 1\n```\nBetter:\n```python\ndef f():\n    return 2\n"
    assert extract_code(text) == "def f():\n    return 2\n"


def test_extract_code_prefers_the_block_that_defines_over_a_usage_example() -> None:
    text = "```python\ndef add(a, b):\n    return a + b\n```\nUsage:\n```python\nprint(add(1, 2))\n```"
    assert extract_code(text) == "def add(a, b):\n    return a + b\n"


def test_final_answer_text_is_what_graders_read_raw() -> None:
    assert final_answer_text("so \\boxed{\\dfrac{1}{2}} and Answer: 3") == "\\dfrac{1}{2}"
    assert final_answer_text("x\nAnswer: 3 apples\nmore") == "3 apples"
    assert final_answer_text("no marker, 42") is None
    assert final_answers("42", "so the answer is 42 apples", "number") == ["42", "42 apples"]


async def test_refine_keeps_the_draft_answer_when_a_revision_loses_it() -> None:
    """The bundled model's revisions often say "the answer is provided above" instead of an
    answer; refine must not return that prose (on main it answered "correct")."""
    engine = ScriptedEngine(
        [
            "12 - 5 = 7. Answer: 7",
            "Check it again.",
            "A complete and correct answer is provided in the previous response.",
            "Still not right.",
            "The answer is correct.",
            "No.",
        ]
    )
    answer = await athink(
        "Tom has 12 apples and gives away 5. How many are left?",
        strategy=Refine(max_rounds=2),
        engine=engine,
        store=False,
    )
    assert answer.answer == "7"
    assert len(engine.calls) == 6  # every round ran: the draft was kept, not re-asked


def test_corpus_is_real_model_samples_of_every_family() -> None:
    rows = vote_split.read_corpus(FIXTURES / "samples.jsonl")
    assert {r["task"] for r in rows} == set(vote_split.FAMILIES)
    assert all(len(r["samples"]) == 8 and r["gold"] for r in rows)
    assert (FIXTURES / "samples.jsonl").stat().st_size < 1_000_000


def test_corpus_has_no_prose_answers_and_fewer_split_votes_than_before() -> None:
    """In `auto` (what `ponder think` uses) the rule on main let prose through and split
    votes; in each question's own format (`number`, as the bench uses) it must not get worse."""
    rows = vote_split.read_corpus(FIXTURES / "samples.jsonl")
    cache: dict[tuple[str, str], bool] = {}
    for fmt in ("auto", None):
        answers = [extract_answer(t, fmt or r["format"]) for r in rows for t in r["samples"]]
        assert [a for a in answers if a is not None and len(re.findall(r"[^\W\d_]+", a)) > SHORT_WORDS] == []
        after = vote_split.measure(rows, extract_answer, fmt, cache)["all"]
        before = vote_split.measure(rows, vote_split.load_before(), fmt, cache)["all"]
        assert after.prose == 0
        assert after.correct >= before.correct
        if fmt == "auto":
            assert after.splits < before.splits
        else:
            assert after.splits <= before.splits
