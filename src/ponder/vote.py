"""Voting over canonical answers, shared by every strategy that aggregates samples."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tally:
    """Vote totals in first-seen order. `winner` breaks ties by the answer that was seen
    first: deterministic, and with samples in generation order it favours the answer the
    model reached soonest."""

    totals: dict[str, float]

    @property
    def winner(self) -> str | None:
        if not self.totals:
            return None
        best = max(self.totals.values())
        return next(a for a, w in self.totals.items() if w == best)

    @property
    def total(self) -> float:
        return sum(self.totals.values())

    def share(self, answer: str | None = None) -> float:
        answer = self.winner if answer is None else answer
        return self.totals.get(answer, 0.0) / self.total if self.total and answer is not None else 0.0


def tally(answers: Iterable[str | None], weights: Iterable[float] | None = None) -> Tally:
    """Sum weights (1 each by default) per non-empty answer."""
    totals: dict[str, float] = {}
    ws = iter(weights) if weights is not None else None
    for answer in answers:
        w = next(ws) if ws is not None else 1.0
        if answer is not None and answer != "":
            totals[answer] = totals.get(answer, 0.0) + w
    return Tally(totals)
