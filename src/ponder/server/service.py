"""The server's long-lived parts, made once per process: one engine (the embedded model is
loaded once and batches every request's samples itself), one trace store, the gate on
concurrent thinks, and the thinks in flight, so a shutdown can finish or stop each one and
say so in the store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ponder.engines import create_engine
from ponder.engines.base import Engine, Price
from ponder.server.guards import Gate
from ponder.server.plan import Defaults, Plan, plan
from ponder.server.thinking import Thinking, begin, stop
from ponder.server.wire import ApiError, ChatRequest, choice, completion_body, usage_body
from ponder.store import TraceRecord, TraceStore
from ponder.think import Answer
from ponder.trace import TraceStatus


@dataclass
class ServerConfig:
    """Everything `ponder serve` can set; the defaults suit one laptop."""

    store: Path | None = None
    upstream: str | None = None  # an OpenAI-compatible base URL; None: the embedded model
    upstream_model: str | None = None
    upstream_key_env: str | None = None
    api_key: str | None = None
    max_concurrent: int = 4
    queue: int = 16
    max_body: int = 1 << 20
    price_input: float | None = None  # dollars per million tokens; both or neither
    price_output: float | None = None
    grace: float = 10.0  # seconds a shutdown waits for in-flight thinks
    defaults: Defaults = field(default_factory=Defaults)

    def __post_init__(self) -> None:
        if self.max_concurrent < 1 or self.queue < 0 or self.max_body < 1:
            raise ValueError("max_concurrent must be >= 1, queue >= 0 and max_body >= 1")
        Price.given(self.price_input, self.price_output)  # both or neither
        if (self.price_input or 0) < 0 or (self.price_output or 0) < 0:
            raise ValueError("--price-input and --price-output must be >= 0")

    def engine(self) -> Engine:
        price = {"price_input": self.price_input, "price_output": self.price_output}
        if self.upstream is None:
            return create_engine("llamacpp", **price)
        key = os.environ.get(self.upstream_key_env) if self.upstream_key_env else None
        if self.upstream_key_env and not key:
            raise ValueError(f"--upstream-key-env {self.upstream_key_env}: that variable is not set")
        return create_engine(
            "openai", base_url=self.upstream, model=self.upstream_model, api_key=key, **price
        )


class ClientGone(Exception):
    """The client disconnected; its think was cancelled."""


@dataclass(frozen=True)
class Outcome:
    """One finished think as the wire needs it, whether from `athink` or from the store."""

    response: str
    answer: str | None
    score: float | None
    trace_id: str
    strategy: str
    stopped_by: str | None
    usage: dict[str, Any]
    model: str

    @classmethod
    def of(cls, answer: Answer) -> Outcome:
        return cls(
            answer.response,
            answer.answer,
            answer.score,
            answer.trace_id,
            answer.strategy,
            answer.stopped_by,
            {k: getattr(answer.usage, k) for k in answer.usage.__dataclass_fields__},
            answer.model,
        )

    @classmethod
    def stored(cls, trace: TraceRecord) -> Outcome | None:
        final = [n for n in trace.nodes if n.kind == "answer"]
        if trace.status != "done" or not final:
            return None
        node = final[-1]
        return cls(
            node.text,
            trace.answer,
            node.score,
            trace.id,
            trace.strategy,
            trace.stopped_by,
            trace.usage or {},
            trace.model,
        )

    def ponder(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "strategy": self.strategy,
            "answer": self.answer,
            "score": self.score,
            "stopped_by": self.stopped_by,
            "seconds": self.usage.get("seconds"),
            "usd": self.usage.get("usd"),
        }

    def content(self, stops: list[str]) -> tuple[str, str]:
        """The answer text cut at the first stop string, and the finish reason."""
        text = self.response
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            return text[:cut], "stop"
        return text, "length" if self.stopped_by == "tokens" else "stop"


def completion(outcomes: list[Outcome], model: str, stops: list[str]) -> dict[str, Any]:
    """A `chat.completion` with one choice per outcome; usage is their sum."""
    choices = [choice(i, *o.content(stops)) for i, o in enumerate(outcomes)]
    ponder = outcomes[0].ponder()
    if len(outcomes) > 1:
        ponder["choices"] = [o.ponder() for o in outcomes]
    return completion_body(f"chatcmpl-{uuid.uuid4().hex}", model, choices, total_usage(outcomes), ponder)


def total_usage(outcomes: list[Outcome]) -> dict[str, Any]:
    """The usage of a request with one choice per outcome (streamed or not): their sum."""
    total: dict[str, Any] = {}
    for o in outcomes:
        for k in ("prompt_tokens", "completion_tokens", "reasoning_tokens"):
            total[k] = total.get(k, 0) + int(o.usage.get(k, 0))
    return usage_body(total)


class Service:
    """One per app: engine, store, gate and the thinks in flight."""

    def __init__(self, config: ServerConfig, engine: Engine, store: TraceStore, stopping: threading.Event):
        self.config = config
        self.engine = engine
        self.store = store
        self.stopping = stopping
        self.gate = Gate(config.max_concurrent, config.queue)
        self.live: dict[str, Thinking] = {}
        self.queued: dict[str, asyncio.Task[None]] = {}
        self.runners: set[asyncio.Task[None]] = set()
        self.served = engine.model or "ponder"
        self.defaults = Defaults(
            strategy=config.defaults.strategy,
            budget=config.defaults.budget,
            cap=config.defaults.cap,
            max_tokens=config.defaults.max_tokens,
            priced=getattr(engine, "price", None) is not None,
        )
        self.started = time.time()

    def plan(self, request: ChatRequest) -> Plan:
        return plan(request, self.engine, self.served, self.defaults)

    async def begin(self, plan: Plan, seed: int, trace_id: str | None = None) -> Thinking:
        thinking = await begin(
            plan.problem,
            strategy=plan.strategy,
            budget=plan.budget,
            engine=self.engine,
            store=self.store,
            seed=seed,
            max_tokens=plan.max_tokens,
            trace_id=trace_id,
        )
        self.live[thinking.trace_id] = thinking

        def forget(_: object) -> None:
            if thinking.ended is None:  # stop() forgets it itself, after marking the store
                self.live.pop(thinking.trace_id, None)

        thinking.task.add_done_callback(forget)
        return thinking

    async def stop(self, thinking: Thinking, status: TraceStatus) -> None:
        """Cancel and mark, shielded: this often runs in a task that is being cancelled."""
        with anyio.CancelScope(shield=True):
            await stop(thinking, self.store, status)
            self.live.pop(thinking.trace_id, None)

    @property
    def leaving_status(self) -> TraceStatus:
        return "interrupted" if self.stopping.is_set() else "cancelled"

    async def settle(self, thinking: Thinking, disconnected: Callable[[], Awaitable[bool]]) -> Answer:
        """The think's answer; if the client leaves first, the think is cancelled."""
        try:
            while True:
                done, _ = await asyncio.wait([thinking.task], timeout=0.5)
                if done:
                    return thinking.task.result()
                if await disconnected():
                    await self.stop(thinking, "cancelled")
                    raise ClientGone
        finally:
            if not thinking.done:
                await self.stop(thinking, self.leaving_status)

    async def drain(self) -> None:
        """Shutdown: jobs get the grace period to finish, then whatever still thinks is
        cancelled and marked "interrupted" (every node it wrote stays)."""
        self.stopping.set()
        for task in self.queued.values():
            task.cancel()
        if self.runners:
            await asyncio.wait(self.runners, timeout=self.config.grace)
        for thinking in list(self.live.values()):
            await self.stop(thinking, "interrupted")
        for task in self.runners:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self.runners, return_exceptions=True)

    def trace(self, trace_id: str, param: str = "id") -> TraceRecord:
        trace = self.store.get_trace(trace_id)
        if trace is None:
            raise ApiError(404, f"no trace or job {trace_id!r}", param=param, code="not_found")
        return trace
