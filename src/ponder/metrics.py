"""Benchmark metrics: accuracy, pass@k, majority@k, coverage and what they cost.

pass@k uses the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models
Trained on Code"): with n samples of which c are correct, the chance that k drawn without
replacement contain a correct one is 1 - C(n-c, k) / C(n, k), computed as a product so that
large n neither overflows nor loses precision.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from statistics import fmean
from typing import Any


def accuracy(correct: Iterable[bool]) -> float:
    values = [bool(c) for c in correct]
    return fmean(values) if values else 0.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(samples: Sequence[Sequence[bool]], k: int) -> float | None:
    """pass@k averaged over problems, each given as its samples' correctness; None when
    some problem has fewer than k samples (the estimate would be undefined)."""
    if not samples or any(len(s) < k for s in samples):
        return None
    return fmean(pass_at_k(len(s), sum(map(bool, s)), k) for s in samples)


def coverage(samples: Sequence[Sequence[bool]]) -> float:
    """Oracle pass@n: the share of problems where any sample is correct."""
    return fmean(any(s) for s in samples) if samples else 0.0


def majority_at_k(
    answers: Sequence[str | None], correct: Sequence[bool], k: int, *, max_subsets: int = 2000, seed: int = 0
) -> float:
    """Expected accuracy of a majority vote over k of the n samples (drawn without
    replacement), exact over all k-subsets when there are at most `max_subsets` of them,
    else a seeded Monte Carlo estimate. Samples without an answer do not vote; a tie counts
    as the share of tied answers that are correct (a random tie-break)."""
    n = len(answers)
    if len(correct) != n or not 1 <= k <= n:
        raise ValueError(f"majority@k needs 1 <= k <= n = {n} answers with a correctness each")
    right = {a for a, c in zip(answers, correct, strict=True) if c and a is not None}
    if math.comb(n, k) <= max_subsets:
        subsets: Iterable[tuple[int, ...]] = itertools.combinations(range(n), k)
    else:
        rng = random.Random(seed)
        subsets = (tuple(rng.sample(range(n), k)) for _ in range(max_subsets))
    scores = [_vote_score([answers[i] for i in subset], right) for subset in subsets]
    return fmean(scores)


def _vote_score(answers: list[str | None], right: set[str]) -> float:
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    tied = [a for a, v in votes.items() if v == top]
    return sum(a in right for a in tied) / len(tied)


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return fmean(values) if values else 0.0


def powers_of_two(limit: int) -> list[int]:
    """1, 2, 4, ... up to `limit`, plus `limit` itself: the k's worth reporting."""
    ks = [1 << i for i in range(limit.bit_length()) if 1 << i <= limit]
    return sorted(set(ks + ([limit] if limit >= 1 else [])))


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of one strategy over its result rows (one per problem, as `ponder bench`
    writes them: correct, samples [[answer, correct], ...], usage fields)."""
    samples = [[bool(c) for _, c in row.get("samples") or []] or [bool(row["correct"])] for row in rows]
    votes = [[a for a, _ in row.get("samples") or []] or [row.get("answer")] for row in rows]
    fewest = min((len(s) for s in samples), default=0)
    ks = powers_of_two(fewest)
    return _rounded(
        {
            "problems": len(rows),
            "correct": sum(bool(row["correct"]) for row in rows),
            "accuracy": accuracy(row["correct"] for row in rows),
            "samples_per_problem": mean(len(s) for s in samples),
            "pass_at_k": {str(k): mean_pass_at_k(samples, k) for k in ks},
            "majority_at_k": {
                str(k): mean(majority_at_k(v, s, k) for v, s in zip(votes, samples, strict=True)) for k in ks
            },
            "coverage": coverage(samples),
            "prompt_tokens_per_problem": mean(row["prompt_tokens"] for row in rows),
            "reasoning_tokens_per_problem": mean(row["reasoning_tokens"] for row in rows),
            "completion_tokens_per_problem": mean(row["completion_tokens"] for row in rows),
            "total_tokens_per_problem": mean(row["total_tokens"] for row in rows),
            "seconds_per_problem": mean(row["seconds"] for row in rows),
            "usd_per_problem": mean(row["usd"] for row in rows),
            "usd_total": sum(row["usd"] for row in rows),
        }
    )


def _rounded(value: Any, digits: int = 6) -> Any:
    """Floats to `digits` places (summary files need no 1e-17 noise), through dicts."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    return value
