"""`OpenAIEngine`: sampling from an OpenAI-compatible server, whatever it honours.

- `n > 1`: asked for once; the samples the server did not return (llama-cpp-python's
  server silently returns one choice; llama.cpp's own rejects `n` with a 4xx) are fanned
  out as parallel single requests with seeds `seed+i`, and the engine remembers that `n`
  is unsupported so later calls fan out from the start.
- Streaming (`stream=True`): each chunk's text goes to `on_delta` as it arrives, and the
  meter's deadline, which cancels requests in flight, keeps what each sample wrote:
  `generate` returns at the deadline with finish_reason "budget" and the partial text
  (tokens estimated and charged). A server that ignores `stream` answers with one JSON
  body (and `on_delta` hears the whole text once); one that streams without usage
  (llama-cpp-python) gets non-streamed requests from then on, because exact token counts
  matter more to budgets than partial text. A stream that breaks after its text reached
  `on_delta` is not retried: the sample keeps that text, finish_reason "error".
- Budgets: see `spend.py` (tokens and dollars capped up front per request). Usage comes
  from the server's `usage`: prompt tokens charged once per HTTP request, aggregate
  completion tokens split over the choices exactly (by logprob entries, else by text
  length); without usage, ~4 characters a token and `usage_estimated`.
- `prefill` on chat requests sends the partial assistant message last with
  `continue_final_message: true, add_generation_prompt: false` (vLLM / SGLang). Servers
  without it may ignore the flags or reject them; use a raw `prompt` request there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from ponder.engines.base import (
    Completion,
    EngineError,
    FinishReason,
    GenerationRequest,
    OnCompletion,
    OnDelta,
    Price,
)
from ponder.engines.openai.http import HttpClient, normalize_base_url
from ponder.engines.openai.spend import Grant, Spend
from ponder.engines.openai.sse import Emit, Stream
from ponder.engines.openai.wire import (
    Reply,
    estimate_prompt_tokens,
    estimate_tokens,
    parse_logprobs,
    parse_models,
    parse_reply,
    request_body,
    split,
)
from ponder.settings import settings

if TYPE_CHECKING:
    from ponder.budget import Meter

NO_BASE_URL = (
    "the openai engine needs a server: pass base_url (--base-url) or set PONDER_OPENAI_BASE_URL "
    "or OPENAI_BASE_URL, e.g. http://127.0.0.1:8000/v1 for a local server or "
    "https://api.openai.com/v1 for OpenAI's own API"
)


def _finish(reason: str | None, capped: bool) -> FinishReason:
    if reason == "length":
        return "budget" if capped else "length"
    return "stop"


def _unfinished(error: str | None = None) -> Completion:
    """A sample the budget cut off (no error) or that failed after retries."""
    return Completion(
        text="",
        finish_reason="budget" if error is None else "error",
        prompt_tokens=0,
        completion_tokens=0,
        error=error,
    )


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


class _Sink:
    """Where one request's samples go: their slots, the caller's hooks, and the streams that
    are writing them (their partial text is what a deadline keeps)."""

    def __init__(
        self,
        request: int,
        req: GenerationRequest,
        on_completion: OnCompletion | None,
        on_delta: OnDelta | None,
    ) -> None:
        self.request = request
        self.req = req
        # The prompt's size as the server counted it, once a reply said: the fanned-out
        # samples of the same prompt are then budgeted exactly instead of estimated.
        self.prompt_tokens = estimate_prompt_tokens(req)
        self.slots: list[Completion | None] = [None] * req.n
        self.streams: list[Stream] = []
        self._on_completion = on_completion
        self._on_delta = on_delta
        self.emit: Emit | None = None if on_delta is None else functools.partial(on_delta, request)

    def put(self, sample: int, completion: Completion, streamed: bool) -> None:
        """A finished sample; its text goes to `on_delta` first unless it streamed there."""
        if not streamed and completion.text and self._on_delta is not None:
            self._on_delta(self.request, sample, completion.text)
        self.slots[sample] = completion
        if self._on_completion is not None:
            self._on_completion(self.request, sample, completion)

    def fail(self, sample: int, error: str) -> None:
        self.slots[sample] = _unfinished(error)


class OpenAIEngine:
    """Samples from an OpenAI-compatible server with bounded concurrency and retries.

        engine = OpenAIEngine("http://127.0.0.1:8000/v1")  # model from GET /models
        [samples] = await engine.generate([GenerationRequest(messages=msgs, n=8)], meter)
        await engine.aclose()

    `base_url` falls back to $PONDER_OPENAI_BASE_URL, $OPENAI_BASE_URL (none: ValueError);
    a bare `http://host:port` gets `/v1` appended. `model` falls back to $PONDER_MODEL, then
    the server's first model; `api_key` to $PONDER_API_KEY, $OPENAI_API_KEY. `price` (dollars
    per million tokens) to $PONDER_PRICE_INPUT and $PONDER_PRICE_OUTPUT; None means unknown,
    and no dollars are charged. The HTTP client is made per event loop, so one engine may
    serve several `asyncio.run` calls (one at a time).
    """

    price: Price | None

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        max_in_flight: int = 8,
        timeout: float = 120.0,
        max_retries: int = 4,
        price: Price | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        stream: bool = True,
        explicit_sampling: bool = False,
    ) -> None:
        env = settings()
        url = base_url or env.openai_base_url
        if not url:
            raise ValueError(NO_BASE_URL)
        if max_in_flight < 1 or max_retries < 0 or not timeout > 0:
            raise ValueError("max_in_flight must be >= 1, max_retries >= 0 and timeout > 0")
        self.base_url = normalize_base_url(url)
        self.model: str = model or env.model or ""
        self.price = price if price is not None else Price.given(env.price_input, env.price_output, env=True)
        self.stream = stream
        self.explicit_sampling = explicit_sampling
        # None: not yet known; False once the server was seen to ignore or reject n > 1.
        self.n_supported: bool | None = None
        key = api_key or (env.api_key.get_secret_value() if env.api_key else None)
        self._http = HttpClient(
            self.base_url,
            key,
            timeout=timeout,
            max_in_flight=max_in_flight,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.model!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> OpenAIEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def ensure_model(self) -> str:
        """The model name; asked of `GET /models` (first entry) when none was given."""
        async with self._http.lock():
            if not self.model:
                found = await self._http.request("GET", "/models", parse_models)
                if not found:
                    raise EngineError(f"{self.base_url}/models lists no model; pass model=...")
                self.model = found
        return self.model

    async def generate(
        self,
        requests: Sequence[GenerationRequest],
        meter: Meter | None = None,
        on_completion: OnCompletion | None = None,
        on_delta: OnDelta | None = None,
    ) -> list[list[Completion]]:
        if not requests:
            return []
        sinks = [_Sink(i, r, on_completion, on_delta) for i, r in enumerate(requests)]
        spend = Spend(meter, sum(r.n for r in requests), self.price)

        async def run() -> None:
            await self.ensure_model()
            await _all(self._run_request(sink, spend) for sink in sinks)

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
            [c if c is not None else self._cut_short(sink, j, spend) for j, c in enumerate(sink.slots)]
            for sink in sinks
        ]
        flat = [c for row in out for c in row]
        if flat and all(c.finish_reason == "error" and not c.text for c in flat):
            raise EngineError(flat[0].error or "every request failed", transient=True)
        return out

    def _cut_short(self, sink: _Sink, sample: int, spend: Spend) -> Completion:
        """A sample the deadline stopped: what its stream had written, tokens estimated and
        charged (the server spent them), finish_reason "budget"."""
        stream = next((st for st in reversed(sink.streams) if sample - st.first in st.text), None)
        if stream is None:
            return _unfinished()
        choice = sample - stream.first
        text = stream.partial(choice)
        if not text:
            return _unfinished()
        logprobs = parse_logprobs(stream.logprobs.get(choice))
        tokens = len(logprobs) if logprobs else estimate_tokens(text)
        prompt = sink.prompt_tokens
        first_of_its_request = choice == min(stream.text)
        spend.charge(prompt if first_of_its_request else 0, tokens)
        return Completion(text, "budget", prompt, tokens, logprobs=logprobs, usage_estimated=True)

    async def _run_request(self, sink: _Sink, spend: Spend) -> None:
        """Fill the sink with `req.n` completions: one request asking for `n`, then single
        requests for whatever the server did not give."""
        req = sink.req
        missing = list(range(req.n))
        if req.n > 1 and self.n_supported is not False:
            try:
                got = await self._call(sink, req.n, req.seed, spend, 0)
            except EngineError as exc:
                if exc.transient:
                    for j in missing:
                        sink.fail(j, str(exc))
                    return
                if exc.status not in (400, 422):
                    raise
                got = set()  # probably "n > 1 not supported"; the single requests tell if not
            if got is None:
                return  # budget used up: the slots stay unfinished
            missing = [j for j in missing if j not in got]
            if not missing:
                self.n_supported = True
                return
            spend.waiting += len(missing)  # the missing samples go out as single requests
        await _all(self._single(sink, j, spend) for j in missing)
        if req.n > 1:
            self.n_supported = False

    async def _single(self, sink: _Sink, sample: int, spend: Spend) -> None:
        seed = None if sink.req.seed is None else sink.req.seed + sample
        try:
            await self._call(sink, 1, seed, spend, sample)
        except EngineError as exc:
            if not exc.transient:
                raise
            sink.fail(sample, str(exc))

    async def _call(self, sink: _Sink, n: int, seed: int | None, spend: Spend, first: int) -> set[int] | None:
        """One HTTP request for `n` choices (the server may return fewer), the first being
        sample `first` of the request: the samples it delivered, or None when the budget
        left nothing to send it with."""
        req = sink.req
        chat = req.messages is not None
        async with self._http.slots():
            grant = spend.take(n, req.max_tokens, sink.prompt_tokens)
            if grant is None:
                return None
            stream = None
            if self.stream:
                stream = Stream(chat, n, first, sink.emit)
                sink.streams.append(stream)
            body = request_body(
                req, self.model, n, seed, grant.max_tokens, stream is not None, self.explicit_sampling
            )
            path = "/chat/completions" if chat else "/completions"
            t0 = time.monotonic()
            error = None
            try:
                reply = await self._http.request(
                    "POST", path, functools.partial(parse_reply, chat=chat, n=n), body, stream
                )
            except EngineError as exc:
                if stream is None or not stream.delivered:
                    raise
                # Its text already reached the listener: keep it rather than retry.
                partial = parse_reply(stream.response(), chat, n)
                reply, error = Reply(partial.choices, None), str(exc)
            finally:
                spend.release(grant)
            streamed = stream is not None and stream.streamed
            if streamed and stream is not None and stream.usage is None and error is None:
                self.stream = False  # no usage in streams (llama-cpp-python): exact counts beat partial text
            # Charged and delivered before the slot is released, so the next request sees the spend.
            done = self._completions(reply, sink, grant, time.monotonic() - t0, spend, error)
            for i, completion in done.items():
                sink.put(first + i, completion, streamed)
            return {first + i for i in done}

    def _completions(
        self,
        reply: Reply,
        sink: _Sink,
        grant: Grant,
        seconds: float,
        spend: Spend,
        error: str | None,
    ) -> dict[int, Completion]:
        """The reply's choices as completions by choice index, their tokens charged."""
        req, choices = sink.req, reply.choices
        logprobs = [parse_logprobs(c.logprobs) if req.logprobs else None for c in choices]
        usage = reply.usage
        prompt_tokens = sink.prompt_tokens
        if usage is None or usage.completion_tokens is None:
            estimated = True
            counts = [
                len(lp) if lp else estimate_tokens(c.text) for lp, c in zip(logprobs, choices, strict=True)
            ]
        else:
            estimated = False
            if usage.prompt_tokens is not None:
                prompt_tokens = sink.prompt_tokens = usage.prompt_tokens
            weights = [len(lp) if lp else len(c.text) for lp, c in zip(logprobs, choices, strict=True)]
            counts = split(usage.completion_tokens, weights)
        spend.charge(prompt_tokens, sum(counts))
        capped = grant.capped_by is not None
        if capped and spend.meter is not None and any(c.finish_reason == "length" for c in choices):
            assert grant.capped_by is not None
            spend.meter.note_stop(grant.capped_by)
        return {
            c.index: Completion(
                text=c.text,
                finish_reason="error" if error else _finish(c.finish_reason, capped),
                prompt_tokens=prompt_tokens,
                completion_tokens=count,
                seconds=seconds,
                logprobs=lp,
                usage_estimated=estimated,
                error=error,
            )
            for c, count, lp in zip(choices, counts, logprobs, strict=True)
        }
