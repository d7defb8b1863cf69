import pytest

from ponder.extract import canonical_number, extract_answer, extract_code


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
