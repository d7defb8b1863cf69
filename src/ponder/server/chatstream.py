"""A streamed chat completion with n choices: n independent thinks (seeds seed..seed+n-1, as
the non-streamed request runs them, under the same one gate slot), their events interleaved
in one SSE stream as they happen, every chunk naming its choice.

What a client reads: a first chunk opening every choice in index order (`role`; accumulators
such as the openai client's stream helper add a choice when its index first appears); then,
per choice and interleaved, `delta.reasoning_content` while it thinks, `delta.content` once
it answered, a chunk with its `finish_reason` and its `ponder` object; once all have
finished, the usage chunk (their sum, as the non-streamed response gives) when asked, and
`[DONE]`. A client that leaves cancels every think; an error in one choice ends the stream
with an OpenAI-style error event and cancels the others (the traces keep what they wrote)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request

from ponder.engines.base import EngineError
from ponder.server.guards import Busy
from ponder.server.plan import Plan
from ponder.server.service import Outcome, Service, total_usage
from ponder.server.streaming import POLL, Narrator, follow
from ponder.server.thinking import Thinking, engine_failure, failure
from ponder.server.wire import ApiError, choice_delta, chunk, error_body, sse
from ponder.store import NodeRecord, StoreError

Batch = list[NodeRecord] | None  # None: that choice's think is over and fully read


async def chat_stream(
    service: Service, chosen: Plan, include_usage: bool, request: Request
) -> AsyncIterator[bytes]:
    """The SSE body of a streamed `/v1/chat/completions` (see the module docstring)."""
    async with contextlib.AsyncExitStack() as slot:
        try:
            await slot.enter_async_context(service.gate.slot())
        except Busy as busy:  # the queue filled since the handler's check
            yield sse(busy.body())
            return
        thinks: list[Thinking] = []
        try:
            try:
                for i in range(chosen.n):
                    thinks.append(await service.begin(chosen, chosen.seed + i))
            except (EngineError, StoreError) as exc:
                yield sse(error_body(str(exc), kind="upstream_error"))
                return
            request.state.log = {"trace_id": thinks[0].trace_id, "strategy": chosen.spec}
            said = _said(service, chosen, thinks, include_usage, request.is_disconnected)
            async with contextlib.aclosing(said):  # closed here, not by the GC, when the client leaves
                async for event in said:
                    yield event
        finally:
            for thinking in thinks:
                if not thinking.done:
                    await service.stop(thinking, service.leaving_status)


async def _said(
    service: Service,
    chosen: Plan,
    thinks: list[Thinking],
    include_usage: bool,
    gone: Callable[[], Awaitable[bool]],
) -> AsyncGenerator[bytes, None]:
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def say(*choices: dict[str, Any], **extra: Any) -> bytes:
        return sse(chunk(cid, chosen.model, created, list(choices), **extra))

    narrators = [Narrator() for _ in thinks]
    outcomes: dict[int, Outcome] = {}
    yield say(*(choice_delta(i, {"role": "assistant", "content": ""}) for i in range(len(thinks))))
    events = interleave([follow(service.store, t.trace_id, t) for t in thinks], gone)
    try:
        async with contextlib.aclosing(events):
            async for i, nodes in events:
                if nodes is None:
                    settled = _settled(service, thinks[i])
                    if isinstance(settled, ApiError):
                        yield sse(settled.body())
                        return
                    outcomes[i] = settled
                    content, finish = settled.content(chosen.stop)
                    yield say(choice_delta(i, {"content": content}))
                    yield say(choice_delta(i, {}, finish), ponder=settled.ponder())
                elif said := narrators[i].say(nodes):
                    yield say(choice_delta(i, {"reasoning_content": said}))
                elif not nodes:
                    yield b": keep-alive\n\n"
    except StoreError as exc:
        yield sse(error_body(str(exc), kind="server_error"))
        return
    if len(outcomes) < len(thinks):  # the client left
        return
    if include_usage:
        yield say(usage=total_usage([outcomes[i] for i in range(len(thinks))]))
    yield sse("[DONE]")


def _settled(service: Service, thinking: Thinking) -> Outcome | ApiError:
    """A finished think as its choice's answer, or the error the client should read."""
    if thinking.task.cancelled():  # only a shutdown stops a think whose client is still here
        return ApiError(503, "the server is shutting down; this think was interrupted", kind="server_error")
    try:
        answer = thinking.task.result()
    except EngineError as exc:
        return engine_failure(exc)
    return failure(service.store, answer, service.engine) or Outcome.of(answer)


async def interleave(
    readers: Sequence[AsyncIterator[list[NodeRecord]]], gone: Callable[[], Awaitable[bool]]
) -> AsyncGenerator[tuple[int, Batch], None]:
    """Every reader's batches as they come, tagged with the reader's index, and (index,
    None) when that reader ends; a reader's error is raised here. Returns early, closing
    the readers, once `gone()` says the client has left (asked at most every POLL seconds)."""
    queue: asyncio.Queue[tuple[int, Batch | Exception]] = asyncio.Queue()

    async def pump(i: int, reader: AsyncIterator[list[NodeRecord]]) -> None:
        try:
            async for batch in reader:
                queue.put_nowait((i, batch))
            queue.put_nowait((i, None))
        except Exception as exc:
            queue.put_nowait((i, exc))

    pumps = [asyncio.create_task(pump(i, r)) for i, r in enumerate(readers)]
    running, asked = len(pumps), time.monotonic()
    try:
        while running:
            got = None
            with contextlib.suppress(TimeoutError):
                got = await asyncio.wait_for(queue.get(), POLL)
            if got is not None:
                i, item = got
                if isinstance(item, Exception):
                    raise item
                running -= item is None
                yield i, item
            if time.monotonic() - asked >= POLL:
                asked = time.monotonic()
                if await gone():
                    return
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
