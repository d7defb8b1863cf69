"""pass@k, majority@k and coverage against brute-force enumeration on small cases."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from fractions import Fraction

import pytest

from ponder.metrics import (
    accuracy,
    coverage,
    majority_at_k,
    mean_pass_at_k,
    pass_at_k,
    powers_of_two,
    summarize,
)


def brute_pass_at_k(n: int, c: int, k: int) -> Fraction:
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(outcomes[i] for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumeration_over_all_k_subsets(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(brute_pass_at_k(n, c, k)), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n() -> None:
    # the naive comb() ratio would need 10^290-sized integers here; the product form does not
    value = pass_at_k(1000, 3, 100)
    assert value == pytest.approx(1 - math.comb(997, 100) / math.comb(1000, 100), rel=1e-12)
    assert pass_at_k(1000, 0, 500) == 0.0
    assert pass_at_k(1000, 1000, 1) == 1.0
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)


def test_pass_at_k_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_mean_pass_at_k_and_coverage() -> None:
    samples = [[True, False, False, False], [False, False, False, False], [True, True, True, True]]
    assert mean_pass_at_k(samples, 1) == pytest.approx((0.25 + 0 + 1) / 3)
    assert mean_pass_at_k(samples, 4) == pytest.approx(2 / 3)
    assert mean_pass_at_k(samples, 5) is None
    assert coverage(samples) == pytest.approx(2 / 3)
    assert accuracy([True, False, True, True]) == 0.75


def brute_majority(answers: list[str | None], correct: list[bool], k: int) -> float:
    right = {a for a, c in zip(answers, correct, strict=True) if c}
    scores = []
    for subset in itertools.combinations(range(len(answers)), k):
        votes = Counter(answers[i] for i in subset if answers[i] is not None)
        if not votes:
            scores.append(0.0)
            continue
        top = max(votes.values())
        tied = [a for a, v in votes.items() if v == top]
        scores.append(sum(a in right for a in tied) / len(tied))
    return sum(scores) / len(scores)


def test_majority_at_k_matches_enumeration() -> None:
    answers = ["7", "7", "8", None, "7", "9"]
    correct = [a == "7" for a in answers]
    for k in range(1, len(answers) + 1):
        assert majority_at_k(answers, correct, k) == pytest.approx(brute_majority(answers, correct, k))
    assert majority_at_k(answers, correct, 1) == pytest.approx(3 / 6)
    assert majority_at_k(["1", "2"], [True, False], 2) == pytest.approx(0.5)  # a tie is a coin flip


def test_majority_at_k_monte_carlo_is_close_and_seeded() -> None:
    answers = ["a"] * 9 + ["b"] * 7 + ["c"] * 4
    correct = [a == "a" for a in answers]
    exact = majority_at_k(answers, correct, 7, max_subsets=10**6)
    estimate = majority_at_k(answers, correct, 7, max_subsets=3000, seed=1)
    assert estimate == pytest.approx(exact, abs=0.03)
    assert estimate == majority_at_k(answers, correct, 7, max_subsets=3000, seed=1)


def test_powers_of_two() -> None:
    assert powers_of_two(1) == [1]
    assert powers_of_two(6) == [1, 2, 4, 6]
    assert powers_of_two(8) == [1, 2, 4, 8]


def test_summarize_rows() -> None:
    base = {
        "prompt_tokens": 10,
        "reasoning_tokens": 4,
        "completion_tokens": 6,
        "total_tokens": 16,
        "seconds": 1.0,
        "usd": 0.5,
    }
    rows = [
        {**base, "answer": "7", "correct": True, "samples": [["7", True], ["8", False]]},
        {**base, "answer": "8", "correct": False, "samples": [["8", False], ["9", False]]},
    ]
    s = summarize(rows)
    assert s["accuracy"] == 0.5
    assert s["pass_at_k"] == {"1": 0.25, "2": 0.5}
    assert s["coverage"] == 0.5
    assert s["majority_at_k"]["2"] == pytest.approx(0.25)
    assert s["prompt_tokens_per_problem"] == 10 and s["reasoning_tokens_per_problem"] == 4
    assert s["usd_total"] == 1.0 and s["seconds_per_problem"] == 1.0
    assert summarize([])["problems"] == 0
