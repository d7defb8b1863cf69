"""Reasoning budgets: what a caller may spend on one question, and the meter that spends it.

One `Meter` per request, shared by nested strategies and charged by the engine while it
generates, so "think for 30 seconds" holds mid-sample, not just between samples.

How far a limit can overshoot (the engine is told to stop only once it is spent):

- tokens: `Context` never asks for more samples than completion tokens are left (each
  sample costs at least one) and caps every request's `max_tokens` at what is left, then
  the engine charges tokens as it decodes and checks the meter after every decode step.
  So the overshoot is at most one decode step: the embedded engine decodes one token per
  live sequence per step, hence at most (sequences decoding together - 1) tokens; an
  engine that charges a whole sample at once (an HTTP server without streamed usage, the
  scripted test engine) at most one sample, itself capped at the tokens left when it was
  asked for.
- seconds: the embedded engine checks the deadline after each decode step, the HTTP
  engine cuts its streams at the deadline, and `Context` checks it between waves of at
  most `ponder.generation.WAVE` samples; so the overshoot is one decode step or one
  in-flight HTTP request's cancellation, plus the time to write what was generated.
- samples: exact; `Context` clamps n to the samples left before asking.
- usd: like tokens, at the engine's price.
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

    def to_dict(self) -> dict[str, float]:
        """The limits that are set, by name (what traces and run headers record)."""
        return {
            name: value
            for name in ("seconds", "tokens", "usd", "samples")
            if (value := getattr(self, name)) is not None
        }

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
    from its decoding thread.

    `tab()` gives one generation call its own view of the meter: what the call charges
    goes to the meter and is also counted on the tab, while limits are the meter's. So
    concurrent calls on one meter each know exactly what they spent.
    """

    def __init__(
        self, budget: Budget | None = None, *, parent: Meter | None = None, samples: bool = True
    ) -> None:
        self._root: Meter = parent._root if parent is not None else self
        self.parent = parent
        self.counts_samples = samples
        self.budget: Budget = parent.budget if parent is not None else budget or Budget()
        self._lock = threading.Lock()
        self.started: float = parent.started if parent is not None else time.monotonic()
        self.deadline = None if self.budget.seconds is None else self.started + self.budget.seconds
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.usd = 0.0
        self.samples = 0
        self._stopped_by: Limit | None = None

    def tab(self, *, samples: bool = True) -> Meter:
        """A meter that counts only what is charged through it and passes it on to this one;
        with `samples=False` its work is no new sample (a continuation, a verdict), so the
        samples limit does not stop it."""
        return Meter(parent=self, samples=samples)

    @property
    def stopped_by(self) -> Limit | None:
        """The limit that first stopped work on this request, once noted."""
        return self._root._stopped_by

    def charge(
        self, *, prompt_tokens: int = 0, completion_tokens: int = 0, usd: float = 0.0, samples: int = 0
    ) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.usd += usd
            self.samples += samples
        if self.parent is not None:
            self.parent.charge(
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, usd=usd, samples=samples
            )

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def seconds_left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def tokens_left(self) -> float:
        b = self.budget.tokens
        return math.inf if b is None else b - self._root.completion_tokens

    def samples_left(self) -> float:
        b = self.budget.samples
        return math.inf if b is None else b - self._root.samples

    def limit_reached(self, *, samples: bool | None = None) -> Limit | None:
        """The first limit that is used up, if any; the samples limit only for work that
        makes new samples (`samples`, by default as the meter was made). A pure query: see
        `note_limit`."""
        root, b = self._root, self.budget
        samples = self.counts_samples if samples is None else samples
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "seconds"
        if b.tokens is not None and root.completion_tokens >= b.tokens:
            return "tokens"
        if b.usd is not None and root.usd >= b.usd:
            return "usd"
        if samples and b.samples is not None and root.samples >= b.samples:
            return "samples"
        return None

    def note_stop(self, limit: Limit) -> None:
        """Record a limit that ended the work even if it is not (yet) fully used, e.g. a
        strategy that could not afford another round."""
        root = self._root
        with root._lock:
            if root._stopped_by is None:
                root._stopped_by = limit

    def note_limit(self) -> Limit | None:
        """Record the limit that is used up, if any, as what stopped the work, and return
        it: for a caller that stops *because* of it (an engine ending its sequences)."""
        hit = self.limit_reached()
        if hit is not None:
            self.note_stop(hit)
        return hit

    def exhausted(self) -> Limit | None:
        """`note_limit` under its old name, for callers written before the query was split
        from the note (the engines check it while decoding, `think` once at the end)."""
        return self.note_limit()
