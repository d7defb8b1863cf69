"""The verifier contract: ground truth a thinking model checks itself against.

A verdict's `feedback` is written for the model (a failing assertion, a lint finding, a
judge's critique) because `refine` turns it into the next revision request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ponder.problem import Problem


@dataclass
class Verdict:
    score: float
    passed: bool
    feedback: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"verdict score must be in [0, 1], got {self.score}")


@runtime_checkable
class Verifier(Protocol):
    """Judges one candidate answer (full response text or code) to a problem.

    Async because model-based verifiers call an engine and sandboxed ones wait on a
    subprocess; neither should block other thinking.
    """

    name: str

    async def verify(self, problem: Problem, candidate: str) -> Verdict: ...
