"""OpenAIEngine against real loopback HTTP servers: a scripted one for faults, and
llama-cpp-python's server with the bundled model for integration."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from ponder.budget import Budget, Meter
from ponder.engines.base import Engine, GenerationRequest, Price
from ponder.engines.openai import EngineError, OpenAIEngine
from ponder.engines.openai.wire import split as _split
from servers import (
    USAGE,
    Drop,
    Hang,
    LlamaCppServer,
    Reply,
    Request,
    ScriptedServer,
    Stream,
    chat_chunks,
    chat_response,
    llama_server_available,
    script,
)

CHAT = GenerationRequest(messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=16)


def engine_for(server: ScriptedServer, **kw: Any) -> OpenAIEngine:
    kw.setdefault("model", "test-model")
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 5.0)
    return OpenAIEngine(server.base_url, **kw)


def ok(req: Request) -> Reply:
    return Reply(body=chat_response(["4"], usage=USAGE))


@pytest.fixture
async def scripted() -> AsyncIterator[Any]:
    """`async with scripted(handler) as server` with engines closed at the end."""
    engines: list[OpenAIEngine] = []

    class Factory:
        def __call__(self, handler: Any) -> ScriptedServer:
            return ScriptedServer(handler)

        def engine(self, server: ScriptedServer, **kw: Any) -> OpenAIEngine:
            e = engine_for(server, **kw)
            engines.append(e)
            return e

    yield Factory()
    for e in engines:
        await e.aclose()


# -- faults ------------------------------------------------------------------------------


async def test_500_twice_then_ok(scripted: Any) -> None:
    async with scripted(script(Reply(500, {"error": "boom"}), Reply(502, "bad gateway"))) as srv:
        [[c]] = await scripted.engine(srv).generate([CHAT])
    assert c.text == "4" and c.finish_reason == "stop"
    assert len(srv.posts("/chat/completions")) == 3


async def test_connection_dropped_mid_response_is_retried(scripted: Any) -> None:
    half = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"choi'
    async with scripted(script(Drop(half), Drop())) as srv:
        [[c]] = await scripted.engine(srv).generate([CHAT])
    assert c.text == "4"
    assert len(srv.posts()) == 3


async def test_connection_always_dropped_is_a_clear_error(scripted: Any) -> None:
    async with scripted(lambda r: Drop(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n{")) as srv:
        with pytest.raises(EngineError, match="failed after 3 attempts") as info:
            await scripted.engine(srv, max_retries=2).generate([CHAT])
    assert info.value.transient
    assert len(srv.posts()) == 3


async def test_hang_past_timeout_is_a_clear_error(scripted: Any) -> None:
    async with scripted(lambda r: Hang()) as srv:
        with pytest.raises(EngineError, match=r"within 0.3s"):
            await scripted.engine(srv, timeout=0.3, max_retries=1).generate([CHAT])
    assert len(srv.posts()) == 2


async def test_meter_deadline_cancels_hanging_requests(scripted: Any) -> None:
    """Requests that would only time out after 60 s come back at the 0.5 s deadline as
    "budget" (a late return would be "error", after the engine's timeout)."""
    async with scripted(lambda r: Hang()) as srv:
        meter = Meter(Budget(seconds=0.5))
        out = await scripted.engine(srv, timeout=60).generate([CHAT, CHAT], meter)
    assert [[c.finish_reason for c in row] for row in out] == [["budget"], ["budget"]]
    assert meter.stopped_by == "seconds"


async def test_deadline_keeps_finished_samples(scripted: Any) -> None:
    """Of four fanned-out samples, the two that finish before the deadline are kept."""
    calls = 0

    async def handler(req: Request) -> Any:
        nonlocal calls
        calls += 1
        if req.json().get("n", 1) > 1:
            return Reply(body=chat_response(["a"], usage=USAGE))
        return Reply(body=chat_response(["b"], usage=USAGE)) if req.json()["seed"] < 3 else Hang()

    async with scripted(handler) as srv:
        meter = Meter(Budget(seconds=0.8))
        req = GenerationRequest(messages=CHAT.messages, n=4, seed=0, temperature=0.7)
        [row] = await scripted.engine(srv, timeout=60).generate([req], meter)
    assert [c.finish_reason for c in row] == ["stop", "stop", "stop", "budget"]
    assert [c.text for c in row[:3]] == ["a", "b", "b"]


# -- streaming ---------------------------------------------------------------------------


async def test_streamed_chat_is_put_back_together(scripted: Any) -> None:
    events = [*chat_chunks(["Two", " plus two", " is 4"], usage=USAGE), "[DONE]"]
    async with scripted(lambda r: Stream(events)) as srv:
        meter = Meter(Budget())
        [[c]] = await scripted.engine(srv).generate([CHAT], meter)
        body = srv.posts()[0].json()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (c.text, c.finish_reason, c.completion_tokens, c.usage_estimated) == (
        "Two plus two is 4",
        "stop",
        3,
        False,
    )
    assert meter.completion_tokens == 3 and meter.prompt_tokens == 12


async def test_streamed_choices_interleave(scripted: Any) -> None:
    a, b = chat_chunks(["x", "y"], index=0), chat_chunks(["p", "q", "r"], index=1)
    events = [
        a[0],
        b[0],
        b[1],
        a[1],
        b[2],
        a[2],
        b[3],
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 5}},
    ]
    async with scripted(lambda r: Stream([*events, "[DONE]"])) as srv:
        [row] = await scripted.engine(srv).generate([GenerationRequest(messages=CHAT.messages, n=2)])
    assert [c.text for c in row] == ["xy", "pqr"]
    assert [c.completion_tokens for c in row] == [2, 3]


async def test_deadline_keeps_what_a_stream_wrote(scripted: Any) -> None:
    """A sample still streaming at the deadline comes back with its partial text (tokens
    estimated and charged), not empty."""
    events = chat_chunks(["The answer", " is 4", " because"], finish_reason=None)
    async with scripted(lambda r: Stream(events, delay=0.05, hang=30)) as srv:
        meter = Meter(Budget(seconds=0.6))
        [[c]] = await scripted.engine(srv, timeout=60).generate([CHAT], meter)
    assert (c.text, c.finish_reason, c.usage_estimated) == ("The answer is 4 because", "budget", True)
    assert c.completion_tokens > 0 and meter.completion_tokens == c.completion_tokens
    assert meter.stopped_by == "seconds"


async def test_a_vote_at_the_deadline_counts_what_streams_wrote(scripted: Any) -> None:
    """Self-consistency over samples that never finish: at the deadline the answer comes
    from the partial texts instead of nothing."""
    from ponder import athink

    events = chat_chunks(["Answer: 4", "\nLet me double-check"], finish_reason=None)
    async with scripted(lambda r: Stream(events, hang=30)) as srv:
        answer = await athink(
            "2+2?",
            strategy="self-consistency:n=3",
            budget="1s",
            engine=scripted.engine(srv, timeout=60),
            store=False,
        )
    assert answer.answer == "4" and answer.stopped_by == "seconds"
    assert answer.usage.completion_tokens > 0


@pytest.mark.parametrize(
    "broken",
    [
        Stream(chat_chunks(["half"], finish_reason=None)),  # closed before the end
        Stream(["{not json"]),
        Stream([{"error": {"message": "overloaded"}}]),
    ],
)
async def test_broken_stream_is_retried(scripted: Any, broken: Stream) -> None:
    whole = Stream([*chat_chunks(["4"], usage=USAGE), "[DONE]"])
    async with scripted(script(broken, whole)) as srv:
        [[c]] = await scripted.engine(srv).generate([CHAT])
    assert (c.text, c.finish_reason) == ("4", "stop") and len(srv.posts()) == 2


async def test_non_streaming_engine_sends_no_stream_fields(scripted: Any) -> None:
    async with scripted(ok) as srv:
        [[c]] = await scripted.engine(srv, stream=False).generate([CHAT])
        body = srv.posts()[0].json()
    assert c.text == "4" and "stream" not in body and "stream_options" not in body


async def test_garbage_json_is_retried_then_ok(scripted: Any) -> None:
    async with scripted(script(Reply(200, "{not json"), Reply(200, "[1, 2]"))) as srv:
        [[c]] = await scripted.engine(srv).generate([CHAT])
    assert c.text == "4"
    assert len(srv.posts()) == 3


async def test_garbage_json_forever_is_a_clear_error(scripted: Any) -> None:
    async with scripted(lambda r: Reply(200, "<html>oops</html>")) as srv:
        with pytest.raises(EngineError, match="malformed JSON"):
            await scripted.engine(srv, max_retries=1).generate([CHAT])


async def test_429_honours_retry_after(scripted: Any) -> None:
    seen: list[float] = []

    def handler(req: Request) -> Any:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "1"})
        return ok(req)

    async with scripted(handler) as srv:
        [[c]] = await scripted.engine(srv, backoff=0.001).generate([CHAT])
    assert c.text == "4"
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.9


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_non_retryable_errors_carry_the_server_message(scripted: Any, status: int) -> None:
    msg = {"error": {"message": f"nope {status}", "type": "invalid_request_error"}}
    async with scripted(lambda r: Reply(status, msg)) as srv:
        with pytest.raises(EngineError, match=f"HTTP {status}: nope {status}") as info:
            await scripted.engine(srv).generate([CHAT])
    assert info.value.status == status and not info.value.transient
    assert len(srv.posts()) == 1


# -- n > 1 -------------------------------------------------------------------------------


async def test_one_choice_for_n4_fans_out_and_remembers(scripted: Any) -> None:
    """llama-cpp-python's server: asked for n=4, silently returns one choice."""
    async with scripted(
        lambda r: Reply(body=chat_response([f"s{r.json().get('seed')}"], usage=USAGE))
    ) as srv:
        engine = scripted.engine(srv)
        req = GenerationRequest(messages=CHAT.messages, n=4, seed=7, temperature=0.8)
        [row] = await engine.generate([req])
        assert [c.text for c in row] == ["s7", "s8", "s9", "s10"]
        bodies = [r.json() for r in srv.posts()]
        assert bodies[0]["n"] == 4 and all("n" not in b for b in bodies[1:])
        assert sorted(b["seed"] for b in bodies[1:]) == [8, 9, 10]
        assert engine.n_supported is False

        srv.requests.clear()
        heard: list[tuple[int, int, str]] = []
        [row] = await engine.generate([req], on_completion=lambda r, i, c: heard.append((r, i, c.text)))
        assert len(row) == 4 and len(srv.posts()) == 4
        assert all("n" not in r.json() for r in srv.posts())
        assert sorted(heard) == [(0, i, c.text) for i, c in enumerate(row)]  # each sample as it came back


async def test_n_rejected_with_400_fans_out(scripted: Any) -> None:
    """llama.cpp's own server rejects n > 1."""

    def handler(req: Request) -> Any:
        if req.json().get("n", 1) > 1:
            return Reply(400, {"error": {"code": 400, "message": "Only one completion choice is allowed"}})
        return ok(req)

    async with scripted(handler) as srv:
        engine = scripted.engine(srv)
        [row] = await engine.generate([GenerationRequest(messages=CHAT.messages, n=4, temperature=0.8)])
    assert [c.text for c in row] == ["4"] * 4
    assert len(srv.posts()) == 5
    assert engine.n_supported is False


async def test_n_supported_uses_one_request_and_splits_usage(scripted: Any) -> None:
    texts = ["a" * 10, "b" * 30, ""]
    async with scripted(
        lambda r: Reply(body=chat_response(texts, usage={"prompt_tokens": 20, "completion_tokens": 11}))
    ) as srv:
        engine = scripted.engine(srv, price=Price(1e6, 2e6))
        meter = Meter()
        [row] = await engine.generate([GenerationRequest(messages=CHAT.messages, n=3)], meter)
    assert len(srv.posts()) == 1 and engine.n_supported is True
    assert [c.completion_tokens for c in row] == [3, 8, 0]
    assert all(c.prompt_tokens == 20 and not c.usage_estimated for c in row)
    assert (meter.prompt_tokens, meter.completion_tokens) == (20, 11)
    assert meter.usd == pytest.approx(20 + 22)


def test_split_sums_exactly() -> None:
    assert _split(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(_split(7, [5, 0, 9, 2])) == 7
    assert _split(5, [0, 0]) == [3, 2]


# -- usage, budgets, requests ------------------------------------------------------------


async def test_missing_usage_is_estimated(scripted: Any) -> None:
    async with scripted(lambda r: Reply(body=chat_response(["The answer is four."]))) as srv:
        meter = Meter()
        [[c]] = await scripted.engine(srv).generate([CHAT], meter)
    assert c.usage_estimated
    assert c.completion_tokens == math.ceil(len("The answer is four.") / 4)
    assert c.prompt_tokens > 0
    assert meter.completion_tokens == c.completion_tokens and meter.prompt_tokens == c.prompt_tokens


async def test_token_budget_caps_max_tokens(scripted: Any) -> None:
    resp = chat_response(["cut"], usage={"prompt_tokens": 5, "completion_tokens": 5}, finish_reason="length")
    async with scripted(lambda r: Reply(body=resp)) as srv:
        meter = Meter(Budget(tokens=5))
        engine = scripted.engine(srv)
        [[c]] = await engine.generate([CHAT], meter)
        assert srv.posts()[0].json()["max_tokens"] == 5
        assert c.finish_reason == "budget"
        # The budget is spent: no further request goes out.
        [[c2]] = await engine.generate([CHAT], meter)
    assert c2.finish_reason == "budget" and len(srv.posts()) == 1


async def test_token_budget_is_shared_by_parallel_samples(scripted: Any) -> None:
    """Non-streamed samples cannot be stopped mid-flight, so parallel ones split the budget
    instead of each being allowed all of it."""

    def handler(req: Request) -> Any:
        m = req.json()["max_tokens"]
        return Reply(body=chat_response(["x"], usage={"prompt_tokens": 5, "completion_tokens": m // 2}))

    async with scripted(handler) as srv:
        meter = Meter(Budget(tokens=40))
        req = GenerationRequest(messages=CHAT.messages, max_tokens=100, n=2, temperature=1.0)
        out = await scripted.engine(srv).generate([req, req], meter)
    caps = [r.json()["max_tokens"] for r in srv.posts()]
    # Two n=2 requests get 10 per choice (40 / 4 samples); each returns one choice of 5
    # tokens, then the two fanned-out samples share the 30 left.
    assert caps[:2] == [10, 10] and sorted(caps[2:]) == [15, 15]
    assert meter.completion_tokens == 5 + 5 + 7 + 7
    assert all(len(row) == 2 for row in out)


async def test_request_body_sampling_params_and_prefill(scripted: Any) -> None:
    async with scripted(ok) as srv:
        req = GenerationRequest(
            messages=[{"role": "user", "content": "hi"}],
            prefill="Step 1:",
            temperature=0.7,
            top_p=0.9,
            top_k=40,
            min_p=0.05,
            stop=["\n\n"],
            seed=3,
            max_tokens=8,
        )
        await scripted.engine(srv).generate([req, GenerationRequest(messages=CHAT.messages)])
    body, plain = (r.json() for r in srv.posts())
    assert body["messages"][-1] == {"role": "assistant", "content": "Step 1:"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert (body["temperature"], body["top_p"], body["top_k"], body["min_p"]) == (0.7, 0.9, 40, 0.05)
    assert (body["stop"], body["seed"], body["max_tokens"], body["model"]) == (["\n\n"], 3, 8, "test-model")
    # Extensions are only sent when used: strict servers reject unknown fields.
    assert not {"top_k", "min_p", "seed", "stop", "n", "continue_final_message", "logprobs"} & plain.keys()


async def test_chat_logprobs_parsed(scripted: Any) -> None:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "4."},
        "finish_reason": "stop",
        "logprobs": {
            "content": [
                {"token": "4", "logprob": -0.1, "top_logprobs": [{"token": "4", "logprob": -0.1}]},
                {"token": ".", "logprob": -0.5, "top_logprobs": [{"token": ".", "logprob": -0.5}]},
            ]
        },
    }
    async with scripted(lambda r: Reply(body={"choices": [choice]})) as srv:
        req = GenerationRequest(messages=CHAT.messages, logprobs=True, top_logprobs=1)
        [[c]] = await scripted.engine(srv).generate([req])
    assert srv.posts()[0].json()["logprobs"] is True and srv.posts()[0].json()["top_logprobs"] == 1
    assert c.logprobs is not None and [t.token for t in c.logprobs] == ["4", "."]
    assert c.logprobs[1].logprob == -0.5 and c.logprobs[0].top == {"4": -0.1}
    assert c.completion_tokens == 2 and c.usage_estimated  # counted from logprobs


async def test_completions_endpoint_prefill_and_logprobs(scripted: Any) -> None:
    body = {
        "choices": [
            {
                "index": 0,
                "text": " 4",
                "finish_reason": "length",
                "logprobs": {
                    "tokens": [" ", "4"],
                    "token_logprobs": [None, -0.2],
                    "top_logprobs": [None, {"4": -0.2, "5": -3.0}],
                },
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    }
    async with scripted(lambda r: Reply(body=body)) as srv:
        req = GenerationRequest(prompt="2+2=", prefill=" so", logprobs=True, top_logprobs=2, max_tokens=2)
        [[c]] = await scripted.engine(srv).generate([req])
    sent = srv.posts("/completions")[0].json()
    assert sent["prompt"] == "2+2= so" and sent["logprobs"] == 2 and "messages" not in sent
    assert c.text == " 4" and c.finish_reason == "length" and c.completion_tokens == 2
    assert c.logprobs is not None and math.isnan(c.logprobs[0].logprob)
    assert c.logprobs[1].top == {"4": -0.2, "5": -3.0}


async def test_model_discovered_from_models_endpoint(scripted: Any) -> None:
    def handler(req: Request) -> Any:
        if req.method == "GET":
            return Reply(body={"object": "list", "data": [{"id": "served-model", "object": "model"}]})
        return ok(req)

    async with scripted(handler) as srv:
        engine = scripted.engine(srv, model=None)
        await engine.generate([CHAT])
    assert engine.model == "served-model"
    assert srv.requests[0].path == "/v1/models" and srv.posts()[0].json()["model"] == "served-model"


async def test_in_flight_requests_are_bounded(scripted: Any) -> None:
    active = peak = 0

    async def handler(req: Request) -> Any:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return ok(req)

    async with scripted(handler) as srv:
        out = await scripted.engine(srv, max_in_flight=2).generate([CHAT] * 6)
    assert len(out) == 6 and peak == 2


async def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch, scripted: Any) -> None:
    async with scripted(ok) as srv:
        monkeypatch.setenv("PONDER_OPENAI_BASE_URL", f"http://127.0.0.1:{srv.port}")  # /v1 added
        monkeypatch.setenv("PONDER_MODEL", "env-model")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        engine = OpenAIEngine()
        try:
            assert isinstance(engine, Engine)
            await engine.generate([CHAT])
        finally:
            await engine.aclose()
    assert engine.base_url.endswith("/v1") and engine.model == "env-model"
    assert srv.posts()[0].headers["authorization"] == "Bearer sk-test"


# -- integration: llama-cpp-python's OpenAI-compatible server ----------------------------


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaCppServer]:
    if not llama_server_available():
        pytest.skip("llama-cpp-python[server] or the bundled SmolLM2 model is not installed")
    with LlamaCppServer() as server:
        yield server


@pytest.mark.model
async def test_llama_cpp_server_chat_n4_with_usage_and_logprobs(llama_server: LlamaCppServer) -> None:
    async with OpenAIEngine(llama_server.base_url, timeout=120, max_retries=1, stream=False) as engine:
        req = GenerationRequest(
            messages=[{"role": "user", "content": "Name a colour."}],
            n=4,
            max_tokens=6,
            temperature=1.0,
            seed=1,
            logprobs=True,
            top_logprobs=2,
        )
        meter = Meter()
        [row] = await engine.generate([req], meter)
        assert engine.model == llama_server.model
        assert engine.n_supported is False  # the server returned one choice for n=4
    assert len(row) == 4
    for c in row:
        assert c.finish_reason in ("stop", "length") and not c.usage_estimated
        assert 0 < c.completion_tokens <= 6 and c.prompt_tokens > 5
        assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
        assert all(t.logprob <= 0 and len(t.top) >= 1 for t in c.logprobs)
    assert meter.completion_tokens == sum(c.completion_tokens for c in row)
    assert meter.prompt_tokens == sum(c.prompt_tokens for c in row)  # four HTTP requests


@pytest.mark.model
async def test_llama_cpp_server_completions_endpoint(llama_server: LlamaCppServer) -> None:
    async with OpenAIEngine(llama_server.base_url, timeout=120, max_retries=1, stream=False) as engine:
        req = GenerationRequest(
            prompt="The capital of France is", max_tokens=4, logprobs=True, top_logprobs=1
        )
        [[c]] = await engine.generate([req])
    assert c.text and not c.usage_estimated and 0 < c.completion_tokens <= 4
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens


@pytest.mark.model
async def test_llama_cpp_server_streams_then_falls_back_for_usage(llama_server: LlamaCppServer) -> None:
    """llama-cpp-python streams but sends no usage: the streamed reply is read whole (its
    tokens counted by its logprobs), and later requests are not streamed, with exact usage."""
    req = GenerationRequest(
        messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=5, logprobs=True, top_logprobs=1
    )
    async with OpenAIEngine(llama_server.base_url, timeout=120, max_retries=1) as engine:
        [[first]] = await engine.generate([req])
        assert engine.stream is False
        [[second]] = await engine.generate([req])
    assert first.text and first.finish_reason in ("stop", "length") and first.usage_estimated
    assert first.logprobs is not None and first.completion_tokens == len(first.logprobs)
    assert second.text and not second.usage_estimated
