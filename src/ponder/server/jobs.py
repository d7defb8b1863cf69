"""Jobs: thinks that outlive their HTTP request. A job *is* a trace: its id is the trace id
and its state lives in the store, so after a restart a finished job still answers, and one
whose process died mid-think says "interrupted" (its trace was left "running" by nobody).
Events are the trace's node changes, numbered by version, so `Last-Event-ID` resumes a
stream exactly where it broke, even across a restart."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from ponder.server.plan import Plan
from ponder.server.service import Outcome, Service, completion
from ponder.server.streaming import POLL, follow, node_json
from ponder.server.thinking import best_so_far
from ponder.server.wire import ApiError, sse, usage_body
from ponder.think import Usage
from ponder.trace import new_id


class Jobs:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def create(self, plan: Plan) -> dict[str, Any]:
        if plan.n != 1:
            raise ApiError(400, "n: a job thinks once; create one job per answer", param="n")
        service = self.service
        service.gate.check()
        job_id = new_id()
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            try:
                async with service.gate.slot():
                    thinking = await service.begin(plan, plan.seed, job_id)
                    service.queued.pop(job_id, None)
                    started.set_result(thinking.trace_id)
                    # wait without owning: cancelling this runner must not cancel the think
                    # (a shutdown marks it "interrupted" itself, DELETE marks it "cancelled")
                    await asyncio.wait([thinking.task])
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                raise
            finally:
                service.queued.pop(job_id, None)

        task = asyncio.create_task(run())
        service.runners.add(task)
        task.add_done_callback(service.runners.discard)
        service.queued[job_id] = task
        await asyncio.wait([started], timeout=0.5)  # a free slot is taken at once: say "running"
        if started.done() and started.exception() is not None:
            raise started.exception()  # type: ignore[misc]  # could not begin (the queue filled)
        return self.view(job_id)

    def view(self, job_id: str) -> dict[str, Any]:
        service = self.service
        if job_id in service.queued and job_id not in service.live:
            return {"id": job_id, "object": "ponder.job", "status": "queued", "best": None, "result": None}
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
        queued = service.queued.pop(job_id, None)
        if queued is not None and job_id not in service.live:
            queued.cancel()
            return {"id": job_id, "object": "ponder.job", "status": "cancelled", "best": None, "result": None}
        live = service.live.get(job_id)
        if live is not None and not live.done:
            await service.stop(live, "cancelled")
        return self.view(job_id)

    def check(self, job_id: str) -> None:
        if job_id not in self.service.queued:
            self.service.trace(job_id, param="job_id")

    async def events(self, job_id: str, after: int) -> AsyncIterator[bytes]:
        """`node` events (id = the node's version) then one `end` event with the job's view;
        a stopping server ends the stream early (the client resumes with Last-Event-ID)."""
        service = self.service
        while job_id in service.queued and job_id not in service.live and not service.stopping.is_set():
            await asyncio.sleep(POLL)
        trace_id = service.trace(job_id, param="job_id").id
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
