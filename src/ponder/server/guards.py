"""What stands between the network and a think: a Bearer key compared in constant time, a
cap on body size, a cap on concurrent thinks with a bounded queue (429 + Retry-After past
it), and a structured access log that never records message bodies."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ponder.server.wire import ApiError

access_log = logging.getLogger("ponder.server.access")
# The viewer's page and assets hold no data (its API calls carry the key), so a browser can load them.
OPEN_PATHS = ("/health", "/", "/ui/static/app.js", "/ui/static/style.css")


async def _send_error(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: access log, then the API key, then the body size limit."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        record: dict[str, Any] = {"status": 0, "bytes_out": 0}

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            elif message["type"] == "http.response.body":
                record["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self._guarded(scope, receive, logged_send, record)
        finally:
            client = scope.get("client")
            access_log.info(
                json.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "request_id": record.get("request_id"),
                        "client": f"{client[0]}:{client[1]}" if client else None,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": record["status"] or 499,  # 499: the client left before an answer
                        "ms": round((time.monotonic() - started) * 1000, 1),
                        "bytes_in": record.get("bytes_in", 0),
                        "bytes_out": record["bytes_out"],
                        **scope.get("state", {}).get("log", {}),
                    }
                )
            )

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, record: dict[str, Any]) -> None:
        record["request_id"] = uuid.uuid4().hex[:16]
        if self.api_key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            error = ApiError(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await _send_error(send, error)
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self._read_body(receive)
            if body is None:
                await _send_error(send, ApiError(413, f"the request body is over {self.max_body} bytes"))
                return
            record["bytes_in"] = len(body)
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        assert self.api_key is not None
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (read no further)."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then the real stream: http.disconnect when the client leaves

    return replay


class Busy(ApiError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            429,
            f"the server is at its limit of concurrent thinks and its queue is full; retry in {retry_after}s",
            kind="rate_limit_error",
            code="server_busy",
            headers={"Retry-After": str(retry_after)},
        )


class Gate:
    """At most `concurrent` thinks at once and `queue` waiting; past that, `Busy` (429).

    The Retry-After hint is the mean think time times the queue's depth in rounds, at least
    one second: how long until a slot is likely free."""

    def __init__(self, concurrent: int, queue: int) -> None:
        self.concurrent = concurrent
        self.queue = queue
        self._slots = asyncio.Semaphore(concurrent)
        self.running = 0
        self.waiting = 0
        self._mean = 1.0

    @property
    def full(self) -> bool:
        return self.running + self.waiting >= self.concurrent + self.queue

    def retry_after(self) -> int:
        rounds = 1 + self.waiting // self.concurrent
        return max(1, math.ceil(self._mean * rounds))

    def check(self) -> None:
        if self.full:
            raise Busy(self.retry_after())

    @asynccontextmanager
    async def slot(self, *, admitted: bool = False) -> AsyncIterator[None]:
        """Wait for a slot and hold it; `admitted` work (a job a dead server had accepted)
        waits even past the queue's cap rather than be refused."""
        if not admitted:
            self.check()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            self._mean = 0.8 * self._mean + 0.2 * (time.monotonic() - started)
