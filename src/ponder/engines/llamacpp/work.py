"""The scheduler's units of work: a caller's call (`Job`), one request in it (`Group`), one
sample being decoded (`Seq`), a prompt kept in KV for reuse (`CacheEntry`), and the
counters of the work done (`EngineStats`)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ponder.engines.base import (
    Completion,
    FinishReason,
    GenerationRequest,
    OnCompletion,
    OnDelta,
    TokenLogprob,
)

if TYPE_CHECKING:
    from ponder.budget import Meter


class Job:
    """One `generate` call: its requests, its meter, and the loop its answers go to."""

    def __init__(
        self,
        n_groups: int,
        meter: Meter | None,
        loop: asyncio.AbstractEventLoop,
        on_completion: OnCompletion | None = None,
        on_delta: OnDelta | None = None,
    ) -> None:
        self.meter = meter
        self.on_completion = on_completion
        self.on_delta = on_delta
        self.loop = loop
        self.future: asyncio.Future[list[list[Completion]]] = loop.create_future()
        self.results: list[list[Completion]] = [[] for _ in range(n_groups)]
        self.pending = n_groups
        self.cancelled = False
        self.deltas: list[tuple[int, int, str]] = []  # not yet posted to the loop

    def post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody to tell
            self.loop.call_soon_threadsafe(callback, *args)

    def flush(self) -> None:
        """Post the deltas gathered so far, in one loop callback."""
        if not self.deltas or self.on_delta is None:
            return
        batch, self.deltas = self.deltas, []
        on_delta = self.on_delta

        def deliver() -> None:
            for request, sample, text in batch:
                on_delta(request, sample, text)

        self.post(deliver)


@dataclass(eq=False)
class Group:
    """One request: a prompt evaluated once into `root`, and its n samples."""

    job: Job
    index: int
    request: GenerationRequest
    tokens: list[int]
    max_tokens: int
    completions: list[Completion | None] = field(init=False)
    waiting: deque[int] = field(init=False)
    root: int = -1
    evaluated: int = 0  # tokens of `context` present in the root's KV
    started: float = 0.0
    live: int = 0
    chunk: int = 0  # prompt tokens in the batch being decoded
    state: str = "queued"  # queued -> prefill -> ready -> forked (all samples started) -> done

    def __post_init__(self) -> None:
        self.completions = [None] * self.request.n
        self.waiting = deque(range(self.request.n))

    @property
    def context(self) -> list[int]:
        """What the root holds: all but the last prompt token, which every sample feeds
        itself so a sample can be forked at any later step, not only right after prefill."""
        return self.tokens[:-1]

    def start(self) -> None:
        self.started = time.monotonic()
        self.chunk = 0

    def record(
        self,
        index: int,
        text: str,
        reason: FinishReason,
        n_tokens: int,
        error: str | None = None,
        logprobs: list[TokenLogprob] | None = None,
    ) -> Completion:
        completion = Completion(
            text=text,
            finish_reason=reason,
            prompt_tokens=len(self.tokens),
            completion_tokens=n_tokens,
            seconds=time.monotonic() - self.started if self.started else 0.0,
            logprobs=logprobs,
            error=error,
        )
        self.completions[index] = completion
        return completion


@dataclass(eq=False)
class Seq:
    """One sample being decoded: its KV sequence, its sampler and the text it wrote."""

    group: Group
    index: int
    seq_id: int
    sampler: Any
    pos: int = field(init=False)
    next_token: int = field(init=False)
    logprobs: list[TokenLogprob] | None = field(init=False)
    n_tokens: int = 0
    text: str = ""
    sent: int = 0  # characters of `text` already handed to the job's deltas
    batch_index: int = -1
    # Tokens split multi-byte characters: bytes wait here until their character is whole.
    _utf8: codecs.IncrementalDecoder = field(
        init=False, default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="ignore")
    )

    def __post_init__(self) -> None:
        self.pos = len(self.group.tokens) - 1
        self.next_token = self.group.tokens[-1]
        self.logprobs = [] if self.group.request.logprobs else None

    def write(self, piece: bytes) -> bool:
        """Append a token's bytes; True when a stop string appeared (the text is cut before it)."""
        before = len(self.text)
        self.text += self._utf8.decode(piece)
        stops = [s for s in self.group.request.stop if s]
        if stops:
            window = max(0, before - max(len(s) for s in stops))
            hits = [i for i in (self.text.find(s, window) for s in stops) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                return True
        self._send(len(self.text) - _stop_prefix(self.text, stops))
        return False

    def close(self) -> str:
        """The final text; what the deltas have not sent yet is sent now."""
        self._send(len(self.text))
        return self.text

    def _send(self, upto: int) -> None:
        job = self.group.job
        if upto > self.sent and job.on_delta is not None:
            job.deltas.append((self.group.index, self.index, self.text[self.sent : upto]))
        self.sent = max(self.sent, upto)


def _stop_prefix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that a stop string starts with: text that may
    yet be cut, so not sent as a delta until the next token decides."""
    held = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:k]):
                held = k
                break
    return held


@dataclass
class EngineStats:
    """Counters for benchmarks and tests: how much work batching and caching saved."""

    decode_steps: int = 0
    prompt_tokens: int = 0  # prompt tokens of admitted requests
    prompt_tokens_evaluated: int = 0  # of those, actually run through the model
    completion_tokens: int = 0


@dataclass(eq=False)
class CacheEntry:
    seq_id: int
    tokens: list[int]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def resolve(job: Job, exc: BaseException | None = None) -> None:
    """Hand the job's results (or `exc`) to its caller, after everything already posted."""

    def deliver() -> None:
        if job.future.done():
            return
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(job.results)

    job.post(deliver)
