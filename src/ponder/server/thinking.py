"""The server's one seam to the core: start a think as a task under a trace id chosen up
front (a job's id), follow its trace live, stop it keeping what was thought, pick the best
answer a trace holds so far. Everything here leans on `athink` and the trace store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass

from ponder.budget import Budget, Meter
from ponder.engines.base import Engine, EngineError
from ponder.problem import Problem
from ponder.server.wire import ApiError
from ponder.store import NodeRecord, TraceStore
from ponder.strategies import Strategy
from ponder.think import Answer, Usage, athink
from ponder.trace import TraceStatus, new_id
from ponder.vote import tally

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
    ended: str | None = None  # the status this server gave it when it stopped it

    @property
    def done(self) -> bool:
        return self.task.done()


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
    """Start `athink` as a task and return once its trace exists (or raise why it could not
    begin: a bad budget, a strategy that needs what the engine lacks)."""
    pulse = Pulse()
    meter = Meter(budget)
    known: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_node(node: NodeRecord) -> None:
        if not known.done():
            known.set_result(node.trace_id)
        pulse.beat()

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
            trace_id=trace_id or new_id(),
        )
    )
    task.add_done_callback(lambda _: pulse.beat())
    await asyncio.wait([task, known], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    if not known.done():
        task.result()  # athink failed before its trace began: raise why
        raise RuntimeError("the think ended without a trace")
    return Thinking(known.result(), task, meter, pulse)


async def stop(thinking: Thinking, store: TraceStore, status: TraceStatus) -> None:
    """Cancel a think (the core marks it "cancelled", every node already written stays);
    a shutdown then records "interrupted" instead."""
    if thinking.done:
        return
    thinking.ended = status
    thinking.task.cancel()
    with contextlib.suppress(BaseException):
        await thinking.task
    if status == "cancelled":
        return
    usage = Usage.from_meter(thinking.meter, 0)
    store.finish_trace(
        thinking.trace_id,
        status=status,
        answer=None,
        stopped_by=thinking.meter.stopped_by,
        usage=dataclasses.asdict(usage),
        finished_at=time.time(),
    )


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


def engine_failure(exc: EngineError) -> ApiError:
    """A model call that failed: the request's fault (the engine or upstream said 4xx, e.g.
    a prompt longer than the context) is a 400 naming the messages, anything else a 502."""
    if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403, 429):
        code = "context_length_exceeded" if "context" in str(exc) else None
        return ApiError(400, f"messages: {exc}", param="messages", code=code)
    return ApiError(502, f"the model failed: {exc}", kind="upstream_error")


def failure(store: TraceStore, answer: Answer, engine: Engine) -> ApiError | None:
    """Why a think that answered nothing failed, when every sample it drew failed in the
    engine (a prompt longer than the context, an upstream error): the client gets an error,
    not an empty answer with a 200."""
    if answer.response.strip():
        return None
    trace = store.get_trace(answer.trace_id)
    drawn = [n for n in trace.nodes if n.kind in SOLUTION_KINDS] if trace else []
    if not drawn or any(n.meta.get("finish_reason") != "error" for n in drawn):
        return None
    reason = next((str(n.meta["error"]) for n in drawn if n.meta.get("error")), "")
    context = getattr(engine, "n_ctx", None)
    longest = max(n.prompt_tokens for n in drawn)
    if "context" in reason or (isinstance(context, int) and longest >= context):
        message = reason or f"the prompt is {longest} tokens, the model's context {context}"
        return ApiError(400, f"messages: {message}", param="messages", code="context_length_exceeded")
    message = f"the model failed on every sample: {reason or 'see the trace ' + answer.trace_id}"
    return ApiError(502, message, kind="upstream_error")
