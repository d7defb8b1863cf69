"""Combining verifiers, and plain Python callables as verifiers."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ponder.problem import Problem
from ponder.verifiers.base import Verdict, Verifier

CheckResult = bool | float | Verdict


def _flatten(verifiers: tuple[Verifier | Iterable[Verifier], ...]) -> list[Verifier]:
    out: list[Verifier] = []
    for v in verifiers:
        if isinstance(v, Verifier):
            out.append(v)
        else:
            out.extend(v)
    return out


def _unique_names(verifiers: Sequence[Verifier]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for v in verifiers:
        seen[v.name] = seen.get(v.name, 0) + 1
        names.append(v.name if seen[v.name] == 1 else f"{v.name}#{seen[v.name]}")
    return names


def _check_details(names: list[str], verdicts: list[Verdict]) -> dict[str, Any]:
    return {
        "checks": [
            {"name": n, "passed": v.passed, "score": v.score, "feedback": v.feedback, "details": v.details}
            for n, v in zip(names, verdicts, strict=True)
        ]
    }


def _feedback(names: list[str], verdicts: list[Verdict], only_failed: bool = True) -> str:
    parts = [
        f"[{n}] {v.feedback}".rstrip()
        for n, v in zip(names, verdicts, strict=True)
        if not (only_failed and v.passed)
    ]
    return "\n\n".join(parts)


class AllOf:
    """Passes when every check passes; score = mean of the scores (so a revision that fixes
    one of several checks still shows progress). Checks run concurrently.

    Accepts verifiers as arguments or one list: `AllOf(a, b)` == `AllOf([a, b])`.
    """

    def __init__(self, *verifiers: Verifier | Iterable[Verifier], name: str = "all") -> None:
        self.verifiers = _flatten(verifiers)
        if not self.verifiers:
            raise ValueError("AllOf needs at least one verifier")
        self.names = _unique_names(self.verifiers)
        self.name = name

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        verdicts = list(await asyncio.gather(*(v.verify(problem, candidate) for v in self.verifiers)))
        passed = all(v.passed for v in verdicts)
        score = sum(v.score for v in verdicts) / len(verdicts)
        feedback = _feedback(self.names, verdicts) if not passed else "all checks passed"
        return Verdict(min(1.0, max(0.0, score)), passed, feedback, _check_details(self.names, verdicts))


class Weighted:
    """Score = weighted mean of the checks' scores; passes when it reaches `threshold`
    (default: only when every check with a positive weight passed)."""

    def __init__(
        self,
        weights: Mapping[Verifier, float] | Iterable[tuple[Verifier, float]],
        threshold: float | None = None,
        name: str = "weighted",
    ) -> None:
        pairs = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
        if not pairs or any(w < 0 for _, w in pairs) or sum(w for _, w in pairs) <= 0:
            raise ValueError("Weighted needs verifiers with non-negative weights summing to > 0")
        self.verifiers = [v for v, _ in pairs]
        self.weights = [float(w) for _, w in pairs]
        self.names = _unique_names(self.verifiers)
        self.threshold = threshold
        self.name = name

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        verdicts = list(await asyncio.gather(*(v.verify(problem, candidate) for v in self.verifiers)))
        total = sum(self.weights)
        score = min(
            1.0, max(0.0, sum(w * v.score for w, v in zip(self.weights, verdicts, strict=True)) / total)
        )
        if self.threshold is None:
            passed = all(v.passed for w, v in zip(self.weights, verdicts, strict=True) if w > 0)
        else:
            passed = score >= self.threshold
        details = _check_details(self.names, verdicts)
        for check, w in zip(details["checks"], self.weights, strict=True):
            check["weight"] = w
        return Verdict(score, passed, _feedback(self.names, verdicts) or "all checks passed", details)


class FunctionVerifier:
    """A plain `(problem, candidate) -> bool | float | Verdict` (sync or async) as a verifier.

    A float is the score and passes at `threshold`.
    """

    def __init__(
        self, fn: Callable[[Problem, str], Any], name: str | None = None, threshold: float = 0.5
    ) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "check"))
        self.threshold = threshold

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        try:
            result = self.fn(problem, candidate)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            return Verdict(
                0.0, False, f"{self.name} raised {type(exc).__name__}: {exc}", {"error": repr(exc)}
            )
        return to_verdict(result, self.threshold)


def to_verdict(result: CheckResult, threshold: float = 0.5) -> Verdict:
    if isinstance(result, Verdict):
        return result
    if isinstance(result, bool):
        return Verdict(1.0 if result else 0.0, result, "" if result else "check failed")
    if isinstance(result, int | float):
        score = min(1.0, max(0.0, float(result)))
        return Verdict(
            score, score >= threshold, "" if score >= threshold else f"score {score:.2f} is below {threshold}"
        )
    raise TypeError(f"a check must return bool, float or Verdict, not {type(result).__name__}")


def as_verifier(check: Verifier | Callable[[Problem, str], Any], name: str | None = None) -> Verifier:
    """A verifier as is; a plain callable wrapped in `FunctionVerifier`."""
    if isinstance(check, Verifier):
        return check
    if callable(check):
        return FunctionVerifier(check, name=name)
    raise TypeError(f"not a verifier or callable: {check!r}")
