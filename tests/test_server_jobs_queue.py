"""A queued job is never lost: `ponder serve` writes a job to the store the moment it accepts
it, so a job still waiting for a slot when its server is SIGKILLed is run by the next
server on that store, a cancelled one stays cancelled, and two servers sharing the store
run it once. Real server processes on loopback (scripted engines: a stuck one holds the
only slot; the bundled model in the last test), and the store's queue on a real file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ponder.store import MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION, StoreError, TraceStore
from servers import free_port
from test_server import AUTH, PacedEngine, _events, ask, running

TESTS = Path(__file__).parent
SRC = str(TESTS.parent / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}


class Proc:
    """A server process on loopback; `kill()` is SIGKILL, as a crash would be."""

    def __init__(self, args: list[str], log: Path) -> None:
        """Start it; `ready()` waits until it answers."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {
            **os.environ,
            "PONDER_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([SRC, str(TESTS)]),
            "PONDER_SERVER_API_KEY": "k",
        }
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *[a.replace("PORT", str(self.port)) for a in args]],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def ready(self) -> Proc:
        end = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None or time.monotonic() > end:
                self.kill()
                raise AssertionError(f"the server did not start: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        self.http = httpx.Client(base_url=self.base_url, headers=AUTH, timeout=60)
        return self

    def job(self, question: str, model: str = "direct/ponder", **body: Any) -> str:
        reply = self.http.post("/v1/ponder/jobs", json={"model": model, "messages": ask(question), **body})
        assert reply.status_code == 202, reply.text
        return str(reply.json()["id"])

    def status(self, job_id: str) -> str:
        return str(self.http.get(f"/v1/ponder/jobs/{job_id}").json()["status"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


def scripted(store: Path, log: Path, engine: str) -> Proc:
    """A server with a scripted engine (see scripted_serve.py), not yet ready."""
    return Proc([str(TESTS / "scripted_serve.py"), str(store), "PORT", engine], log)


def _until(check: Any, what: str, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, f"never: {what}"
        time.sleep(0.1)


def holding(store: Path, log: Path) -> tuple[Proc, str]:
    """A server whose only slot a job holds for good (the job's id): later jobs queue."""
    srv = scripted(store, log, "stuck").ready()
    try:
        stuck = srv.job("What is 1 + 1?")
        _until(lambda: srv.status(stuck) == "running", "the first job took the only slot")
    except BaseException:
        srv.kill()
        raise
    return srv, stuck


def test_a_queued_job_survives_sigkill_and_runs_after_restart(tmp_path: Path) -> None:
    store, log = tmp_path / "traces.sqlite", tmp_path / "serve.log"
    first, stuck = holding(store, log)
    try:
        queued = first.job("What is 6 times 7?", seed=5, max_tokens=64)
        dropped = first.job("What is 3 + 3?")
        polled = first.http.get(f"/v1/ponder/jobs/{queued}").json()
        cancelled = first.http.delete(f"/v1/ponder/jobs/{dropped}").json()
    finally:
        first.kill()
    seen = TraceStore(store, readonly=True).get_trace(queued)  # another process reads the store
    assert polled["status"] == "queued" and polled["best"]["answer"] is None
    assert cancelled["status"] == "cancelled"
    assert seen is not None and seen.status == "queued" and seen.job is not None
    assert seen.job["messages"] == ask("What is 6 times 7?") and seen.job["seed"] == 5

    second = scripted(store, log, "answer:6 * 7 = 42. Answer: 42").ready()
    try:
        events = _events(second, queued)  # type: ignore[arg-type]  # a Running-like base_url
        again = second.http.get(f"/v1/ponder/jobs/{dropped}").json()
        never = second.http.get(f"/v1/ponder/traces/{dropped}").json()
        cut = second.http.get(f"/v1/ponder/jobs/{stuck}").json()
        trace = second.http.get(f"/v1/ponder/traces/{queued}").json()
    finally:
        second.kill()
    end = events[-1]["data"]
    assert [e["data"]["kind"] for e in events[:-1] if e["event"] == "node"][:2] == ["root", "sample"]
    assert end["status"] == "done" and end["result"]["ponder"]["answer"] == "42"
    assert end["result"]["choices"][0]["message"]["content"] == "6 * 7 = 42. Answer: 42"
    assert trace["question"] == "What is 6 times 7?" and trace["created_at"] == seen.created_at
    assert again["status"] == "cancelled" and never["nodes"] == []
    assert cut["status"] == "interrupted"


def test_a_graceful_stop_leaves_a_queued_job_for_the_next_start(tmp_path: Path) -> None:
    store, log = tmp_path / "traces.sqlite", tmp_path / "serve.log"
    first, stuck = holding(store, log)
    queued = first.job("What is 2 + 2?")
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(60) in (0, -signal.SIGTERM)
    second = scripted(store, log, "answer:Answer: 4").ready()
    try:
        _until(lambda: second.status(queued) == "done", "the queued job done")
        cut = second.status(stuck)
    finally:
        second.kill()
    assert cut == "interrupted"


def test_two_servers_on_one_store_run_each_queued_job_once(tmp_path: Path) -> None:
    store, log = tmp_path / "traces.sqlite", tmp_path / "serve.log"
    first, _ = holding(store, log)
    try:
        queued = [first.job(f"What is {i} + {i}?") for i in range(4)]
    finally:
        first.kill()
    servers = [scripted(store, log, f"answer:server {name}. Answer: {name}") for name in ("a", "b")]
    try:  # both start at once: both look for the dead server's queued jobs
        for srv in servers:
            srv.ready()
        for job in queued:
            _until(lambda job=job: servers[0].status(job) == "done", f"job {job} done", 120)
        traces = [servers[1].http.get(f"/v1/ponder/traces/{job}").json() for job in queued]
    finally:
        for srv in servers:
            srv.kill()
    for trace in traces:
        assert [n["kind"] for n in trace["nodes"]] == ["root", "sample", "answer"]  # thought once
        assert trace["status"] == "done" and trace["answer"] in ("a", "b")
    created = [t["created_at"] for t in traces]
    assert created == sorted(created)


def test_in_one_server_a_queued_job_says_so_then_streams_as_it_runs(tmp_path: Path) -> None:
    engine = PacedEngine(["a. Answer: 7"])
    with running(tmp_path, engine, max_concurrent=1, queue=1) as srv:
        client = httpx.Client(base_url=srv.base_url, headers=AUTH, timeout=30)
        vote = {"model": "self-consistency:n=2/ponder", "messages": ask()}
        first = client.post("/v1/ponder/jobs", json=vote)
        second = client.post("/v1/ponder/jobs", json={**vote, "model": "direct/ponder"}).json()
        refused = client.post("/v1/ponder/jobs", json=vote)
        polled = client.get(f"/v1/ponder/jobs/{second['id']}").json()
        engine.release(2)  # the first job's second sample, then the second job's only one
        events = _events(srv, second["id"])
        kept = client.get("/v1/ponder/traces").json()["data"]
    assert first.json()["status"] == "running" and second["status"] == polled["status"] == "queued"
    assert refused.status_code == 429 and len(kept) == 2  # a refused job leaves no trace
    assert [e["data"]["kind"] for e in events[:2]] == ["root", "sample"]
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "done"


def test_a_queued_job_that_cannot_be_rebuilt_ends_as_an_error(tmp_path: Path) -> None:
    job = {"messages": ask("q"), "strategy": "no-such-strategy"}
    queued_by_a_dead_process(tmp_path / "traces.sqlite", {"bad": (1.0, job)})
    with running(tmp_path, PacedEngine(["unused"])) as srv:
        trace = srv.get("/v1/ponder/traces/bad").json()
    assert trace["status"] == "error" and "cannot run the queued job here" in trace["error"]


def test_of_many_stores_adopting_at_once_each_queued_job_goes_to_one(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    queued_by_a_dead_process(path, {f"j{i}": (float(i), {}) for i in range(40)})
    go = tmp_path / "go"
    adopt = (
        "import os, sys, time; from ponder.store import TraceStore; s = TraceStore(sys.argv[1])\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.005)\n"
        "print(' '.join(t.id for t in s.adopt_queued()))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", adopt, str(path), str(go)], stdout=subprocess.PIPE, env=ENV)
        for _ in range(4)
    ]
    time.sleep(1)  # let them open the store; then they all adopt at once
    go.touch()
    taken = [p.communicate(timeout=60)[0].decode().split() for p in procs]
    every = [job for share in taken for job in share]
    assert sorted(every) == sorted(f"j{i}" for i in range(40))  # each once, none left behind


@pytest.mark.model
def test_the_bundled_model_answers_a_job_queued_before_sigkill(tmp_path: Path) -> None:
    """`ponder serve` itself, on the embedded model: a long vote holds the only slot, a short
    question waits; SIGKILL; the next `ponder serve` answers the short one."""
    store, log = tmp_path / "traces.sqlite", tmp_path / "serve.log"
    serve = ["-m", "ponder", "serve", "--port", "PORT", "--store", str(store), "--max-concurrent", "1"]
    first = Proc(serve, log).ready()
    try:
        long = first.job("Write a long story about a cat.", "self-consistency:n=64/ponder", max_tokens=256)
        _until(lambda: first.status(long) == "running", "the long job took the only slot", 120)
        short = first.job("What is 2 + 3?", max_tokens=24)
        waiting = first.status(short)
    finally:
        first.kill()
    second = Proc(serve, log).ready()
    try:
        _until(lambda: second.status(short) == "done", "the queued job done", 300)
        job = second.http.get(f"/v1/ponder/jobs/{short}").json()
        trace = second.http.get(f"/v1/ponder/traces/{short}").json()
        cut = second.status(long)
    finally:
        second.kill()
    sample = next(n for n in trace["nodes"] if n["kind"] == "sample")
    assert waiting == "queued" and cut == "interrupted"
    assert job["result"]["choices"][0]["message"]["content"].strip()
    assert job["usage"]["completion_tokens"] == sample["completion_tokens"] > 0


def queued_by_a_dead_process(path: Path, jobs: dict[str, tuple[float, dict[str, Any]]]) -> None:
    """Queue jobs (id: (created_at, job)) from a process that then exits: their owner is gone."""
    script = (
        "import json, sys; from ponder.store import TraceStore; s = TraceStore(sys.argv[1])\n"
        "for t, (at, job) in json.loads(sys.argv[2]).items():\n"
        "    s.begin_trace(t, question='q', strategy='direct', model='m', budget={}, created_at=at, job=job)"
    )
    subprocess.run([sys.executable, "-c", script, str(path), json.dumps(jobs)], check=True, env=ENV)


def _queue(store: TraceStore, trace_id: str, created_at: float) -> None:
    store.begin_trace(
        trace_id,
        question="q",
        strategy="direct",
        model="m",
        budget={},
        created_at=created_at,
        job={"messages": ask("q")},
    )


def test_the_store_queue_dequeues_once_and_continues_the_trace(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.sqlite")
    other = TraceStore(tmp_path / "t.sqlite")  # another connection, as another server has
    _queue(store, "j1", 10.0)
    _queue(store, "j2", 11.0)
    queued = other.get_trace("j1")
    assert queued is not None and queued.status == "queued" and queued.job == {"messages": ask("q")}

    assert store.dequeue("j1", "running") and not other.dequeue("j1", "running")  # one winner
    assert not other.dequeue("j1", "cancelled")  # running now: no longer cancelled as queued
    store.begin_trace("j1", question="q2", strategy="self-consistency", model="m", budget={}, created_at=9.0)
    begun = store.get_trace("j1")
    assert begun is not None and begun.status == "running" and begun.created_at == 10.0
    assert begun.question == "q2" and begun.strategy == "self-consistency"

    assert other.dequeue("j2", "cancelled") and not store.dequeue("j2", "running")
    with pytest.raises(StoreError, match="exists"):  # cancelled: never begun after all
        store.begin_trace("j2", question="q", strategy="direct", model="m", budget={}, created_at=1.0)
    with pytest.raises(StoreError, match="exists"):
        _queue(store, "j1", 12.0)
    cancelled = store.get_trace("j2")
    assert cancelled is not None and cancelled.status == "cancelled" and cancelled.finished_at is not None


def test_a_dequeued_trace_is_begun_in_place_only_by_its_owner_before_any_node(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    store = TraceStore(path)
    _queue(store, "j", 1.0)
    assert store.dequeue("j", "running")
    db = sqlite3.connect(path)
    db.execute("UPDATE traces SET owner = 'elsewhere:1:1' WHERE id = 'j'")  # another server's now
    db.commit()
    with pytest.raises(StoreError, match="exists"):
        store.begin_trace("j", question="q", strategy="direct", model="m", budget={}, created_at=1.0)


def test_only_a_dead_owners_queued_jobs_are_adopted_once_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    queued_by_a_dead_process(path, {"late": (20.0, {"seed": 0}), "early": (10.0, {"seed": 1})})
    first, second = TraceStore(path), TraceStore(path)
    _queue(first, "mine", 5.0)  # queued by this live process: nobody adopts it
    adopted = first.adopt_queued()
    assert [t.id for t in adopted] == ["early", "late"] and adopted[0].job == {"seed": 1}
    assert {t.status for t in adopted} == {"queued"}
    assert second.adopt_queued() == []  # their new owner (this process) is alive

    db = sqlite3.connect(path)
    db.execute("UPDATE traces SET owner = 'elsewhere:1:1' WHERE id = 'early'")  # another host: alive
    db.execute("UPDATE traces SET owner = NULL WHERE id = 'late'")  # nobody's
    db.commit()
    assert [t.id for t in second.adopt_queued()] == ["late"]
    assert first.adopt_queued() == []


def test_a_version_2_store_is_migrated_to_hold_jobs(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1 + MIGRATIONS[0] + "PRAGMA user_version = 2;")
    db.execute(
        "INSERT INTO traces (id, question, strategy, model, budget, status, created_at, problem)"
        " VALUES ('old', 'q?', 'direct', 'm', '{}', 'done', 1.0, '{}')"
    )
    db.commit()
    db.close()

    store = TraceStore(path)
    old = store.get_trace("old")
    assert old is not None and old.status == "done" and old.job is None
    _queue(store, "new", 2.0)
    new = store.get_trace("new")
    assert new is not None and new.status == "queued" and new.job == {"messages": ask("q")}
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
