"""The server's one seam to the core: start a think as a task, follow its trace live, cancel
it keeping what was thought, read and list traces. Everything here leans on `athink` and
`TraceStore`; where the core does not yet offer a call (trace ids chosen by the caller,
`nodes_after`, filtered `list_traces`, a "cancelled" status), a small stand-in lives here
and only here, so adopting the core's version is a local change."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
from dataclasses import dataclass, field
from typing import Any

from ponder.budget import Budget, Meter
from ponder.engines.base import Engine
from ponder.problem import Problem
from ponder.store import NodeRecord, TraceRecord, TraceStore
from ponder.strategies import Strategy, StrategyError, parse_strategy
from ponder.think import Answer, Usage, athink
from ponder.trace import new_id
from ponder.vote import tally

# athink takes a trace id chosen by the caller (a job id known before its think starts)
IDS_UP_FRONT = "trace_id" in inspect.signature(athink).parameters
SOLUTION_KINDS = ("sample", "step", "revision")


class Pulse:
    """Wakes every waiting reader when the trace grows (set from any thread)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def beat(self) -> None:
        self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


@dataclass
class Thinking:
    """One think in flight: the task running `athink`, its meter, and a pulse per new node."""

    trace_id: str
    task: asyncio.Task[Answer]
    meter: Meter
    pulse: Pulse
    strategy: str
    ended: str | None = None  # the status this server gave it when it stopped it
    started: float = field(default_factory=time.time)

    @property
    def done(self) -> bool:
        return self.task.done()


def strategy_from(spec: str | dict[str, Any]) -> Strategy:
    """A strategy from a spec string or a JSON object {"name": ..., params...}."""
    if isinstance(spec, dict):
        try:
            return parse_strategy(spec)  # type: ignore[arg-type]  # the core's JSON specs, once they land
        except (StrategyError, TypeError, AttributeError):
            params = {k: v for k, v in spec.items() if k != "name"}
            if not isinstance(spec.get("name"), str) or any(
                isinstance(v, dict | list) for v in params.values()
            ):
                raise StrategyError('a strategy object needs "name" and simple parameters') from None
            text = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items())
            return parse_strategy(spec["name"] + (":" + text if text else ""))
    return parse_strategy(spec)


async def begin(
    problem: Problem,
    *,
    strategy: Strategy,
    budget: Budget,
    engine: Engine,
    store: TraceStore,
    seed: int,
    max_tokens: int,
    trace_id: str | None = None,
) -> Thinking:
    """Start `athink` as a task and return once its trace exists (so its id is known)."""
    pulse = Pulse()
    meter = Meter(budget)
    known: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_node(node: NodeRecord) -> None:
        if not known.done():
            known.set_result(node.trace_id)
        pulse.beat()

    options: dict[str, Any] = {}
    if IDS_UP_FRONT:
        options["trace_id"] = trace_id or new_id()
    task = asyncio.create_task(
        athink(
            problem,
            strategy=strategy,
            engine=engine,
            store=store,
            on_node=on_node,
            meter=meter,
            seed=seed,
            max_tokens=max_tokens,
            **options,
        )
    )
    task.add_done_callback(lambda _: pulse.beat())
    await asyncio.wait([task, known], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    if not known.done():
        task.result()  # athink failed before its trace began: raise why
        raise RuntimeError("the think ended without a trace")
    return Thinking(known.result(), task, meter, pulse, strategy.spec())


async def stop(thinking: Thinking, store: TraceStore, status: str) -> None:
    """Cancel a think and record `status` ("cancelled" by a client, "interrupted" by a
    shutdown); every node already written stays in the trace."""
    if thinking.done:
        return
    thinking.ended = status
    thinking.task.cancel()
    with contextlib.suppress(BaseException):
        await thinking.task
    usage = Usage.from_meter(thinking.meter, 0)
    store.finish_trace(
        thinking.trace_id,
        status=status,
        answer=None,
        stopped_by=thinking.meter.stopped_by,
        usage=dataclasses.asdict(usage),
        finished_at=time.time(),
    )


def version(node: NodeRecord) -> int:
    """A node's position in the trace's change log (the core's `version` once it has one)."""
    return int(getattr(node, "version", node.seq + 1))


def nodes_after(store: TraceStore, trace_id: str, after: int) -> list[NodeRecord]:
    """Nodes inserted or updated after version `after`, oldest change first."""
    if hasattr(store, "nodes_after"):
        return list(store.nodes_after(trace_id, after))
    trace = store.get_trace(trace_id)
    return [n for n in trace.nodes if version(n) > after] if trace else []


def list_traces(
    store: TraceStore,
    *,
    limit: int,
    offset: int,
    status: str | None,
    strategy: str | None,
    text: str | None,
) -> list[TraceRecord]:
    filters = {"status": status, "strategy": strategy, "text": text}
    if "offset" in inspect.signature(store.list_traces).parameters:
        return store.list_traces(limit, offset, **filters)  # type: ignore[call-arg]
    rows = store.list_traces(limit + offset if not any(filters.values()) else 100_000)
    rows = [
        t
        for t in rows
        if (status is None or t.status == status)
        and (strategy is None or t.strategy.startswith(strategy))
        and (text is None or text.lower() in t.question.lower())
    ]
    return rows[offset : offset + limit]


@dataclass(frozen=True)
class Best:
    """The best answer a trace holds so far: its final answer when it has one, else the
    majority of the answers its samples reached."""

    answer: str | None
    response: str | None
    votes: int = 0
    of: int = 0


def best_so_far(nodes: list[NodeRecord]) -> Best:
    final = [n for n in nodes if n.kind == "answer"]
    if final:
        return Best(final[-1].answer, final[-1].text)
    solved = [n for n in nodes if n.kind in SOLUTION_KINDS and n.answer]
    votes = tally(n.answer for n in solved)
    if votes.winner is None:
        return Best(None, None)
    chosen = next(n for n in solved if n.answer == votes.winner)
    return Best(votes.winner, chosen.text, int(votes.totals[votes.winner]), len(solved))
