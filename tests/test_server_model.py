"""`ponder serve` with real parts: the bundled model embedded, the same model behind
llama-cpp-python's OpenAI-compatible server as the upstream, and `ponder serve` as a real
subprocess killed with SIGKILL and stopped with SIGTERM mid-think."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from servers import LlamaCppServer, free_port
from test_server import AUTH, Running, ask, ponder_of, running

pytestmark = pytest.mark.model
SRC = str(Path(__file__).parent.parent / "src")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    os.environ.setdefault("PONDER_THREADS", "1")
    with running(tmp_path_factory.mktemp("embedded")) as srv:
        yield srv


def test_real_model_plain_completion(embedded: Running) -> None:
    reply = embedded.client().chat.completions.create(
        model="direct/ponder", messages=ask("What is 2 + 3?"), max_tokens=48
    )
    trace = embedded.get(f"/v1/ponder/traces/{ponder_of(reply)['trace_id']}").json()
    sample = next(n for n in trace["nodes"] if n["kind"] == "sample")
    assert reply.choices[0].message.content and reply.model == "direct/ponder"
    assert reply.usage.completion_tokens == sample["completion_tokens"] > 0
    assert reply.usage.prompt_tokens == sample["prompt_tokens"] > 0
    assert trace["status"] == "done" and trace["model"] == embedded.service.served


def test_real_model_stream_is_live(embedded: Running) -> None:
    """Refine thinks in sequence (answer, critique, revision): the client holds the first
    thought before the server has written the last one (one clock: same host)."""
    stream = embedded.client().chat.completions.create(
        model="refine:max_rounds=1/ponder",
        messages=ask("What is 12 + 30?"),
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals: list[tuple[float, str]] = []
    usage = None
    trace_id = None
    for part in stream:
        usage = part.usage or usage
        for c in part.choices:
            extra = c.delta.model_extra or {}
            if extra.get("reasoning_content"):
                arrivals.append((time.time(), "reasoning"))
            if c.delta.content:
                arrivals.append((time.time(), "content"))
        trace_id = (part.model_extra or {}).get("ponder", {}).get("trace_id") or trace_id
    assert trace_id is not None and usage is not None and usage.completion_tokens > 0
    trace = embedded.get(f"/v1/ponder/traces/{trace_id}").json()
    thoughts = [n for n in trace["nodes"] if n["kind"] not in ("root", "answer")]
    kinds = [k for _, k in arrivals]
    assert len(thoughts) >= 2 and kinds[0] == "reasoning" and kinds[-1] == "content"
    assert kinds.count("reasoning") >= 2
    assert arrivals[0][0] < thoughts[-1]["created_at"], "the first thought arrived only after the last"


def test_real_model_sees_system_prompt_and_history(embedded: Running) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Answer with one number."},
        {"role": "user", "content": "Remember the number 4."},
        {"role": "assistant", "content": "I will remember 4."},
        {"role": "user", "content": "What is that number plus 1?"},
    ]
    reply = embedded.client().chat.completions.create(model="direct/ponder", messages=messages, max_tokens=32)
    trace = embedded.get(f"/v1/ponder/traces/{ponder_of(reply)['trace_id']}").json()
    assert trace["problem"]["system"] == "Answer with one number."
    assert [m["content"] for m in trace["problem"]["history"]] == [
        "Remember the number 4.",
        "I will remember 4.",
    ]
    assert trace["question"] == "What is that number plus 1?" and reply.choices[0].message.content


def test_a_prompt_longer_than_the_context_is_a_400(embedded: Running) -> None:
    client = embedded.client()
    with pytest.raises(openai.BadRequestError) as plain:
        client.chat.completions.create(model="direct/ponder", messages=ask("word " * 9000))
    with pytest.raises(openai.APIError) as streamed:
        list(client.chat.completions.create(model="direct/ponder", messages=ask("word " * 9000), stream=True))
    assert plain.value.code == "context_length_exceeded" and "context holds 8192" in plain.value.message
    assert "context holds 8192" in streamed.value.message


def test_in_front_of_an_upstream_that_ignores_n(tmp_path: Path) -> None:
    """llama-cpp-python's server returns one choice whatever `n` asks: self-consistency
    still gets its n samples, fanned out as single requests."""
    with LlamaCppServer(n_threads=1) as upstream, running(tmp_path, upstream=upstream.base_url) as srv:
        reply = srv.client().chat.completions.create(
            model="self-consistency:n=3/ponder", messages=ask("What is 3 + 4?"), max_tokens=32
        )
        trace = srv.get(f"/v1/ponder/traces/{ponder_of(reply)['trace_id']}").json()
        engine = srv.service.engine
        models = [m.id for m in srv.client().models.list().data]
    samples = [n for n in trace["nodes"] if n["kind"] == "sample"]
    assert len(samples) == 3 and all(n["completion_tokens"] > 0 for n in samples)
    assert engine.n_supported is False and upstream.model in models
    assert reply.usage.completion_tokens == sum(n["completion_tokens"] for n in samples)


# -- a real `ponder serve` process -----------------------------------------------------------


class Served:
    def __init__(self, store: Path, log: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PONDER_THREADS": "1", "PYTHONPATH": SRC, "PONDER_SERVER_API_KEY": "k"}
        cmd = [sys.executable, "-m", "ponder", "serve", "--port", str(self.port), "--store", str(store)]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--grace", "1"], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        end = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None and time.monotonic() < end, log.read_text()[-2000:]
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        self.http = httpx.Client(base_url=self.base_url, headers=AUTH, timeout=60)

    def job(self, model: str, question: str, max_tokens: int) -> str:
        body = {"model": model, "messages": ask(question), "max_tokens": max_tokens}
        reply = self.http.post("/v1/ponder/jobs", json=body)
        assert reply.status_code == 202, reply.text
        return str(reply.json()["id"])

    def wait(self, job_id: str, until: str = "done", samples: int = 0) -> dict[str, Any]:
        end = time.monotonic() + 300
        while time.monotonic() < end:
            job = self.http.get(f"/v1/ponder/jobs/{job_id}").json()
            trace = self.http.get(f"/v1/ponder/traces/{job_id}").json()
            if job["status"] == until and sum(n["kind"] == "sample" for n in trace["nodes"]) >= samples:
                return job  # type: ignore[no-any-return]
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} never reached {until}")


def test_restart_after_sigkill_and_sigterm(tmp_path: Path) -> None:
    store, log = tmp_path / "traces.sqlite", tmp_path / "serve.log"
    first = Served(store, log)
    done_id = first.job("direct/ponder", "What is 1 + 1?", 16)
    first.wait(done_id)
    killed_id = first.job("self-consistency:n=64/ponder", "Write a long story about a cat.", 256)
    first.wait(killed_id, "running")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(30)

    second = Served(store, log)
    finished = second.http.get(f"/v1/ponder/jobs/{done_id}").json()
    killed = second.http.get(f"/v1/ponder/jobs/{killed_id}").json()
    stopped_id = second.job("self-consistency:n=64/ponder", "Write a long story about a dog.", 256)
    second.wait(stopped_id, "running")
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal when done

    third = Served(store, log)
    stopped = third.http.get(f"/v1/ponder/jobs/{stopped_id}").json()
    third.proc.send_signal(signal.SIGTERM)
    third.proc.wait(60)
    assert finished["status"] == "done" and finished["result"]["choices"][0]["message"]["content"]
    assert killed["status"] == "interrupted" and killed["result"] is None
    assert killed["best"]["of"] >= 1 or killed["best"]["answer"] is None
    assert stopped["status"] == "interrupted" and stopped["usage"]["completion_tokens"] > 0
    assert '"path": "/v1/ponder/jobs"' in log.read_text() and "Write a long story" not in log.read_text()
