"""`stream=true` with `n>1` against a real server on loopback and the official `openai` client:
n thinks interleaved in one stream, every chunk tagged with its choice. The oracle is the
non-streamed request with the same seed: same texts, finish reasons and usage."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from fakes import ScriptedEngine
from ponder.engines.base import EngineError, GenerationRequest
from test_server import AUTH, PacedEngine, Running, ask, running

Gate = Callable[[GenerationRequest], Awaitable[None]]


class SeededEngine(ScriptedEngine):
    """Each sample's text is a function of its request's seed and its index in the request, so
    a think's words depend on its seed only, however the n thinks interleave. `gate(request)`,
    when given, runs before each generation: it may hold a think back or make it fail."""

    def __init__(self, gate: Gate | None = None) -> None:
        super().__init__(["unused"], before=gate)

    def text(self, request: GenerationRequest, sample: int) -> str:
        return f"seed {request.seed} sample {sample} says {request.seed % 7}. Answer: {request.seed % 7}"


@dataclass
class Reassembled:
    """A streamed completion put back together by choice index, as a client does."""

    first: list[int] = field(default_factory=list)  # the choice indices of the first chunk
    roles: dict[int, str] = field(default_factory=dict)
    reasoning: dict[int, str] = field(default_factory=lambda: defaultdict(str))
    content: dict[int, str] = field(default_factory=lambda: defaultdict(str))
    finishes: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    ponder: dict[int, dict[str, Any]] = field(default_factory=dict)
    usage: Any = None
    order: list[int] = field(default_factory=list)  # the choice each chunk was about, in order

    @classmethod
    def of(cls, stream: Any) -> Reassembled:
        out = cls()
        for part in stream:
            if not out.first:
                out.first = [c.index for c in part.choices]
            out.usage = part.usage or out.usage
            for c in part.choices:
                out.order.append(c.index)
                if c.delta.role:
                    out.roles[c.index] = c.delta.role
                out.reasoning[c.index] += (c.delta.model_extra or {}).get("reasoning_content") or ""
                out.content[c.index] += c.delta.content or ""
                if c.finish_reason:
                    out.finishes[c.index].append(c.finish_reason)
                    out.ponder[c.index] = (part.model_extra or {})["ponder"]
        return out


def create(srv: Running, n: int, **extra: Any) -> Any:
    return srv.client().chat.completions.create(
        model="self-consistency:n=2/ponder", messages=ask(), n=n, seed=10, **extra
    )


@pytest.mark.parametrize("n", [2, 3])
def test_n_choices_stream_interleaved_and_match_the_non_streamed_request(tmp_path: Path, n: int) -> None:
    with running(tmp_path, SeededEngine()) as srv:
        streamed = Reassembled.of(create(srv, n, stream=True, stream_options={"include_usage": True}))
        whole = create(srv, n)
        traces = [srv.get(f"/v1/ponder/traces/{p['trace_id']}").json() for p in streamed.ponder.values()]
    indices = list(range(n))
    assert streamed.first == indices and streamed.roles == dict.fromkeys(indices, "assistant")
    assert {i: len(f) for i, f in streamed.finishes.items()} == dict.fromkeys(indices, 1)
    assert [streamed.content[i] for i in indices] == [c.message.content for c in whole.choices]
    assert [streamed.finishes[i][0] for i in indices] == [c.finish_reason for c in whole.choices]
    for i in indices:  # each choice thought with its own seed, and said so in its reasoning
        assert f"seed {10 + i} sample 0" in streamed.reasoning[i]
        assert f"seed {10 + i} sample 1" in streamed.reasoning[i]
        assert f"seed {10 + (i + 1) % n} " not in streamed.reasoning[i]
    assert [p["answer"] for p in streamed.ponder.values()] == [str((10 + i) % 7) for i in indices]
    assert all(t["status"] == "done" for t in traces) and len({t["id"] for t in traces}) == n
    assert streamed.usage is not None and streamed.usage.model_dump() == whole.usage.model_dump()
    assert streamed.usage.completion_tokens == sum(t["usage"]["completion_tokens"] for t in traces)
    assert streamed.usage.prompt_tokens == sum(t["usage"]["prompt_tokens"] for t in traces)
    assert streamed.usage.completion_tokens_details.reasoning_tokens == sum(
        t["usage"]["reasoning_tokens"] for t in traces
    )


def test_the_openai_stream_helper_reassembles_the_choices(tmp_path: Path) -> None:
    with running(tmp_path, SeededEngine()) as srv:
        client = srv.client()
        with client.chat.completions.stream(
            model="direct/ponder", messages=ask(), n=2, seed=3, stream_options={"include_usage": True}
        ) as stream:
            final = stream.get_final_completion()
        whole = client.chat.completions.create(model="direct/ponder", messages=ask(), n=2, seed=3)
    assert [c.index for c in final.choices] == [0, 1]
    assert [c.message.content for c in final.choices] == [c.message.content for c in whole.choices]
    assert [c.finish_reason for c in final.choices] == ["stop", "stop"]
    assert final.usage is not None and final.usage.total_tokens == whole.usage.total_tokens  # type: ignore[union-attr]


def test_n_one_stream_keeps_its_shape(tmp_path: Path) -> None:
    with running(tmp_path, SeededEngine()) as srv:
        streamed = Reassembled.of(create(srv, 1, stream=True, stream_options={"include_usage": True}))
        whole = create(srv, 1)
    assert streamed.first == [0] and set(streamed.order) == {0} and streamed.finishes == {0: ["stop"]}
    assert streamed.content[0] == whole.choices[0].message.content
    assert streamed.usage.model_dump() == whole.usage.model_dump()


@pytest.mark.parametrize("n", [0, 9, -1])
def test_bad_n_streamed_is_a_400_naming_n(tmp_path: Path, n: int) -> None:
    body = {"model": "ponder", "messages": ask(), "n": n, "stream": True}
    with running(tmp_path, SeededEngine()) as srv:
        reply = httpx.post(srv.base_url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "n"
    assert reply.headers["content-type"].startswith("application/json")


def test_a_streamed_n_request_takes_one_slot_like_a_non_streamed_one(tmp_path: Path) -> None:
    engine = PacedEngine(["Answer: 1"])
    with running(tmp_path, engine, max_concurrent=1, queue=0) as srv:
        client = srv.client()
        stream = client.chat.completions.create(
            model="self-consistency:n=2/ponder", messages=ask(), n=2, stream=True
        )
        parts = iter(stream)
        next(parts)  # the only slot is taken by both choices together
        with pytest.raises(openai.RateLimitError) as busy:
            client.chat.completions.create(model="ponder", messages=ask(), n=2, stream=True)
        engine.release(4)  # the other three samples of the two thinks, one for the request after
        rest = Reassembled.of(parts)
        after = client.chat.completions.create(model="direct/ponder", messages=ask())
    assert busy.value.status_code == 429 and srv.service.gate.running == 0
    assert {i: len(f) for i, f in rest.finishes.items()} == {0: 1, 1: 1}
    assert after.choices[0].message.content == "Answer: 1" and engine.count == 5


def test_client_disconnect_cancels_every_choice(tmp_path: Path) -> None:
    engine = PacedEngine(["thinking hard. Answer: 1"])
    with running(tmp_path, engine) as srv:
        stream = create(srv, 3, stream=True)
        for part in stream:
            if any((c.delta.model_extra or {}).get("reasoning_content") for c in part.choices):
                break
        stream.close()  # the client leaves while every other sample waits
        end = time.monotonic() + 30
        while time.monotonic() < end:
            traces = srv.get("/v1/ponder/traces").json()["data"]
            if len(traces) == 3 and all(t["status"] != "running" for t in traces):
                break
            time.sleep(0.05)
        assert not srv.service.live and srv.service.gate.running == 0
    assert [t["status"] for t in traces] == ["cancelled"] * 3
    assert engine.count == 1


def failing(bad: int) -> Gate:
    """The think seeded `bad` fails in the engine once another think is in it; every other
    think waits there until cancelled."""
    waiting = 0

    async def gate(request: GenerationRequest) -> None:
        nonlocal waiting
        if request.seed == bad:
            while waiting < 1:
                await asyncio.sleep(0.01)
            raise EngineError("the upstream fell over")
        waiting += 1
        await asyncio.sleep(3600)
        raise AssertionError("never cancelled")

    return gate


@pytest.mark.parametrize("stream", [True, False])
def test_an_error_in_one_choice_ends_the_request_and_cancels_the_others(tmp_path: Path, stream: bool) -> None:
    with running(tmp_path, SeededEngine(failing(bad=6))) as srv:
        with pytest.raises(openai.APIError) as failed:
            reply = srv.client().chat.completions.create(
                model="direct/ponder", messages=ask(), n=2, seed=5, stream=stream
            )
            list(reply)  # type: ignore[call-overload]  # the error event (a non-streamed reply raised already)
        end = time.monotonic() + 30
        while srv.service.live and time.monotonic() < end:
            time.sleep(0.05)
        traces = srv.get("/v1/ponder/traces").json()["data"]
        after = srv.get("/health").json()
    assert "the model failed: the upstream fell over" in failed.value.message
    assert failed.value.body["type"] == "upstream_error"  # type: ignore[index]
    assert sorted(t["status"] for t in traces) == ["cancelled", "error"]
    assert after["running"] == 0 and not srv.service.live


def held(seed: int, go: threading.Event) -> Gate:
    """The think seeded `seed` waits until `go` is set (at most 20 s: a server streaming in
    index order then fails the test instead of hanging it); the others go at once."""

    async def gate(request: GenerationRequest) -> None:
        end = time.monotonic() + 20
        while request.seed == seed and not go.is_set() and time.monotonic() < end:
            await asyncio.sleep(0.01)

    return gate


def test_a_choice_is_streamed_when_it_has_news_not_in_index_order(tmp_path: Path) -> None:
    """Choice 0 thinks only once the client holds choice 1's whole answer: a stream that
    buffered or sent choices in index order would never get there."""
    go = threading.Event()
    seen: list[tuple[int, str]] = []
    with running(tmp_path, SeededEngine(held(20, go))) as srv:
        stream = srv.client().chat.completions.create(
            model="direct/ponder", messages=ask(), n=2, seed=20, stream=True
        )
        for part in stream:
            for c in part.choices:
                seen += [(c.index, "content")] if c.delta.content else []
                seen += [(c.index, "finish")] if c.finish_reason else []
                if (c.index, c.finish_reason) == (1, "stop"):
                    go.set()
    assert seen == [(1, "content"), (1, "finish"), (0, "content"), (0, "finish")]


@pytest.mark.model
def test_real_model_streams_two_choices(tmp_path: Path) -> None:
    os.environ.setdefault("PONDER_THREADS", "1")
    with running(tmp_path) as srv:
        streamed = Reassembled.of(
            srv.client().chat.completions.create(
                model="self-consistency:n=2/ponder",
                messages=ask("What is 2 + 3?"),
                n=2,
                seed=4,
                max_tokens=24,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        traces = [srv.get(f"/v1/ponder/traces/{streamed.ponder[i]['trace_id']}").json() for i in (0, 1)]
    assert streamed.first == [0, 1] and {i: len(f) for i, f in streamed.finishes.items()} == {0: 1, 1: 1}
    assert all(streamed.content[i] and "[sample 2]" in streamed.reasoning[i] for i in (0, 1))
    assert [t["status"] for t in traces] == ["done", "done"] and traces[0]["id"] != traces[1]["id"]
    assert streamed.usage.completion_tokens == sum(t["usage"]["completion_tokens"] for t in traces) > 0
    assert streamed.usage.prompt_tokens == sum(t["usage"]["prompt_tokens"] for t in traces) > 0
