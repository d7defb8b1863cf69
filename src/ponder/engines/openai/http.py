"""HTTP for the OpenAI engine: one client per event loop, retries, and error messages.

- An httpx `AsyncClient` (and the semaphore bounding requests in flight) belongs to the
  event loop it was made on. `HttpClient` makes them for the loop that is running and
  makes them again when that loop changes, so one engine serves two `asyncio.run` calls.
- Retries (tenacity): 429, 408/409/425, 5xx, dropped connections, timeouts and replies
  that fail `wire`'s checks are retried with full-jitter exponential backoff, or after the
  server's `Retry-After` / `retry-after-ms` when it gives one. Other 4xx raise at once with
  the server's message: retrying a bad key only burns time. A host name that does not
  resolve raises at once too: the URL is wrong, waiting will not fix it.
- A streamed request that already handed text to its listener is not retried (the retry
  could write other text); the caller keeps what was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import socket
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from ponder.engines.base import EngineError
from ponder.engines.openai.sse import Stream
from ponder.engines.openai.wire import BadReply

MAX_RETRY_AFTER = 120.0
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})

T = TypeVar("T")


def normalize_base_url(url: str) -> str:
    """Accept `http://host:port` as well as `http://host:port/v1`: every server we target
    serves the API under /v1, and a bare host is the commonest slip."""
    url = url.strip().rstrip("/")
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"base URL {url!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
    if parsed.path in ("", "/"):
        url += "/v1"
    return url


def server_message(response: httpx.Response) -> str:
    """The server's own words from an error body: OpenAI `{"error": {"message"}}`,
    FastAPI `{"detail"}`, llama.cpp `{"error": {"message"}}`, or plain text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return (err if isinstance(err, str) else json.dumps(err))[:500]
    return json.dumps(body)[:500]


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or an HTTP date)."""
    ms = response.headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000)
    value = response.headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def _unresolvable(exc: BaseException) -> bool:
    """The connection failed because the host name does not resolve (socket.gaierror
    somewhere down the exception chain)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, socket.gaierror):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


async def _close_with_loop(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    """Parked at its `yield` until its loop shuts down: `asyncio.run` closes the loop's async
    generators before it closes the loop (PEP 525 hooks), and this one closes the client,
    so no keep-alive socket outlives its loop."""
    try:
        yield
    finally:
        await client.aclose()


@dataclass
class _LoopState:
    client: httpx.AsyncClient
    slots: asyncio.Semaphore
    lock: asyncio.Lock
    closer: AsyncGenerator[None, None] | None = None


class HttpClient:
    """JSON over HTTP to one base URL, retried; see the module docstring."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float,
        max_in_flight: int,
        max_retries: int,
        backoff: float,
        max_backoff: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self._backoff = wait_random_exponential(multiplier=backoff, max=max_backoff)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}

    def _current(self) -> _LoopState:
        """The client, semaphore and lock of the running event loop, made on first use there.
        Those of loops that have closed since are dropped (their sockets went with the loop)."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            for old, _ in list(self._states.items()):  # a snapshot: think() may run on a thread
                if old.is_closed():
                    self._states.pop(old, None)
            client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._headers,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                limits=httpx.Limits(
                    max_connections=self.max_in_flight + 2, max_keepalive_connections=self.max_in_flight
                ),
                transport=self._transport,
            )
            state = self._states[loop] = _LoopState(
                client, asyncio.Semaphore(self.max_in_flight), asyncio.Lock()
            )
        return state

    def slots(self) -> asyncio.Semaphore:
        """Bounds the requests in flight on this loop."""
        return self._current().slots

    def lock(self) -> asyncio.Lock:
        """A lock of this loop (model discovery runs once)."""
        return self._current().lock

    async def _client(self) -> httpx.AsyncClient:
        state = self._current()
        if state.closer is None:
            state.closer = _close_with_loop(state.client)
            await anext(state.closer)
        return state.client

    async def aclose(self) -> None:
        """Close this loop's client (the engine stays usable: the next request makes one)."""
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await (state.client.aclose() if state.closer is None else state.closer.aclose())

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, BadReply) and exc.retry_after is not None:
            return min(MAX_RETRY_AFTER, exc.retry_after)
        return float(self._backoff(state))

    async def request(
        self,
        method: str,
        path: str,
        check: Callable[[dict[str, Any]], T],
        body: dict[str, Any] | None = None,
        stream: Stream | None = None,
    ) -> T:
        """One logical call: the JSON reply passed through `check` (which raises `BadReply`
        for a reply it cannot use), retried on transient failures. A streamed reply is read
        into `stream` and checked as the equivalent JSON body."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, BadReply) and not (stream and stream.delivered)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return check(await self._attempt(method, path, body, stream))
        except BadReply as exc:
            attempts = retrying.statistics.get("attempt_number", self.max_retries + 1)
            raise EngineError(
                f"{method} {self.base_url}{path} failed after {attempts} attempts: {exc}",
                status=exc.status,
                transient=True,
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _attempt(
        self, method: str, path: str, body: dict[str, Any] | None, stream: Stream | None
    ) -> dict[str, Any]:
        client = await self._client()
        try:
            # httpx's timeout is per socket operation; this bounds the whole request, so a
            # server that trickles bytes cannot hold a sample forever.
            async with asyncio.timeout(self.timeout):
                if stream is None:
                    return self._json(await client.request(method, path, json=body), path)
                async with client.stream(method, path, json=body) as response:
                    if "text/event-stream" not in response.headers.get("content-type", ""):
                        await response.aread()  # an error, or a server that does not stream
                        return self._json(response, path)
                    return await stream.read(response)
        except TimeoutError as exc:
            raise BadReply(f"no complete response within {self.timeout:g}s") from exc
        except httpx.TimeoutException as exc:
            raise BadReply(f"timed out ({type(exc).__name__}) after {self.timeout:g}s") from exc
        except httpx.TransportError as exc:
            if _unresolvable(exc):
                host = httpx.URL(self.base_url).host
                raise EngineError(
                    f"cannot resolve the host {host!r} of {self.base_url}: check the base URL ({exc})"
                ) from None
            raise BadReply(f"{type(exc).__name__}: {exc or 'connection failed'}") from exc

    def _json(self, response: httpx.Response, path: str) -> dict[str, Any]:
        status = response.status_code
        if status in RETRYABLE_STATUS or status >= 500:
            raise BadReply(
                f"HTTP {status}: {server_message(response)}", retry_after=retry_after(response), status=status
            )
        if status >= 400:
            raise EngineError(
                f"{self.base_url}{path} returned HTTP {status}: {server_message(response)}", status=status
            )
        try:
            data = response.json()
        except ValueError as exc:
            raise BadReply(f"malformed JSON in HTTP {status} response: {response.text[:200]!r}") from exc
        if not isinstance(data, dict):
            raise BadReply(f"unexpected JSON (not an object): {response.text[:200]!r}")
        return data
