"""`ponder serve` against the official `openai` client on loopback, with engines whose
every output and pace the test controls: the wire format, the choices a request makes,
streaming that is provably live, jobs, limits and errors. (Real-model and upstream runs are
in test_server_model.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from fakes import ScriptedEngine
from ponder.budget import Meter
from ponder.engines.base import Completion, GenerationRequest, OnCompletion, OnDelta
from ponder.server.run import PonderServer, server
from ponder.server.service import ServerConfig
from ponder.server.streaming import Narrator, follow
from ponder.store import NodeRecord, TraceStore
from servers import free_port
from test_cli import ponder


@dataclass
class Running:
    base_url: str
    srv: PonderServer
    store: Path

    def client(self, key: str | None = "k", **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=key or "none", max_retries=0, **options)

    def get(self, path: str, **options: Any) -> httpx.Response:
        return httpx.get(self.base_url + path, headers=AUTH, timeout=30, **options)

    @property
    def service(self) -> Any:
        return self.srv.config.app.state.service  # type: ignore[attr-defined]


@contextlib.contextmanager
def running(tmp_path: Path, engine: Any = None, **config: Any) -> Iterator[Running]:
    """The server in a thread on a free loopback port, stopped gracefully at the end."""
    config.setdefault("api_key", "k")
    store = tmp_path / "traces.sqlite"
    port = free_port()
    srv = server(ServerConfig(store=store, **config), "127.0.0.1", port, engine=engine)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    end = time.monotonic() + 120
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < end, "the server did not start"
        time.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{port}", srv, store)
    finally:
        srv.stop()
        thread.join(60)


class PacedEngine(ScriptedEngine):
    """The scripted engine one sample at a time: before each sample after the first it
    waits for the test to `release()` it, so the test decides when thoughts happen."""

    model = "paced"

    def __init__(self, texts: Sequence[str]) -> None:
        super().__init__(texts)
        self.produced: list[float] = []  # when each sample was written (monotonic)
        self._turns = threading.Semaphore(0)

    @property
    def count(self) -> int:
        return self._count

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._turns.release()

    async def generate(
        self,
        requests: Sequence[GenerationRequest],
        meter: Meter | None = None,
        on_completion: OnCompletion | None = None,
        on_delta: OnDelta | None = None,
    ) -> list[list[Completion]]:
        out: list[list[Completion]] = [[] for _ in requests]
        for r, req in enumerate(requests):
            for i in range(req.n):
                while self._count > 0 and not self._turns.acquire(blocking=False):
                    await asyncio.sleep(0.01)
                [[done]] = await super().generate([dataclasses.replace(req, n=1)], meter)
                self.produced.append(time.monotonic())
                if on_completion is not None:
                    on_completion(r, i, done)
                out[r].append(done)
        return out


AUTH = {"Authorization": "Bearer k"}


def ask(text: str = "What is 6 times 7?") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def ponder_of(obj: Any) -> dict[str, Any]:
    return obj.model_extra["ponder"]  # type: ignore[no-any-return]


# -- plain, choices, model names ------------------------------------------------------------


def test_plain_completion_has_standard_fields_usage_and_ponder(tmp_path: Path) -> None:
    engine = ScriptedEngine(["6 * 7 = 42. Answer: 42", "Answer: 41", "It is 42. Answer: 42"])
    with running(tmp_path, engine) as srv:
        reply = srv.client().chat.completions.create(
            model="ponder", messages=ask(), extra_body={"ponder": {"strategy": "self-consistency:n=3"}}
        )
        trace = srv.get(f"/v1/ponder/traces/{ponder_of(reply)['trace_id']}").json()
    assert reply.object == "chat.completion" and reply.model == "ponder"
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason == "stop"
    assert "42" in reply.choices[0].message.content
    meta = ponder_of(reply)
    assert meta["answer"] == "42" and meta["strategy"] == "self-consistency:n=3"
    samples = [n for n in trace["nodes"] if n["kind"] == "sample"]
    assert len(samples) == 3
    assert reply.usage.completion_tokens == sum(n["completion_tokens"] for n in samples)
    shown = len(reply.choices[0].message.content.split())
    assert reply.usage.completion_tokens_details.reasoning_tokens == reply.usage.completion_tokens - shown
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert meta["usd"] == pytest.approx(trace["usage"]["usd"]) and meta["usd"] > 0


def test_system_prompt_and_history_reach_the_model(tmp_path: Path) -> None:
    engine = ScriptedEngine(["Answer: 12"])
    messages = [
        {"role": "system", "content": "You are a terse pirate."},
        {"role": "user", "content": "I have 5 apples."},
        {"role": "assistant", "content": "Arr, five apples."},
        {"role": "user", "content": "I buy 7 more. How many now?"},
    ]
    with running(tmp_path, engine) as srv:
        srv.client().chat.completions.create(model="direct/ponder", messages=messages)  # type: ignore[arg-type]
    sent = engine.calls[0].messages
    assert sent is not None
    assert "You are a terse pirate." in sent[0]["content"] and sent[0]["role"] == "system"
    assert [m["content"] for m in sent[1:3]] == ["I have 5 apples.", "Arr, five apples."]
    assert "I buy 7 more" in sent[-1]["content"] and sent[-1]["role"] == "user"


def test_strategy_in_the_model_name(tmp_path: Path) -> None:
    engine = ScriptedEngine(["Answer: 3"])
    with running(tmp_path, engine) as srv:
        client = srv.client()
        reply = client.chat.completions.create(model="self-consistency:n=2/ponder", messages=ask())
        served = client.chat.completions.create(model="best-of-n:n=2/scripted", messages=ask())
        names = [m.id for m in client.models.list().data]
        schemas = {s["name"]: s["schema"] for s in srv.get("/v1/ponder/strategies").json()["data"]}
    assert (
        ponder_of(reply)["strategy"] == "self-consistency:n=2"
        and reply.model == "self-consistency:n=2/ponder"
    )
    assert engine.calls[0].n == 2
    assert ponder_of(served)["strategy"] == "best-of-n:n=2" and served.model == "best-of-n:n=2/scripted"
    assert {"scripted", "ponder", "self-consistency/ponder", "deepconf/ponder"} <= set(names)
    assert "n" in schemas["self-consistency"]["properties"] and set(schemas) == {
        n.split("/")[0] for n in names[2:]
    }


def test_reasoning_effort_maps_to_a_strategy_and_budget(tmp_path: Path) -> None:
    engine = ScriptedEngine(["Answer: 3"])
    with running(tmp_path, engine) as srv:
        client = srv.client()
        low = client.chat.completions.create(model="ponder", messages=ask(), reasoning_effort="low")
        minimal = client.chat.completions.create(model="ponder", messages=ask(), reasoning_effort="minimal")
        trace = srv.get(f"/v1/ponder/traces/{ponder_of(low)['trace_id']}").json()
    assert ponder_of(low)["strategy"] == "self-consistency:n=4" and engine.calls[0].n == 4
    assert trace["budget"] == {"seconds": 30}
    assert ponder_of(minimal)["strategy"] == "direct"


def test_extra_body_budget_stops_the_think(tmp_path: Path) -> None:
    engine = ScriptedEngine(["Answer: 1", "Answer: 2"])
    with running(tmp_path, engine, price_input=1.0, price_output=2.0) as srv:
        client = srv.client()
        reply = client.chat.completions.create(
            model="ponder",
            messages=ask(),
            extra_body={
                "ponder": {"strategy": "self-consistency:n=6", "budget": {"samples": 2, "seconds": 20}}
            },
        )
        text_budget = client.chat.completions.create(
            model="ponder",
            messages=ask(),
            extra_body={"ponder": {"strategy": "direct", "budget": "5 samples"}},
        )
        trace = srv.get(f"/v1/ponder/traces/{ponder_of(reply)['trace_id']}").json()
    assert ponder_of(reply)["stopped_by"] == "samples"
    assert len([n for n in trace["nodes"] if n["kind"] == "sample"]) == 2
    assert trace["budget"] == {"seconds": 20, "samples": 2}
    assert ponder_of(text_budget)["strategy"] == "direct"


def test_sampling_fields_are_honoured(tmp_path: Path) -> None:
    engine = ScriptedEngine(["The answer is 42. STOP here Answer: 42"])
    with running(tmp_path, engine) as srv:
        client = srv.client()
        reply = client.chat.completions.create(
            model="self-consistency:n=2/ponder",
            messages=ask(),
            temperature=0.3,
            top_p=0.5,
            seed=7,
            max_tokens=33,
            stop=["STOP"],
        )
        n2 = client.chat.completions.create(model="direct/ponder", messages=ask(), n=2, seed=1)
    request = engine.calls[0]
    assert (request.temperature, request.top_p, request.seed, request.max_tokens) == (0.3, 0.5, 7, 33)
    assert (
        reply.choices[0].message.content == "The answer is 42. " and reply.choices[0].finish_reason == "stop"
    )
    assert [c.index for c in n2.choices] == [0, 1] and len(ponder_of(n2)["choices"]) == 2
    assert [c.seed for c in engine.calls[1:]] == [1, 2]


# -- streaming ------------------------------------------------------------------------------


def test_stream_is_live_reasoning_before_the_answer(tmp_path: Path) -> None:
    """Lock-step: the engine writes sample k+1 only after the client has received sample
    k's reasoning chunk, so the stream cannot be a buffer released at the end."""
    engine = PacedEngine(["first try: 41. Answer: 41", "second: 42. Answer: 42", "third: 42. Answer: 42"])
    with running(tmp_path, engine) as srv:
        stream = srv.client().chat.completions.create(
            model="self-consistency:n=3/ponder",
            messages=ask(),
            stream=True,
            stream_options={"include_usage": True},
        )
        events: list[tuple[float, str, str]] = []
        usage = None
        for part in stream:
            if part.usage is not None:
                usage = part.usage
            for c in part.choices:
                reasoning = (c.delta.model_extra or {}).get("reasoning_content")
                if reasoning:
                    events.append((time.monotonic(), "reasoning", reasoning))
                    engine.release()  # only now may the next sample be written
                if c.delta.content:
                    events.append((time.monotonic(), "content", c.delta.content))
    kinds = [k for _, k, _ in events]
    assert kinds[-1] == "content" and kinds.count("content") == 1
    reasoning = [(t, text) for t, k, text in events if k == "reasoning"]
    assert len(reasoning) >= 3 and "first try" in reasoning[0][1]
    # sample k+1 was written after the client held sample k's chunk: the stream is live
    assert reasoning[0][0] < engine.produced[1] and reasoning[1][0] < engine.produced[2]
    assert "42" in events[-1][2]
    assert usage is not None and usage.completion_tokens == 5 + 4 + 4  # words of the three samples
    assert usage.completion_tokens_details.reasoning_tokens == 13 - 4  # all but the chosen sample


def test_client_disconnect_cancels_the_think_and_keeps_its_thoughts(tmp_path: Path) -> None:
    engine = PacedEngine(["thinking hard. Answer: 1"])
    with running(tmp_path, engine) as srv:
        stream = srv.client().chat.completions.create(
            model="self-consistency:n=5/ponder", messages=ask(), stream=True
        )
        for part in stream:
            if part.choices and (part.choices[0].delta.model_extra or {}).get("reasoning_content"):
                break
        stream.close()  # the client leaves while sample 2 waits
        trace_id = None
        end = time.monotonic() + 30
        while time.monotonic() < end:
            traces = srv.get("/v1/ponder/traces").json()["data"]
            if traces and traces[0]["status"] != "running":
                trace_id = traces[0]["id"]
                break
            time.sleep(0.05)
        assert trace_id is not None, "the think was not cancelled"
        trace = srv.get(f"/v1/ponder/traces/{trace_id}").json()
        assert not srv.service.live
    assert trace["status"] == "cancelled"
    assert [n["kind"] for n in trace["nodes"]] == ["root", "sample"]
    assert engine.count == 1


# -- jobs -----------------------------------------------------------------------------------


def _events(srv: Running, job_id: str, last: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    headers = {"Authorization": "Bearer k", **({"Last-Event-ID": last} if last else {})}
    out: list[dict[str, Any]] = []
    with httpx.stream(
        "GET", f"{srv.base_url}/v1/ponder/jobs/{job_id}/events", headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        event: dict[str, Any] = {}
        for line in response.iter_lines():
            if not line:
                if event:
                    out.append(event)
                    event = {}
                    if out[-1]["event"] == "end" or len(out) >= limit:
                        break
                continue
            key, _, value = line.partition(": ")
            if key == "data":
                event["data"] = json.loads(value)
            elif key in ("id", "event"):
                event[key] = value
    return out


def test_jobs_create_poll_events_resume_and_finish(tmp_path: Path) -> None:
    engine = PacedEngine(["a. Answer: 7", "b. Answer: 7", "c. Answer: 8"])
    with running(tmp_path, engine) as srv:
        client = httpx.Client(base_url=srv.base_url, headers=AUTH, timeout=30)
        body = {"model": "self-consistency:n=3/ponder", "messages": ask()}
        created = client.post("/v1/ponder/jobs", json=body)
        assert created.status_code == 202
        job = created.json()
        assert job["object"] == "ponder.job" and job["status"] in ("queued", "running")
        first = _events(srv, job["id"], limit=2)  # root and sample 1
        assert [e["data"]["kind"] for e in first] == ["root", "sample"]
        polled = client.get(f"/v1/ponder/jobs/{job['id']}").json()
        assert polled["status"] == "running" and polled["best"]["answer"] == "7"
        assert polled["usage"]["completion_tokens"] == 3
        engine.release(2)
        resumed = _events(srv, job["id"], last=first[-1]["id"])
        assert [e["event"] for e in resumed][-1] == "end"
        kinds = [e["data"]["kind"] for e in resumed if e["event"] == "node"]
        assert kinds[:2] == ["sample", "sample"] and "root" not in kinds
        assert [int(e["id"]) for e in resumed] == sorted(int(e["id"]) for e in resumed)
        done = resumed[-1]["data"]
        assert done["status"] == "done" and done["result"]["choices"][0]["message"]["content"]
        assert done["result"]["ponder"]["answer"] == "7"
        again = _events(srv, job["id"], last=resumed[-1]["id"])
        assert [e["event"] for e in again] == ["end"]


def test_job_cancel_returns_the_best_so_far(tmp_path: Path) -> None:
    engine = PacedEngine(["x. Answer: 5", "y. Answer: 5", "z. Answer: 6"])
    with running(tmp_path, engine) as srv:
        client = httpx.Client(base_url=srv.base_url, headers=AUTH, timeout=30)
        job = client.post("/v1/ponder/jobs", json={"model": "self-consistency:n=9/ponder", "messages": ask()})
        job_id = job.json()["id"]
        engine.release(1)
        _events(srv, job_id, limit=3)  # root and two samples
        cancelled = client.delete(f"/v1/ponder/jobs/{job_id}").json()
        polled = client.get(f"/v1/ponder/jobs/{job_id}").json()
        missing = client.get("/v1/ponder/jobs/" + "0" * 32)
    assert cancelled["status"] == "cancelled" and cancelled["best"]["answer"] == "5"
    assert cancelled["best"]["votes"] == 2 and cancelled["result"] is None
    assert polled["status"] == "cancelled"
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "job_id"


def test_restart_finished_job_answers_interrupted_job_says_so(tmp_path: Path) -> None:
    """A graceful stop marks the job it cut "interrupted"; a restarted server on the same
    store still answers the finished one."""
    engine = PacedEngine(["m. Answer: 9"])
    with running(tmp_path, engine, grace=1) as srv:
        client = httpx.Client(base_url=srv.base_url, headers=AUTH, timeout=30)
        done_id = client.post("/v1/ponder/jobs", json={"model": "direct/ponder", "messages": ask()}).json()[
            "id"
        ]
        _events(srv, done_id)
        cut_id = client.post(
            "/v1/ponder/jobs", json={"model": "self-consistency:n=4/ponder", "messages": ask()}
        ).json()["id"]
        engine.release(1)  # its first sample; the second waits until the server stops
        _events(srv, cut_id, limit=2)
    with running(tmp_path, PacedEngine(["unused"])) as again:
        client = httpx.Client(base_url=again.base_url, headers=AUTH, timeout=30)
        finished = client.get(f"/v1/ponder/jobs/{done_id}").json()
        cut = client.get(f"/v1/ponder/jobs/{cut_id}").json()
        replay = _events(again, cut_id)
    assert finished["status"] == "done" and finished["result"]["ponder"]["answer"] == "9"
    assert cut["status"] == "interrupted" and cut["best"]["answer"] == "9" and cut["result"] is None
    assert [e["event"] for e in replay] == ["node", "node", "end"]


# -- traces ---------------------------------------------------------------------------------


def test_traces_list_filters_and_tree(tmp_path: Path) -> None:
    engine = ScriptedEngine(["Answer: 4"])
    with running(tmp_path, engine) as srv:
        client = srv.client()
        client.chat.completions.create(model="direct/ponder", messages=ask("What is 2+2?"))
        client.chat.completions.create(model="self-consistency:n=2/ponder", messages=ask("And 3+1?"))
        everything = srv.get("/v1/ponder/traces").json()["data"]
        voted = srv.get("/v1/ponder/traces", params={"strategy": "self-consistency"}).json()["data"]
        found = srv.get("/v1/ponder/traces", params={"text": "2+2", "limit": 1}).json()["data"]
        paged = srv.get("/v1/ponder/traces", params={"offset": 1}).json()["data"]
        bad = srv.get("/v1/ponder/traces", params={"limit": 0})
        tree = srv.get(f"/v1/ponder/traces/{voted[0]['id']}").json()
    assert len(everything) == 2 and "nodes" not in everything[0]
    assert [t["question"] for t in voted] == ["And 3+1?"] and [t["question"] for t in found] == [
        "What is 2+2?"
    ]
    assert [t["id"] for t in paged] == [everything[1]["id"]]
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
    root = tree["nodes"][0]
    assert root["kind"] == "root" and all(n["parent_id"] for n in tree["nodes"][1:])


# -- guards ---------------------------------------------------------------------------------


def test_auth_required_and_constant_time_compared(tmp_path: Path) -> None:
    with running(tmp_path, ScriptedEngine(["Answer: 1"])) as srv:
        with pytest.raises(openai.AuthenticationError) as missing:
            srv.client(key="wrong").chat.completions.create(model="ponder", messages=ask())
        bare = httpx.get(srv.base_url + "/v1/models")
        health = httpx.get(srv.base_url + "/health")
        ok = srv.client().models.list()
    assert missing.value.status_code == 401 and "API key" in missing.value.message
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    assert bare.json()["error"]["code"] == "invalid_api_key"
    assert health.status_code == 200 and ok.data


def test_the_viewer_page_is_open_and_its_data_needs_the_key(tmp_path: Path) -> None:
    with running(tmp_path, ScriptedEngine(["Answer: 1"])) as srv:
        answered = srv.client().chat.completions.create(model="ponder", messages=ask())
        page = httpx.get(srv.base_url + "/")
        script = httpx.get(srv.base_url + "/ui/static/app.js")
        bare = httpx.get(srv.base_url + "/ui/api/traces")
        keyed = httpx.get(srv.base_url + "/ui/api/traces", headers={"Authorization": "Bearer k"})
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert script.status_code == 200 and "Bearer" in script.text
    assert bare.status_code == 401
    trace_id = answered.model_extra["ponder"]["trace_id"]  # type: ignore[index]
    assert keyed.status_code == 200 and [r["id"] for r in keyed.json()["rows"]] == [trace_id]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"ponder": {"budget": {"seconds": -1}}}, "ponder.budget.seconds"),
        ({"ponder": {"budget": {"minutes": 3}}}, "ponder.budget.minutes"),
        ({"ponder": {"budget": "30 parsecs"}}, "ponder.budget"),
        ({"ponder": {"strategy": "galaxy-brain"}}, "ponder.strategy"),
        ({"ponder": {"strategy": "self-consistency:n=zero"}}, "ponder.strategy"),
        ({"model": "nosuch-strategy:n=3/other"}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": {"x": 1}}]}, "messages"),
        ({"temperature": 9}, "temperature"),
        ({"model": "direct/ponder", "temperature": 0.7}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"seed": -1}, "seed"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 9}, "n"),
    ],
)
def test_bad_requests_get_a_400_naming_the_field(tmp_path: Path, body: dict[str, Any], param: str) -> None:
    request = {"model": "ponder", "messages": ask(), **body}
    with running(tmp_path, ScriptedEngine(["Answer: 1"])) as srv:
        reply = httpx.post(
            srv.base_url + "/v1/chat/completions",
            json=request,
            headers=AUTH,
            timeout=30,
        )
    error = reply.json()["error"]
    assert reply.status_code == (404 if param == "model" else 400), reply.text
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_a_dollar_budget_needs_a_price(tmp_path: Path) -> None:
    free = ScriptedEngine(["Answer: 1"])
    free.price = None  # type: ignore[assignment]  # an engine whose price nobody gave
    body = {"model": "ponder", "messages": ask(), "ponder": {"budget": {"usd": 0.01}}}
    with running(tmp_path, free) as srv:
        reply = httpx.post(srv.base_url + "/v1/chat/completions", json=body, headers=AUTH)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "ponder.budget.usd"
    assert "--price-input" in reply.json()["error"]["message"]


def test_malformed_messages_through_the_client(tmp_path: Path) -> None:
    with (
        running(tmp_path, ScriptedEngine(["Answer: 1"])) as srv,
        pytest.raises(openai.BadRequestError) as bad,
    ):
        srv.client().chat.completions.create(
            model="ponder",
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}],
        )
    assert bad.value.status_code == 400 and "last message must be the user's" in bad.value.message


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    with running(tmp_path, ScriptedEngine(["Answer: 1"]), max_body=2000) as srv:
        big = httpx.post(
            srv.base_url + "/v1/chat/completions",
            json={"model": "ponder", "messages": ask("x" * 5000)},
            headers=AUTH,
        )
        garbage = httpx.post(srv.base_url + "/v1/chat/completions", content=b"{nope", headers=AUTH)
    assert big.status_code == 413 and "over 2000 bytes" in big.json()["error"]["message"]
    assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["error"]["message"]


def test_past_the_cap_and_queue_429_with_retry_after(tmp_path: Path) -> None:
    engine = PacedEngine(["Answer: 1"])
    with running(tmp_path, engine, max_concurrent=1, queue=0) as srv:
        client = srv.client()
        stream = client.chat.completions.create(
            model="self-consistency:n=3/ponder", messages=ask(), stream=True
        )
        next(iter(stream))  # the only slot is now taken
        with pytest.raises(openai.RateLimitError) as busy:
            client.chat.completions.create(model="ponder", messages=ask())
        job = httpx.post(
            srv.base_url + "/v1/ponder/jobs",
            json={"model": "ponder", "messages": ask()},
            headers=AUTH,
        )
        engine.release(3)  # two more samples for the stream, one for the request after it
        list(stream)
        after = client.chat.completions.create(model="direct/ponder", messages=ask())
    assert busy.value.status_code == 429 and int(busy.value.response.headers["retry-after"]) >= 1
    assert busy.value.body["code"] == "server_busy"  # type: ignore[index]
    assert job.status_code == 429 and "retry-after" in job.headers
    assert after.choices[0].message.content


def test_non_streamed_client_that_leaves_cancels_its_think(tmp_path: Path) -> None:
    engine = PacedEngine(["thinking. Answer: 2"])
    body = {"model": "self-consistency:n=4/ponder", "messages": ask()}
    with running(tmp_path, engine) as srv:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(srv.base_url + "/v1/chat/completions", json=body, headers=AUTH, timeout=1.0)
        end = time.monotonic() + 30
        while srv.service.live and time.monotonic() < end:
            time.sleep(0.05)
        traces = srv.get("/v1/ponder/traces").json()["data"]
    assert [t["status"] for t in traces] == ["cancelled"] and engine.count == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--port must be between 1 and 65535"),
        (["--price-input", "1"], "give both price_input and price_output"),
        (["--upstream-model", "x"], "need --upstream URL"),
        (["--max-concurrent", "0"], "max_concurrent must be >= 1"),
        (["--log-level", "loud"], "--log-level must be"),
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--budget", "3 parsecs"], "unknown budget unit in '3 parsecs'"),
        (["--max-seconds", "-1"], "budget seconds must be positive"),
    ],
)
def test_serve_bad_flags_one_line_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    done = ponder("serve", *args, home=tmp_path, timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_shutdown_finishes_a_stream_within_grace_and_marks_one_it_cuts(tmp_path: Path) -> None:
    engine = PacedEngine(["a. Answer: 1", "b. Answer: 1"])
    with running(tmp_path, engine, grace=30) as srv:
        stream = srv.client().chat.completions.create(
            model="self-consistency:n=2/ponder", messages=ask(), stream=True
        )
        next(iter(stream))
        srv.srv.stop()  # a shutdown begins mid-think...
        engine.release(1)  # ...and the think finishes within the grace period
        finished = "".join(p.choices[0].delta.content or "" for p in stream if p.choices)
    assert "Answer: 1" in finished

    engine = PacedEngine(["c. Answer: 2"])
    with running(tmp_path, engine, grace=1) as srv:
        stream = srv.client().chat.completions.create(
            model="self-consistency:n=2/ponder", messages=ask(), stream=True
        )
        next(iter(stream))
        trace_id = srv.get("/v1/ponder/traces", params={"status": "running"}).json()["data"][0]["id"]
    with running(tmp_path, engine) as again:
        cut = again.get(f"/v1/ponder/traces/{trace_id}").json()
    assert cut["status"] == "interrupted" and [n["kind"] for n in cut["nodes"]] == ["root", "sample"]


async def test_a_growing_node_streams_only_what_it_added(tmp_path: Path) -> None:
    """Ready for partial text: when the core rewrites a sample as its tokens arrive, a
    stream says each new piece once, then the answer it reached."""
    store = TraceStore(tmp_path / "t.sqlite")
    store.begin_trace("t1", question="q", strategy="direct", model="m", budget={}, created_at=time.time())
    node = NodeRecord("n1", "t1", None, 1, "sample", "Hel", None, None, 5, 1, 0.0, {"index": 0}, time.time())
    store.add_node(node)
    narrator, said, after = Narrator(), [], 0
    for text, answer in (("Hel", None), ("Hello wor", None), ("Hello world. Answer: 42", "42")):
        node.text, node.answer = text, answer
        if text != "Hel":
            store.update_node(node)
        async for nodes in follow(store, "t1", None, after=after):
            after = max(n.version for n in nodes)
            said.append(narrator.say(nodes))
    assert said == ["\n[sample 1]\nHel", "lo wor", "ld. Answer: 42\n=> 42\n"]
    assert "".join(said).count("Hel") == 1
