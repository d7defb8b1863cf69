"""An `Engine` over any OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp, Ollama, hosted APIs).

Servers differ in what they honour, so this engine trusts little:

- `n > 1`: asked for once; if the server returns fewer choices (llama-cpp-python's server
  silently returns one) or rejects `n` with a 4xx (llama.cpp's own server), the missing
  samples are fanned out as parallel single requests with seeds `seed+i`, and the engine
  remembers that `n` is unsupported so later calls fan out from the start.
- Retries with exponential backoff and jitter on 429, 5xx, connection/read errors,
  timeouts and malformed JSON bodies, honouring `Retry-After`. Other 4xx raise `EngineError`
  at once with the server's message: retrying a bad key or a bad request only burns time.
- Completions are streamed (`stream=True`, server-sent events) so that the meter's deadline,
  which cancels requests in flight, keeps what each sample wrote so far: `generate` returns
  at the deadline with finish_reason "budget" and the partial text (tokens estimated and
  charged) for what did not finish. A server that ignores `stream` and answers with one JSON
  body is read as such; one that streams but sends no usage (`stream_options.include_usage`;
  llama-cpp-python's server) gets non-streamed requests from then on, because exact token
  counts matter more to budgets than partial text. The token budget is enforced up front:
  each request's `max_tokens` is capped at a fair share of `meter.tokens_left()` (see
  `_Spend`); a sample cut by that cap ends with finish_reason "budget".
- Usage comes from the server's `usage` field. The meter is charged prompt tokens once per
  HTTP request (a request with `n` choices evaluates its prompt once). Each `Completion`
  reports the full prompt size it was sampled from. When a response carries several choices
  and only aggregate usage, completion tokens are split exactly by the number of logprob
  entries when present, else in proportion to each choice's text length (largest remainder,
  so the parts sum to the server's total). Without `usage`, tokens are estimated at ~4
  characters a token and completions are marked `usage_estimated`.
- `prefill` on chat requests sends the partial assistant message last with
  `continue_final_message: true, add_generation_prompt: false`, a vLLM/SGLang extension.
  Servers without it (OpenAI, llama-cpp-python) may ignore the flags and start a new
  assistant turn, or reject unknown fields; use a raw `prompt` request there, where the
  prefill is simply appended to the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import math
import os
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from ponder.engines.base import (
    Completion,
    EngineError,
    FinishReason,
    GenerationRequest,
    OnCompletion,
    Price,
    TokenLogprob,
)

if TYPE_CHECKING:
    from ponder.budget import Meter

__all__ = ["EngineError", "OpenAIEngine"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
CHARS_PER_TOKEN = 4.0
MAX_RETRY_AFTER = 120.0
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _normalize_base_url(url: str) -> str:
    """Accept `http://host:port` as well as `http://host:port/v1`: every server we target
    serves the API under /v1, and a bare host is the commonest slip."""
    url = url.rstrip("/")
    if httpx.URL(url).path in ("", "/"):
        url += "/v1"
    return url


def estimate_tokens(text: str) -> int:
    """~4 characters a token: no tokenizer can be downloaded offline, and the estimate is
    only used for budgets when the server does not report usage."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def _server_message(response: httpx.Response) -> str:
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


def _retry_after(response: httpx.Response) -> float | None:
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


def _finish(reason: Any, capped: bool) -> FinishReason:
    if reason == "length":
        return "budget" if capped else "length"
    return "stop"


def _split(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` in proportion to `weights` so the parts sum exactly to `total`."""
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    s = sum(weights)
    raw = [total * w / s for w in weights]
    parts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _parse_logprobs(raw: Any) -> list[TokenLogprob] | None:
    """Chat shape `{"content": [{token, logprob, top_logprobs: [{token, logprob}]}]}` or
    completions shape `{tokens, token_logprobs, top_logprobs: [{token: logprob}]}`.
    A missing logprob (some servers give None for the first token) becomes NaN."""
    if not isinstance(raw, dict):
        return None

    def num(x: Any) -> float:
        return float(x) if isinstance(x, int | float) else math.nan

    if isinstance(raw.get("content"), list):
        out = []
        for item in raw["content"]:
            top = {
                str(t.get("token", "")): num(t.get("logprob"))
                for t in item.get("top_logprobs") or []
                if isinstance(t, dict)
            }
            out.append(TokenLogprob(str(item.get("token", "")), num(item.get("logprob")), top))
        return out
    if isinstance(raw.get("tokens"), list):
        tokens = raw["tokens"]
        lps = raw.get("token_logprobs") or [None] * len(tokens)
        tops = raw.get("top_logprobs") or [None] * len(tokens)
        return [
            TokenLogprob(
                str(tok),
                num(lp),
                {str(k): num(v) for k, v in top.items()} if isinstance(top, dict) else {},
            )
            for tok, lp, top in zip(tokens, lps, tops, strict=False)
        ]
    return None


def _prompt_text(req: GenerationRequest) -> str:
    if req.prompt is not None:
        return req.prompt + req.prefill
    return "".join(m.get("content", "") for m in req.messages or ()) + req.prefill


def _unfinished(error: str | None = None) -> Completion:
    """A sample the budget cut off (no error) or that failed after retries."""
    return Completion(
        text="",
        finish_reason="budget" if error is None else "error",
        prompt_tokens=0,
        completion_tokens=0,
        error=error,
    )


class _Stream:
    """One streamed HTTP response put back together: the choices' text, logprobs and finish
    reasons as the chunks arrive, and the usage of the final chunk. What it holds when the
    request is cancelled is the partial text of each choice."""

    def __init__(self, chat: bool, first: int = 0) -> None:
        self.chat = chat
        self.first = first  # the sample index of choice 0 in the caller's request
        self.reset()

    def reset(self) -> None:
        self.streamed = False  # the server answered with events (not one JSON body)
        self.text: dict[int, list[str]] = {}
        self.logprobs: dict[int, dict[str, list[Any]]] = {}
        self.finish: dict[int, Any] = {}
        self.usage: Any = None

    def add(self, chunk: dict[str, Any]) -> None:
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for c in chunk.get("choices") or []:
            if not isinstance(c, dict):
                continue
            i = int(c.get("index") or 0)
            delta = c.get("delta") if self.chat else c
            piece = delta.get("content") if self.chat and isinstance(delta, dict) else c.get("text")
            self.text.setdefault(i, []).append(str(piece or ""))
            if isinstance(c.get("logprobs"), dict):
                into = self.logprobs.setdefault(i, {})
                for key, values in c["logprobs"].items():
                    if isinstance(values, list):
                        into.setdefault(key, []).extend(values)
            if c.get("finish_reason"):
                self.finish[i] = c["finish_reason"]

    def partial(self, i: int) -> str:
        return "".join(self.text.get(i, []))

    def response(self) -> dict[str, Any]:
        """The chunks as the one JSON body a non-streamed request would have returned."""
        choices = []
        for i in sorted(self.text):
            choice: dict[str, Any] = {"index": i, "finish_reason": self.finish.get(i)}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": self.partial(i)}
            else:
                choice["text"] = self.partial(i)
            if i in self.logprobs:
                choice["logprobs"] = self.logprobs[i]
            choices.append(choice)
        out: dict[str, Any] = {"choices": choices}
        if self.usage is not None:
            out["usage"] = self.usage
        return out


async def _all(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run concurrently; on the first exception (or cancellation) cancel and reap the rest,
    so no orphaned request keeps a server busy."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Spend:
    """One `generate` call's share of the meter's token budget.

    Tokens are counted when a reply is complete (a streamed one may count them only in its
    last chunk), so a sample is not stopped when the budget runs out mid-flight. Instead
    each request is capped, when it is sent, at an equal share of the tokens neither spent
    nor reserved by requests in flight, divided among the samples not yet sent: N parallel
    samples cannot spend N times the budget, and samples sent later inherit what early
    stoppers left.
    """

    def __init__(self, meter: Meter | None, samples: int) -> None:
        self.meter = meter
        self.waiting = samples
        self.reserved = 0

    def take(self, n: int, max_tokens: int) -> tuple[int, bool] | None:
        """(max_tokens per choice, capped by budget) for a request of `n` choices, or None
        when the budget is used up."""
        meter, waiting = self.meter, max(self.waiting, n)
        self.waiting = max(0, self.waiting - n)
        if meter is None:
            return max_tokens, False
        if meter.exhausted():
            return None
        left = meter.tokens_left()
        if math.isinf(left):
            return max_tokens, False
        avail = int(left) - self.reserved
        if avail < 1:
            meter.note_stop("tokens")
            return None
        cap = min(max_tokens, max(1, avail // waiting))
        self.reserved += cap * n
        return cap, cap < max_tokens

    def release(self, n: int, cap: int) -> None:
        if self.meter is not None and math.isfinite(self.meter.tokens_left()):
            self.reserved -= cap * n


class OpenAIEngine:
    """Samples from an OpenAI-compatible server with bounded concurrency and retries.

        engine = OpenAIEngine("http://127.0.0.1:8000/v1")  # model from GET /models
        [samples] = await engine.generate([GenerationRequest(messages=msgs, n=8)], meter)
        await engine.aclose()

    `base_url` falls back to $PONDER_BASE_URL, $OPENAI_BASE_URL, then api.openai.com; a
    bare `http://host:port` gets `/v1` appended. `model` falls back to $PONDER_MODEL, then
    the server's first model; `api_key` to $PONDER_API_KEY, $OPENAI_API_KEY. One engine
    belongs to one event loop (its httpx client and semaphore do).
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        max_in_flight: int = 8,
        timeout: float = 120.0,
        max_retries: int = 4,
        price: Price = Price(),  # noqa: B008 - Price is frozen, sharing the default is safe
        transport: httpx.AsyncBaseTransport | None = None,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        stream: bool = True,
    ) -> None:
        self.base_url = _normalize_base_url(
            base_url or _env("PONDER_BASE_URL", "OPENAI_BASE_URL") or DEFAULT_BASE_URL
        )
        self.model: str = model or _env("PONDER_MODEL") or ""
        self.price = price
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_in_flight = max_in_flight
        self.stream = stream
        # None: not yet known; False once the server was seen to ignore or reject n > 1.
        self.n_supported: bool | None = None
        key = api_key or _env("PONDER_API_KEY", "OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max_in_flight + 2, max_keepalive_connections=max_in_flight),
            transport=transport,
        )
        self._sem = asyncio.Semaphore(max_in_flight)
        self._model_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.model!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> OpenAIEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- HTTP with retries -------------------------------------------------------------

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, stream: _Stream | None = None
    ) -> Any:
        """One logical call: retried on transient failures, parsed JSON returned (a streamed
        response is read into `stream` and returned as the equivalent JSON body)."""
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                return await self._attempt(method, path, body, stream)
            except _Retryable as exc:
                last = str(exc)
                if attempt == self.max_retries:
                    break
                delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
                if exc.retry_after is not None:
                    delay = min(MAX_RETRY_AFTER, exc.retry_after)
                await asyncio.sleep(delay)
        raise EngineError(
            f"{method} {self.base_url}{path} failed after {self.max_retries + 1} attempts: {last}",
            transient=True,
        )

    async def _attempt(
        self, method: str, path: str, body: dict[str, Any] | None, stream: _Stream | None
    ) -> Any:
        try:
            # httpx's timeout is per socket operation; this bounds the whole request, so a
            # server that trickles bytes cannot hold a sample forever.
            async with asyncio.timeout(self.timeout):
                if stream is None:
                    return self._json(await self._client.request(method, path, json=body), path)
                async with self._client.stream(method, path, json=body) as response:
                    if "text/event-stream" not in response.headers.get("content-type", ""):
                        await response.aread()  # an error, or a server that does not stream
                        return self._json(response, path)
                    return await self._read_events(response, stream)
        except TimeoutError as exc:
            raise _Retryable(f"no complete response within {self.timeout:g}s") from exc
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out ({type(exc).__name__}) after {self.timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc or 'connection failed'}") from exc

    def _json(self, response: httpx.Response, path: str) -> dict[str, Any]:
        status = response.status_code
        if status in RETRYABLE_STATUS or status >= 500:
            raise _Retryable(
                f"HTTP {status}: {_server_message(response)}",
                retry_after=_retry_after(response),
                status=status,
            )
        if status >= 400:
            raise EngineError(
                f"{self.base_url}{path} returned HTTP {status}: {_server_message(response)}", status=status
            )
        try:
            data = response.json()
        except ValueError as exc:
            raise _Retryable(f"malformed JSON in HTTP {status} response: {response.text[:200]!r}") from exc
        if not isinstance(data, dict):
            raise _Retryable(f"unexpected JSON (not an object): {response.text[:200]!r}")
        return data

    async def _read_events(self, response: httpx.Response, stream: _Stream) -> dict[str, Any]:
        """Server-sent events (`data: {chunk}` lines, then `data: [DONE]`) into `stream`."""
        stream.reset()  # a retried request starts over
        stream.streamed = True
        done = False
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(payload)
            except ValueError as exc:
                raise _Retryable(f"malformed event in the stream: {payload[:200]!r}") from exc
            if isinstance(chunk, dict):
                if isinstance(chunk.get("error"), dict | str):
                    raise _Retryable(f"error in the stream: {str(chunk['error'])[:300]}")
                stream.add(chunk)
        if not done and (not stream.text or len(stream.finish) < len(stream.text)):
            raise _Retryable("the stream ended before the completion did")
        return stream.response()

    async def ensure_model(self) -> str:
        """The model name; asked of `GET /models` (first entry) when none was given."""
        async with self._model_lock:
            if not self.model:
                data = await self._request("GET", "/models")
                models = data.get("data") or []
                if not models or not isinstance(models[0], dict) or not models[0].get("id"):
                    raise EngineError(f"{self.base_url}/models lists no model; pass model=...")
                self.model = str(models[0]["id"])
        return self.model

    # -- generate ----------------------------------------------------------------------

    async def generate(
        self,
        requests: Sequence[GenerationRequest],
        meter: Meter | None = None,
        on_completion: OnCompletion | None = None,
    ) -> list[list[Completion]]:
        if not requests:
            return []
        slots: list[list[Completion | None]] = [[None] * r.n for r in requests]
        streams: list[list[_Stream]] = [[] for _ in requests]  # partial text at a deadline
        spend = _Spend(meter, sum(r.n for r in requests))

        def put(request: int, sample: int, completion: Completion) -> None:
            slots[request][sample] = completion
            if on_completion is not None:
                on_completion(request, sample, completion)

        async def run() -> None:
            await self.ensure_model()
            await _all(
                self._run_request(r, slots[i], functools.partial(put, i), spend, streams[i])
                for i, r in enumerate(requests)
            )

        task = asyncio.create_task(run())
        try:
            deadline = None if meter is None else meter.deadline
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done and meter is not None:
                meter.exhausted()  # records "seconds" as what stopped the work
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not task.cancelled() and (exc := task.exception()) is not None:
            raise exc

        out = [
            [c if c is not None else self._cut_short(req, j, streams[i], meter) for j, c in enumerate(row)]
            for i, (req, row) in enumerate(zip(requests, slots, strict=True))
        ]
        flat = [c for row in out for c in row]
        if flat and all(c.finish_reason == "error" for c in flat):
            raise EngineError(flat[0].error or "every request failed", transient=True)
        return out

    def _cut_short(
        self, req: GenerationRequest, sample: int, streams: list[_Stream], meter: Meter | None
    ) -> Completion:
        """A sample the deadline stopped: what its stream had written, tokens estimated and
        charged (the server spent them), finish_reason "budget"."""
        stream = next((st for st in reversed(streams) if sample - st.first in st.text), None)
        if stream is None:
            return _unfinished()
        choice = sample - stream.first
        text = stream.partial(choice)
        if not text:
            return _unfinished()
        logprobs = _parse_logprobs(stream.logprobs.get(choice))
        tokens = len(logprobs) if logprobs else estimate_tokens(text)
        prompt = estimate_tokens(_prompt_text(req))
        if meter is not None:
            first_of_its_request = choice == min(stream.text)
            charged = prompt if first_of_its_request else 0
            meter.charge(
                prompt_tokens=charged, completion_tokens=tokens, usd=self.price.cost(charged, tokens)
            )
        return Completion(text, "budget", prompt, tokens, logprobs=logprobs, usage_estimated=True)

    async def _run_request(
        self,
        req: GenerationRequest,
        slots: list[Completion | None],
        put: Callable[[int, Completion], None],
        spend: _Spend,
        streams: list[_Stream],
    ) -> None:
        """Fill `slots` with `req.n` completions: one request asking for `n`, then single
        requests for whatever the server did not give."""
        start = 0
        if req.n > 1 and self.n_supported is not False:
            try:
                got = await self._call(req, req.n, req.seed, spend, streams, 0)
            except EngineError as exc:
                if exc.transient:
                    slots[:] = [_unfinished(str(exc))] * req.n
                    return
                if exc.status not in (400, 422):
                    raise
                got = []  # probably "n > 1 not supported"; the single requests tell if not
            if got is None:
                return  # budget used up: the slots stay unfinished
            for i, c in enumerate(got[: req.n]):
                put(i, c)
            start = len(got)
            if start >= req.n:
                self.n_supported = True
                return
            spend.waiting += req.n - start  # the missing samples go out as single requests
        await _all(
            self._single(req, slots, put, i, None if req.seed is None else req.seed + i, spend, streams)
            for i in range(start, req.n)
        )
        if req.n > 1:
            self.n_supported = False

    async def _single(
        self,
        req: GenerationRequest,
        slots: list[Completion | None],
        put: Callable[[int, Completion], None],
        i: int,
        seed: int | None,
        spend: _Spend,
        streams: list[_Stream],
    ) -> None:
        try:
            got = await self._call(req, 1, seed, spend, streams, i)
            if got:
                put(i, got[0])
        except EngineError as exc:
            if not exc.transient:
                raise
            slots[i] = _unfinished(str(exc))

    async def _call(
        self,
        req: GenerationRequest,
        n: int,
        seed: int | None,
        spend: _Spend,
        streams: list[_Stream],
        first: int,
    ) -> list[Completion] | None:
        """One HTTP request for `n` choices (the server may return fewer), the first being
        sample `first` of the request; None when the budget left nothing to send it with.
        A streamed request is listed in `streams` while it runs."""
        async with self._sem:
            grant = spend.take(n, req.max_tokens)
            if grant is None:
                return None
            max_tokens, capped = grant
            chat = req.messages is not None
            body = self._body(req, n, seed, max_tokens)
            stream = None
            if self.stream:
                stream = _Stream(chat, first)
                streams.append(stream)
                body["stream"] = True
                body["stream_options"] = {"include_usage": True}
            t0 = time.monotonic()
            try:
                path = "/chat/completions" if chat else "/completions"
                data = await self._request("POST", path, body, stream)
            finally:
                spend.release(n, max_tokens)
            if stream is not None and stream.streamed and stream.usage is None:
                self.stream = False  # no usage in streams (llama-cpp-python): exact counts beat partial text
            seconds = time.monotonic() - t0
            # Charged before the slot is released, so the next request sees the spend.
            return self._parse(data, req, chat, capped, seconds, spend.meter)

    def _body(self, req: GenerationRequest, n: int, seed: int | None, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
        }
        if n > 1:
            body["n"] = n
        if req.stop:
            body["stop"] = list(req.stop)
        if seed is not None:
            body["seed"] = seed
        # Extensions (vLLM, SGLang, llama.cpp); sent only when used because strict servers
        # (OpenAI) reject unknown fields.
        if req.top_k > 0:
            body["top_k"] = req.top_k
        if req.min_p > 0:
            body["min_p"] = req.min_p
        if req.messages is not None:
            messages = [dict(m) for m in req.messages]
            if req.prefill:
                messages.append({"role": "assistant", "content": req.prefill})
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            body["messages"] = messages
            if req.logprobs:
                body["logprobs"] = True
                # Sent even when 0: llama-cpp-python returns no logprobs without it.
                body["top_logprobs"] = req.top_logprobs
        else:
            body["prompt"] = (req.prompt or "") + req.prefill
            if req.logprobs:
                body["logprobs"] = req.top_logprobs
        return body

    def _parse(
        self,
        data: dict[str, Any],
        req: GenerationRequest,
        chat: bool,
        capped: bool,
        seconds: float,
        meter: Meter | None,
    ) -> list[Completion]:
        choices = data.get("choices")
        if not isinstance(choices, list):
            raise EngineError(f"response without choices: {json.dumps(data)[:300]}", transient=True)
        choices = sorted((c for c in choices if isinstance(c, dict)), key=lambda c: c.get("index", 0) or 0)
        texts: list[str] = []
        for c in choices:
            if chat:
                message = c.get("message") or {}
                texts.append(str(message.get("content") or "") if isinstance(message, dict) else "")
            else:
                texts.append(str(c.get("text") or ""))
        logprobs = [_parse_logprobs(c.get("logprobs")) if req.logprobs else None for c in choices]

        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        estimated = not (usage and isinstance(usage.get("completion_tokens"), int))
        if estimated:
            prompt_tokens = estimate_tokens(_prompt_text(req))
            counts = [len(lp) if lp else estimate_tokens(t) for lp, t in zip(logprobs, texts, strict=True)]
        else:
            assert usage is not None
            pt = usage.get("prompt_tokens")
            prompt_tokens = pt if isinstance(pt, int) else estimate_tokens(_prompt_text(req))
            weights = [len(lp) if lp else len(t) for lp, t in zip(logprobs, texts, strict=True)]
            counts = _split(int(usage["completion_tokens"]), weights)

        if meter is not None:
            total = sum(counts)
            meter.charge(
                prompt_tokens=prompt_tokens,
                completion_tokens=total,
                usd=self.price.cost(prompt_tokens, total),
            )
        return [
            Completion(
                text=text,
                finish_reason=_finish(c.get("finish_reason"), capped),
                prompt_tokens=prompt_tokens,
                completion_tokens=count,
                seconds=seconds,
                logprobs=lp,
                usage_estimated=estimated,
            )
            for c, text, count, lp in zip(choices, texts, counts, logprobs, strict=True)
        ]
