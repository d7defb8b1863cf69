"""Jobs: thinks that outlive their HTTP request. A job *is* a trace: its id is the trace id
and its state lives in the store, so after a restart a finished job still answers, and one
whose process died mid-think says "interrupted" (its trace was left "running" by nobody).
Events are the trace's node changes, numbered by version, so `Last-Event-ID` resumes a
stream exactly where it broke, even across a restart.

A job waiting for a slot is a trace too: begun "queued" with its plan as JSON, the moment
it is accepted. When a slot frees, the runner dequeues it to "running" (atomically: a job
cancelled meanwhile, or taken by another server on the same store, is not run), and the
think continues that trace. A server starting up adopts the queued jobs of dead servers
and runs them, oldest first."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ponder.server.plan import Plan
from ponder.server.service import Outcome, Service, completion
from ponder.server.streaming import POLL, follow, node_json
from ponder.server.thinking import best_so_far
from ponder.server.wire import ApiError, sse, usage_body
from ponder.think import Usage
from ponder.trace import new_id

log = logging.getLogger("ponder.server")


class Jobs:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def create(self, plan: Plan) -> dict[str, Any]:
        if plan.n != 1:
            raise ApiError(400, "n: a job thinks once; create one job per answer", param="n")
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[None] = loop.create_future()
        started: asyncio.Future[None] = loop.create_future()
        job_id = new_id()
        self._run(job_id, plan, accepted, started)
        await accepted  # in the store now, or refused (429: the queue is full)
        await asyncio.wait([started], timeout=0.5)  # a free slot is taken at once: say "running"
        started.add_done_callback(lambda f: f.cancelled() or f.exception())  # told, or nobody asks
        if started.done() and not started.cancelled() and started.exception() is not None:
            raise started.exception()  # type: ignore[misc]  # could not begin
        return self.view(job_id)

    def resume(self) -> int:
        """Run the jobs that servers now gone had accepted but not begun, oldest first;
        they wait for slots like any job (past the queue's cap: they were admitted once).
        Returns how many."""
        service = self.service
        adopted = service.store.adopt_queued()
        for trace in adopted:
            try:
                plan = Plan.from_dict(trace.job or {}, service.engine)
            except (KeyError, TypeError, ValueError) as exc:
                service.store.dequeue(trace.id, "error", f"cannot run the queued job here: {exc!r}")
                continue
            self._run(trace.id, plan)
        if adopted:
            log.info("resumed %d queued job(s)", len(adopted))
        return len(adopted)

    def _run(
        self,
        job_id: str,
        plan: Plan,
        accepted: asyncio.Future[None] | None = None,
        started: asyncio.Future[None] | None = None,
    ) -> None:
        """The job's runner: (a new job) check the queue and write it "queued", then wait
        for a slot, dequeue it and think. `accepted` / `started` tell a creating request
        how far it got; without them the job is one adopted from the store."""
        service = self.service

        async def run() -> None:
            try:
                if accepted is not None:  # check, write and enter the queue in one step: no race
                    service.gate.check()
                    service.store.begin_trace(
                        job_id,
                        question=plan.problem.question,
                        strategy=plan.spec,
                        model=service.engine.model,
                        budget=plan.budget.to_dict(),
                        created_at=time.time(),
                        job=plan.to_dict(),
                    )
                    accepted.set_result(None)
                async with service.gate.slot(admitted=accepted is None):
                    if not service.store.dequeue(job_id, "running"):
                        return  # cancelled while it waited, here or through another server
                    try:
                        thinking = await service.begin(plan, plan.seed, job_id)
                    except Exception as exc:
                        self._failed(job_id, exc)
                        raise
                    service.queued.pop(job_id, None)
                    if started is not None:
                        started.set_result(None)
                    # wait without owning: cancelling this runner must not cancel the think
                    # (a shutdown marks it "interrupted" itself, DELETE marks it "cancelled")
                    await asyncio.wait([thinking.task])
            except Exception as exc:  # the first creator future still waiting answers with it
                waiting = next((f for f in (accepted, started) if f is not None and not f.done()), None)
                if waiting is not None:
                    waiting.set_exception(exc)
                if waiting is None or waiting is started:  # not a refusal: the client may never see it
                    log.warning("job %s failed: %s: %s", job_id, type(exc).__name__, exc)
            finally:
                service.queued.pop(job_id, None)

        def untold(_: object) -> None:  # cancelled (a shutdown, DELETE while it waited) or never began
            for told in (accepted, started):
                if told is not None:
                    told.cancel()  # no-op once told

        task = asyncio.create_task(run())
        service.runners.add(task)
        task.add_done_callback(service.runners.discard)
        task.add_done_callback(untold)
        service.queued[job_id] = task

    def _failed(self, job_id: str, exc: Exception) -> None:
        """A dequeued job whose think could not begin: its trace says why."""
        self.service.store.finish_trace(
            job_id,
            status="error",
            answer=None,
            stopped_by=None,
            usage={},
            finished_at=time.time(),
            error=f"{type(exc).__name__}: {exc}",
        )

    def view(self, job_id: str) -> dict[str, Any]:
        service = self.service
        trace = service.trace(job_id, param="job_id")
        live = service.live.get(trace.id)
        if live is not None and not live.done:
            status = "running"
            usage = dataclasses.asdict(Usage.from_meter(live.meter, 0))
        else:
            status = trace.status  # a writer that died mid-think left it "interrupted"
            usage = trace.usage or {}
        best = best_so_far(trace.nodes)
        outcome = Outcome.stored(trace)
        return {
            "id": trace.id,
            "object": "ponder.job",
            "status": status,
            "model": trace.model,
            "strategy": trace.strategy,
            "question": trace.question,
            "created_at": trace.created_at,
            "finished_at": trace.finished_at,
            "stopped_by": trace.stopped_by,
            "best": dataclasses.asdict(best),
            "usage": {**usage_body(usage), "seconds": usage.get("seconds"), "usd": usage.get("usd")},
            "result": completion([outcome], trace.model, []) if outcome else None,
        }

    async def cancel(self, job_id: str) -> dict[str, Any]:
        service = self.service
        job_id = service.trace(job_id, param="job_id").id
        if service.store.dequeue(job_id, "cancelled"):  # it never runs, whoever queued it
            waiting = service.queued.pop(job_id, None)
            if waiting is not None:
                waiting.cancel()
        live = service.live.get(job_id)
        if live is not None and not live.done:
            await service.stop(live, "cancelled")
        return self.view(job_id)

    def check(self, job_id: str) -> None:
        self.service.trace(job_id, param="job_id")

    async def events(self, job_id: str, after: int) -> AsyncIterator[bytes]:
        """`node` events (id = the node's version) then one `end` event with the job's view;
        a stopping server ends the stream early (the client resumes with Last-Event-ID)."""
        service = self.service
        trace_id = service.trace(job_id, param="job_id").id
        while self._waiting(trace_id) and not service.stopping.is_set():
            await asyncio.sleep(POLL)
        if self._waiting(trace_id):
            return  # the server is stopping before the job began: the client resumes later
        last = after
        live = service.live.get(trace_id)
        async for nodes in follow(service.store, trace_id, live, after=after, stopping=service.stopping):
            if not nodes:
                yield b": keep-alive\n\n"
            for node in nodes:
                last = node.version
                yield sse(node_json(node), event="node", event_id=last)
        if live is not None and not live.done:
            return  # the server is stopping mid-think: no end event, the client resumes later
        yield sse(self.view(trace_id), event="end", event_id=last)

    def _waiting(self, trace_id: str) -> bool:
        """Queued here (until its think is live) or, by any server, in the store."""
        service = self.service
        if trace_id in service.queued:
            return trace_id not in service.live
        return service.trace(trace_id).status == "queued"
