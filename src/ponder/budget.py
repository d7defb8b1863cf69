"""Reasoning budgets: what a caller may spend on one question, and the meter that spends it.

One `Meter` per request, shared by nested strategies and charged by the engine while it
generates, so "think for 30 seconds" holds mid-sample, not just between samples.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Literal

Limit = Literal["seconds", "tokens", "usd", "samples"]


class BudgetError(ValueError):
    """A budget string or value that cannot be understood."""


@dataclass(frozen=True)
class Budget:
    """Limits on one request; None means unlimited.

    `tokens` counts generated (completion) tokens, thoughts included: the reasoning spend.
    """

    seconds: float | None = None
    tokens: int | None = None
    usd: float | None = None
    samples: int | None = None

    def __post_init__(self) -> None:
        for name in ("seconds", "tokens", "usd", "samples"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise BudgetError(f"budget {name} must be positive, got {value!r}")

    def merge(self, other: Budget) -> Budget:
        """The stricter of each limit."""
        fields = {}
        for name in ("seconds", "tokens", "usd", "samples"):
            mine, theirs = getattr(self, name), getattr(other, name)
            fields[name] = theirs if mine is None else mine if theirs is None else min(mine, theirs)
        return replace(self, **fields)

    @classmethod
    def parse(cls, *specs: str) -> Budget:
        """Parse "30s", "2m", "1h", "4000tok", "20k tokens", "$0.02", "16 samples"; several combine."""
        budget = cls()
        for spec in specs:
            for part in re.split(r"[,;]", spec):
                if part.strip():
                    budget = budget.merge(_parse_one(part.strip()))
        return budget


_UNITS: dict[str, tuple[str, float]] = {
    "ms": ("seconds", 0.001),
    "s": ("seconds", 1),
    "sec": ("seconds", 1),
    "secs": ("seconds", 1),
    "second": ("seconds", 1),
    "seconds": ("seconds", 1),
    "m": ("seconds", 60),
    "min": ("seconds", 60),
    "mins": ("seconds", 60),
    "minute": ("seconds", 60),
    "minutes": ("seconds", 60),
    "h": ("seconds", 3600),
    "hour": ("seconds", 3600),
    "hours": ("seconds", 3600),
    "tok": ("tokens", 1),
    "toks": ("tokens", 1),
    "token": ("tokens", 1),
    "tokens": ("tokens", 1),
    "sample": ("samples", 1),
    "samples": ("samples", 1),
    "usd": ("usd", 1),
    "$": ("usd", 1),
}
_SPEC = re.compile(r"^(\$)?\s*(\d+(?:\.\d+)?|\.\d+)\s*([kKmM](?![a-z]))?\s*([a-zA-Z$]*)$")


def _parse_one(spec: str) -> Budget:
    match = _SPEC.match(spec.replace("_", "").strip())
    if not match:
        raise BudgetError(
            f"cannot parse budget {spec!r}: use e.g. 30s, 2m, 4000tok, 20k tokens, $0.02, 16 samples"
        )
    dollar, number, multiplier, unit = match.groups()
    value = float(number) * {"k": 1e3, "m": 1e6}.get((multiplier or "").lower(), 1)
    unit = "$" if dollar else unit.lower()
    if multiplier and not unit and multiplier in "mM":
        unit, value = "m", float(number)  # "2m" is two minutes
    if unit not in _UNITS:
        raise BudgetError(f"unknown budget unit in {spec!r}: use s, m, h, tok, samples or $")
    name, scale = _UNITS[unit]
    value *= scale
    if name in ("tokens", "samples"):
        if value != int(value):
            raise BudgetError(f"{name} must be a whole number in {spec!r}")
        return Budget(tokens=int(value)) if name == "tokens" else Budget(samples=int(value))
    return Budget(seconds=value) if name == "seconds" else Budget(usd=value)


class Meter:
    """Spending against a `Budget`; thread-safe because the embedded engine charges it
    from its decoding thread."""

    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget or Budget()
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.deadline = None if self.budget.seconds is None else self.started + self.budget.seconds
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.usd = 0.0
        self.samples = 0
        self.stopped_by: Limit | None = None

    def charge(
        self, *, prompt_tokens: int = 0, completion_tokens: int = 0, usd: float = 0.0, samples: int = 0
    ) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.usd += usd
            self.samples += samples

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def seconds_left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def tokens_left(self) -> float:
        b = self.budget.tokens
        return math.inf if b is None else b - self.completion_tokens

    def samples_left(self) -> float:
        b = self.budget.samples
        return math.inf if b is None else b - self.samples

    def exhausted(self) -> Limit | None:
        """The first limit that is used up, remembered as `stopped_by`."""
        hit: Limit | None = None
        b = self.budget
        if self.deadline is not None and time.monotonic() >= self.deadline:
            hit = "seconds"
        elif b.tokens is not None and self.completion_tokens >= b.tokens:
            hit = "tokens"
        elif b.usd is not None and self.usd >= b.usd:
            hit = "usd"
        elif b.samples is not None and self.samples >= b.samples:
            hit = "samples"
        if hit and self.stopped_by is None:
            self.stopped_by = hit
        return hit

    def note_stop(self, limit: Limit) -> None:
        """Record a limit that ended the work even if it is not (yet) fully used, e.g. a
        strategy that could not afford another round."""
        if self.stopped_by is None:
            self.stopped_by = limit
