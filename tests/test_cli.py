"""The command line as a user runs it: a real subprocess, the real bundled model, a real
SQLite file."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def ponder(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PONDER_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "ponder", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["think", "   "], "question is empty"),
        (["think", "2+2?", "--budget", "30 parsecs"], "budget"),
        (["think", "2+2?", "--strategy", "telepathy"], "unknown strategy"),
        (["think", "2+2?", "--strategy", "self-consistency:n=0"], "n must be"),
        (["think", "2+2?", "--engine", "quantum"], "unknown engine"),
        (["think", "2+2?", "--format", "weird"], "unknown answer format"),
        (["think", "2+2?", "--store", "/proc/no/such/dir/t.sqlite"], "cannot open trace store"),
        (["think", "2+2?", "--strategy", "direct", "--samples", "4"], "takes no --samples"),
        (["traces", "show", "nope", "--store", "/nonexistent.sqlite"], "no trace store"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = ponder(*args, home=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_trace_id(tmp_path: Path) -> None:
    ponder("traces", "list", home=tmp_path)  # creates the store
    result = ponder("traces", "show", "deadbeef", home=tmp_path)
    assert result.returncode == 2 and "no single trace" in result.stderr


@pytest.mark.model
def test_self_consistency_json_and_trace(tmp_path: Path) -> None:
    result = ponder(
        "think",
        "What is 17 + 25?",
        "--strategy",
        "self-consistency",
        "--samples",
        "8",
        "--json",
        "--max-tokens",
        "96",
        home=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) >= {"answer", "strategy", "trace_id", "stopped_by", "usage"}
    assert out["strategy"].startswith("self-consistency")
    usage = out["usage"]
    assert set(usage) == {
        "prompt_tokens",
        "reasoning_tokens",
        "completion_tokens",
        "total_tokens",
        "seconds",
        "usd",
    }
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 <= usage["reasoning_tokens"] <= usage["completion_tokens"]
    assert usage["usd"] == 0

    shown = ponder("traces", "show", out["trace_id"], "--json", home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    trace = json.loads(shown.stdout)
    kinds = [n["kind"] for n in trace["nodes"]]
    assert kinds.count("sample") == 8 and kinds.count("vote") == 1 and kinds.count("answer") == 1
    samples = [n for n in trace["nodes"] if n["kind"] == "sample"]
    # every sample's tokens are in the usage, and each sample is a real, counted generation
    assert sum(n["completion_tokens"] for n in samples) == usage["completion_tokens"]
    assert all(0 < n["completion_tokens"] <= 96 for n in samples)
    assert trace["status"] == "done" and trace["answer"] == out["answer"]

    listed = ponder("traces", "list", "--json", home=tmp_path)
    assert [t["id"] for t in json.loads(listed.stdout)] == [out["trace_id"]]
    pretty = ponder("traces", "show", out["trace_id"][:8], home=tmp_path)
    assert pretty.returncode == 0 and "vote" in pretty.stdout


@pytest.mark.model
def test_deadline_returns_best_so_far(tmp_path: Path) -> None:
    started = time.monotonic()
    result = ponder(
        "think",
        "What is 2 + 2?",
        "--strategy",
        "self-consistency",
        "--samples",
        "64",
        "--budget",
        "3s",  # room for the first samples to say something on a loaded machine
        "--json",
        home=tmp_path,
    )
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["stopped_by"] == "seconds"
    assert out["answer"]
    assert out["usage"]["seconds"] < 3.5  # the budget holds inside the request
    assert wall < 15  # and the process as a whole does not hang (generous: loaded CI machine)


@pytest.mark.model
def test_same_think_against_an_openai_compatible_server(tmp_path: Path) -> None:
    from servers import LlamaCppServer

    with LlamaCppServer() as server:
        result = ponder(
            "think",
            "What is 17 + 25?",
            "--strategy",
            "self-consistency",
            "--samples",
            "8",
            "--json",
            "--max-tokens",
            "64",
            "--engine",
            "openai",
            "--base-url",
            server.base_url,
            home=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    trace = json.loads(ponder("traces", "show", out["trace_id"], "--json", home=tmp_path).stdout)
    samples = [n for n in trace["nodes"] if n["kind"] == "sample"]
    assert len(samples) == 8  # the server answers one choice per request: ponder fanned out
    assert trace["model"] == server.model
    # the samples' token counts add up to the reported usage (the server's own counts, but
    # for the first reply: it was streamed without usage, so the engine stopped streaming)
    assert sum(n["completion_tokens"] for n in samples) == out["usage"]["completion_tokens"]
    assert out["usage"]["prompt_tokens"] == sum(n["prompt_tokens"] for n in samples)


def test_traces_show_survives_model_text_that_looks_like_markup(tmp_path: Path) -> None:
    from ponder.store import TraceStore
    from ponder.trace import Trace

    store = TraceStore(tmp_path / "traces.sqlite")
    trace = Trace(store=store)
    store.begin_trace(
        trace.id, question="q [bold]?", strategy="direct", model="m", budget={}, created_at=time.time()
    )
    root = trace.add("root", "q")
    trace.add("sample", "x [/] y [red", parent=root, answer="[/]")
    trace.add("sample", "7 * 8 = 56", parent=root, answer="56", greedy=True)
    store.finish_trace(
        trace.id, status="done", answer="[/]", stopped_by=None, usage={}, finished_at=time.time()
    )
    result = ponder("traces", "show", trace.id, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "x [/] y [red" in result.stdout
    assert "sample (greedy) → 56" in result.stdout and result.stdout.count("(greedy)") == 1
    listed = ponder("traces", "list", home=tmp_path)
    assert listed.returncode == 0 and trace.id[:8] in listed.stdout


@pytest.mark.model
def test_sigkill_mid_batch_keeps_the_samples_already_thought(tmp_path: Path) -> None:
    """Samples are written as each one finishes, not when the batch ends."""
    import signal
    import sqlite3

    env = {**os.environ, "PONDER_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ponder", "think", "Explain why the sky is blue, then say what 6 * 7 is.",
         "--samples", "16", "--max-tokens", "400", "--json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    db = tmp_path / "traces.sqlite"
    seen = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db)) as con:
                    seen = con.execute("SELECT COUNT(*) FROM nodes WHERE kind = 'sample'").fetchone()[0]
            if seen >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the think finished before two samples were seen: nothing to kill"
        assert seen >= 2, "no sample was persisted while the batch was still running"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    with contextlib.closing(sqlite3.connect(db)) as con:
        status = con.execute("SELECT status FROM traces").fetchall()
        samples = con.execute("SELECT text, completion_tokens FROM nodes WHERE kind = 'sample'").fetchall()
    assert status == [("running",)]  # killed: never finished
    assert 2 <= len(samples) < 16
    assert all(text and tokens > 0 for text, tokens in samples)


def test_unreachable_server_is_one_line_and_the_trace_says_error(tmp_path: Path) -> None:
    from servers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    result = ponder("think", "2+2?", "-n", "2", "--engine", "openai", "--base-url", url, "--model", "m",
                    "--json", home=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "the openai engine failed" in result.stderr and "Traceback" not in result.stderr
    traces = json.loads(ponder("traces", "list", "--json", home=tmp_path).stdout)
    assert [t["status"] for t in traces] == ["error"]


def test_bench_against_an_unreachable_server_reports_and_exits_1(tmp_path: Path) -> None:
    from servers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    args = ["--engine", "openai", "--base-url", url, "--model", "m", "--out", str(tmp_path / "out")]
    result = ponder("bench", "--dataset", "gsm8k", "--size", "1", "-s", "direct", *args, home=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "runs failed" in result.stderr and "Traceback" not in result.stderr
