"""`think()`: one question in, one answer out, with the budget enforced and every hidden
thought persisted. The entry point shared by the CLI, the Python API and the server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from ponder.budget import Budget, BudgetError, Limit, Meter
from ponder.context import Context
from ponder.engines import create_engine
from ponder.engines.base import Engine
from ponder.problem import Problem
from ponder.store import TraceStore, default_store_path
from ponder.strategies import Strategy, parse_strategy
from ponder.strategies.base import DEFAULT_STRATEGY
from ponder.trace import Listener, Store, Trace, TraceStatus
from ponder.verifiers.base import Verifier
from ponder.verifiers.code import UnitTests


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

    def __add__(self, other: Usage) -> Usage:
        """Two thinks' costs together (one problem thought about in two phases)."""
        return Usage(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)}
        )

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
_default_stores: dict[Path, TraceStore] = {}
P = ParamSpec("P")
T = TypeVar("T")


def default_engine() -> Engine:
    """The embedded engine with the bundled model, loaded once per process."""
    global _default_engine
    if _default_engine is None:
        _default_engine = create_engine("llamacpp")
    return _default_engine


def _open_store(store: Store | str | Path | bool | None) -> Store | None:
    """The caller's store as given; by default one long-lived SQLite store per path and
    process (opening SQLite per request would redo its set-up every time)."""
    if store is False:
        return None
    if isinstance(store, Store):
        return store
    path = default_store_path() if store is None or store is True else Path(store)
    if path not in _default_stores:
        _default_stores[path] = TraceStore(path)
    return _default_stores[path]


def as_problem(question: str | Problem | Sequence[Mapping[str, Any]]) -> Problem:
    """A question, a `Problem`, or OpenAI-style chat messages, as a `Problem`."""
    if isinstance(question, Problem):
        return question
    if isinstance(question, str):
        return Problem(question)
    return Problem.from_messages(question)


async def athink(
    question: str | Problem | Sequence[Mapping[str, Any]],
    *,
    strategy: str | Strategy = DEFAULT_STRATEGY,
    budget: Budget | str | None = None,
    engine: Engine | None = None,
    verifier: Verifier | None = None,
    store: Store | str | Path | bool | None = None,
    trace_id: str | None = None,
    on_node: Listener | None = None,
    meter: Meter | None = None,
    seed: int = 0,
    max_tokens: int = 512,
) -> Answer:
    """Think about `question` (a string, a `Problem` or chat messages) with `strategy`
    inside `budget`, and return the best answer the budget allows.

    `store` is where the trace goes: a `Store` you own and share across calls (a server,
    a viewer), a SQLite path, None for the default file, or False for none. `trace_id`
    names the trace (a job id), `on_node` hears every node when it is added and again
    each time it grows (the same live record; `ponder.trace.collect` keeps each once). Cancelling
    the task marks the trace "cancelled" and keeps every thought already written; an
    error marks it "error" with the message.
    """
    problem = as_problem(question)
    if isinstance(budget, str):
        budget = Budget.parse(budget)
    meter = meter or Meter(budget)
    engine = engine or default_engine()
    chosen = parse_strategy(strategy, engine=engine)  # judge / reward specs inside grade with it
    if meter.budget.usd is not None and getattr(engine, "price", None) is None:
        raise BudgetError(
            f"a dollar budget needs the price of {engine.model!r}: give the engine a price per million"
            " tokens (--price-input / --price-output, PONDER_PRICE_INPUT / PONDER_PRICE_OUTPUT)"
        )
    if verifier is None and problem.tests:
        verifier = UnitTests()  # a problem that brings tests is checked against them
    trace_store = _open_store(store)
    trace = Trace(trace_id, store=trace_store)
    if on_node is not None:
        trace.listeners.append(on_node)
    if trace_store is not None:
        trace_store.begin_trace(
            trace.id,
            question=problem.question,
            strategy=chosen.spec(),
            model=engine.model,
            budget=meter.budget.to_dict(),
            created_at=time.time(),
            problem=_problem_record(problem),
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

    def finish(
        status: TraceStatus, answer: str | None = None, usage: Usage | None = None, **extra: Any
    ) -> None:
        if trace_store is not None:
            trace_store.finish_trace(
                trace.id,
                status=status,
                answer=answer,
                stopped_by=meter.stopped_by,
                usage=dataclasses.asdict(usage or Usage.from_meter(meter, 0)),
                finished_at=time.time(),
                **extra,
            )

    try:
        result = await chosen.run(problem, ctx)
    except asyncio.CancelledError:
        finish("cancelled")
        raise
    except BaseException as exc:
        finish("error", error=f"{type(exc).__name__}: {exc}")
        raise
    meter.note_limit()  # a limit reached exactly at the end still counts as what stopped it
    usage = Usage.from_meter(meter, result.response_tokens)
    trace.add("answer", result.response, parent=result.node or root, answer=result.answer, score=result.score)
    finish("done", result.answer, usage, model=engine.model)
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


def _problem_record(problem: Problem) -> dict[str, Any]:
    """What the trace keeps of the problem besides the question: the chat around it and
    how an answer is judged."""
    fields = {
        "system": problem.system,
        "history": problem.history,
        "format": problem.format,
        "gold": problem.gold,
        "id": problem.id,
        "entry_point": problem.entry_point,
        "choices": problem.choices,
        "has_tests": bool(problem.tests),
    }
    return {k: v for k, v in fields.items() if v not in (None, [], False)}


def _blocking(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The blocking face of an async function. Inside a running event loop (Jupyter, an
    async web app) it runs on a worker thread with its own loop instead of failing."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(fn(*args, **kwargs))
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ponder-think") as pool:
            return pool.submit(asyncio.run, fn(*args, **kwargs)).result()

    return call


think = _blocking(athink)
think.__doc__ = """Think about `question` and return the best answer the budget allows; the
blocking face of `athink`, with the same arguments.

    >>> think("What is 17 + 25?", strategy="self-consistency:n=8", budget="30s").answer
"""
