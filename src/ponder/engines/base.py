"""The engine contract: the only thing in ponder that talks to a model.

Strategies build `GenerationRequest`s and get `Completion`s back; they never know which
backend ran them. Engines charge the request's meter as tokens are produced, so a budget
is enforced *while* generating, not after.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ponder.budget import Meter

Message = dict[str, str]
FinishReason = Literal["stop", "length", "budget", "error"]


class EngineError(RuntimeError):
    """A model call that failed in a way the caller should see as a message, not a traceback.

    `transient` is True when retries were exhausted on errors that might pass (timeouts,
    5xx, dropped connections); False for errors that will not (bad key, bad request).
    """

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to sample `n` continuations of.

    Exactly one of `messages` (chat, formatted with the model's template) or `prompt`
    (raw text) is set. `prefill` continues a partial assistant message, so step-level
    search can extend a partial solution without re-evaluating it.
    """

    messages: Sequence[Message] | None = None
    prompt: str | None = None
    prefill: str = ""
    n: int = 1
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    stop: Sequence[str] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        """Reject settings a backend would misread: NaN passes every comparison, so a NaN
        temperature or top_p would otherwise sample gibberish instead of failing."""
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("GenerationRequest needs exactly one of messages or prompt")
        for name in ("n", "max_tokens", "top_k", "top_logprobs"):
            _check_int(name, getattr(self, name))
        if self.seed is not None:
            _check_int("seed", self.seed)
        for name in ("temperature", "top_p", "min_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2] (0 is greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if self.top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0, got {self.top_logprobs}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


@dataclass
class Completion:
    """One sampled continuation. `text` excludes the prefill."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    seconds: float = 0.0
    logprobs: list[TokenLogprob] | None = None
    usage_estimated: bool = False
    error: str | None = None


OnCompletion = Callable[[int, int, "Completion"], None]
"""Called on the caller's event loop as each sample finishes: (request index, sample index,
completion). Lets the trace record a thought the moment it exists, not when the batch ends."""

OnDelta = Callable[[int, int, str], None]
"""Called on the caller's event loop as a sample grows: (request index, sample index, new
text). Deltas of one sample concatenate to its text (prefill excluded) and all arrive
before its `OnCompletion`; an engine may batch several tokens into one call. Lets the
trace keep what a sample wrote so far through a deadline, a cancel or a kill, and lets a
server stream thoughts live."""


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens; 0 for a local model. An engine whose price is unknown
    has `price = None`, so a dollar budget can say it cannot be kept instead of reading $0."""

    prompt_per_million: float = 0.0
    completion_per_million: float = 0.0

    def __post_init__(self) -> None:
        for value in (self.prompt_per_million, self.completion_per_million):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"a price must be a finite number of dollars per million tokens >= 0, not {value!r}"
                )

    @classmethod
    def given(cls, prompt: float | None, completion: float | None, *, env: bool = False) -> Price | None:
        """The price from an input and an output price that may each be missing: None (unknown)
        when both are; a half-given price is an error rather than a silent $0 for the other half."""
        if prompt is None and completion is None:
            return None
        if prompt is None or completion is None:
            names = "PONDER_PRICE_INPUT and PONDER_PRICE_OUTPUT" if env else "price_input and price_output"
            raise ValueError(f"give both {names} (dollars per million input / output tokens), or neither")
        return cls(prompt, completion)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.prompt_per_million + completion_tokens * self.completion_per_million
        ) / 1e6


@runtime_checkable
class Engine(Protocol):
    """A model behind a batched, async `generate`.

    `generate` returns, for each request, its `n` completions in order. When `meter` is
    given the engine charges it (prompt tokens once per request, completion tokens as
    they are produced) and stops generating when `meter.exhausted()` says a limit is hit,
    returning what it has with finish_reason "budget". `on_completion`, when given, hears
    of each finished sample before `generate` returns; `on_delta` of its text as it is
    written (engines that cannot stream call it once with the whole text).
    """

    model: str

    @property
    def price(self) -> Price | None:
        """Dollars per million tokens; None when unknown (a dollar budget cannot be kept)."""
        ...

    async def generate(
        self,
        requests: Sequence[GenerationRequest],
        meter: Meter | None = None,
        on_completion: OnCompletion | None = None,
        on_delta: OnDelta | None = None,
    ) -> list[list[Completion]]: ...

    async def aclose(self) -> None: ...
