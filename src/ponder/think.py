"""`think()`: one question in, one answer out, with the budget enforced and every hidden
thought persisted. The entry point shared by the CLI, the Python API and the server."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder.budget import Budget, Limit, Meter
from ponder.context import Context
from ponder.engines import create_engine
from ponder.engines.base import Engine
from ponder.problem import Problem
from ponder.store import NodeRecord, TraceStore
from ponder.strategies import Strategy, parse_strategy
from ponder.trace import Trace
from ponder.verifiers.base import Verifier


@dataclass(frozen=True)
class Usage:
    """What the answer cost. `reasoning_tokens` are generated tokens not shown as the
    answer (hidden thoughts); `completion_tokens` are all generated tokens."""

    prompt_tokens: int
    reasoning_tokens: int
    completion_tokens: int
    total_tokens: int
    seconds: float
    usd: float

    @classmethod
    def from_meter(cls, meter: Meter, shown_tokens: int) -> Usage:
        completion = meter.completion_tokens
        return cls(
            prompt_tokens=meter.prompt_tokens,
            reasoning_tokens=max(0, completion - shown_tokens),
            completion_tokens=completion,
            total_tokens=meter.prompt_tokens + completion,
            seconds=round(meter.elapsed, 3),
            usd=round(meter.usd, 8),
        )


@dataclass(frozen=True)
class Answer:
    answer: str | None
    response: str
    strategy: str
    trace_id: str
    stopped_by: Limit | None
    usage: Usage
    model: str
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_default_engine: Engine | None = None


def default_engine() -> Engine:
    """The embedded engine with the bundled model, loaded once per process."""
    global _default_engine
    if _default_engine is None:
        _default_engine = create_engine("llamacpp")
    return _default_engine


def _open_store(store: TraceStore | str | Path | bool | None) -> TraceStore | None:
    if store is False:
        return None
    if isinstance(store, TraceStore):
        return store
    if store is None or store is True:
        return TraceStore()
    return TraceStore(store)


async def athink(
    question: str | Problem,
    *,
    strategy: str | Strategy = "self-consistency",
    budget: Budget | str | None = None,
    engine: Engine | None = None,
    verifier: Verifier | None = None,
    store: TraceStore | str | Path | bool | None = None,
    on_node: Callable[[NodeRecord], None] | None = None,
    meter: Meter | None = None,
    seed: int = 0,
    max_tokens: int = 512,
) -> Answer:
    """Think about `question` with `strategy` inside `budget`; see `think`."""
    problem = question if isinstance(question, Problem) else Problem(question)
    chosen = parse_strategy(strategy)
    if isinstance(budget, str):
        budget = Budget.parse(budget)
    meter = meter or Meter(budget)
    engine = engine or default_engine()
    trace_store = _open_store(store)
    trace = Trace(store=trace_store)
    if on_node is not None:
        trace.listeners.append(on_node)
    if trace_store is not None:
        trace_store.begin_trace(
            trace.id,
            question=problem.question,
            strategy=chosen.spec(),
            model=engine.model,
            budget={k: v for k, v in dataclasses.asdict(meter.budget).items() if v is not None},
            created_at=time.time(),
        )
    root = trace.add("root", problem.question, strategy=chosen.spec())
    ctx = Context(
        engine=engine,
        meter=meter,
        trace=trace,
        verifier=verifier,
        parent=root,
        seed=seed,
        max_tokens=max_tokens,
    )
    status = "error"
    try:
        result = await chosen.run(problem, ctx)
        status = "done"
    finally:
        if status != "done" and trace_store is not None:
            trace_store.finish_trace(
                trace.id,
                status=status,
                answer=None,
                stopped_by=meter.stopped_by,
                usage={},
                finished_at=time.time(),
            )
    meter.exhausted()  # a limit reached exactly at the end still counts as what stopped it
    usage = Usage.from_meter(meter, result.response_tokens)
    trace.add("answer", result.response, parent=result.node or root, answer=result.answer, score=result.score)
    if trace_store is not None:
        trace_store.finish_trace(
            trace.id,
            status=status,
            answer=result.answer,
            stopped_by=meter.stopped_by,
            usage=dataclasses.asdict(usage),
            finished_at=time.time(),
            model=engine.model,
        )
    return Answer(
        answer=result.answer,
        response=result.response,
        strategy=chosen.spec(),
        trace_id=trace.id,
        stopped_by=meter.stopped_by,
        usage=usage,
        model=engine.model,
        score=result.score,
    )


def think(question: str | Problem, **options: Any) -> Answer:
    """Think about `question` and return the best answer the budget allows.

    >>> think("What is 17 + 25?", strategy="self-consistency:n=8", budget="30s").answer
    """
    return asyncio.run(athink(question, **options))
