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
from typing import Any

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


def ponder_bytes(*args: str | bytes, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI with raw argv bytes (a shell passes `$'\\xff\\xfe'` as they are), with no
    engine settings inherited from the environment (no server URL, key or price)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PONDER_", "OPENAI_"))}
    env.update(PONDER_HOME=str(home), PONDER_THREADS="1")
    argv = [
        os.fsencode(sys.executable),
        b"-m",
        b"ponder",
        *(a if isinstance(a, bytes) else a.encode() for a in args),
    ]
    done = subprocess.run(argv, capture_output=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    return subprocess.CompletedProcess(done.args, done.returncode, out, err)


def damaged_store(path: Path) -> str:
    """A real store with one trace, then the page holding the traces table overwritten with
    garbage (as a failing disk or a half-copied file leaves it); returns the trace id."""
    import sqlite3

    from ponder.store import TraceStore
    from ponder.trace import Trace

    store = TraceStore(path)
    trace = Trace(store=store)
    store.begin_trace(trace.id, question="q", strategy="direct", model="m", budget={}, created_at=time.time())
    trace.add("root", "q")
    store.finish_trace(
        trace.id, status="done", answer="4", stopped_by=None, usage={}, finished_at=time.time()
    )
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        page = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'traces'").fetchone()[0]
    with path.open("r+b") as fh:
        fh.seek((page - 1) * page_size)
        fh.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    return trace.id


# (argv, "{tmp}" for the test's files; exit code; words the one line on stderr must hold)
OPENAI = ["--engine", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]  # nothing listens
BAD_INPUTS: list[tuple[list[str | bytes], int, str]] = [
    (["think", "   "], 2, "question is empty"),
    (["think", b"\xff\xfe 2+2"], 2, "question is not valid UTF-8"),
    (["think", "2+2?", "--system", b"be \xff terse"], 2, "--system is not valid UTF-8"),
    (["think"], 2, "give a QUESTION"),
    (["think", "2+2?", "--budget", "30 parsecs"], 2, "budget"),
    (["think", "2+2?", "--budget", "$abc"], 2, "budget"),
    (["think", "2+2?", "--strategy", "telepathy"], 2, "unknown strategy"),
    (["think", "2+2?", "--engine", "quantum"], 2, "unknown engine"),
    (["think", "2+2?", "--format", "weird"], 2, "unknown answer format"),
    (["think", "2+2?", "--strategy", "self-consistency:n=0"], 2, "n must be"),
    (["think", "2+2?", "--strategy", "self-consistency:bogus=1"], 2, "no parameter 'bogus'"),
    (["think", "2+2?", *OPENAI, "--strategy", "self-consistency:temperature=-1"], 2, "temperature"),
    (["think", "2+2?", *OPENAI, "--strategy", "self-consistency:temperature=1e9"], 2, "temperature"),
    (["think", "2+2?", *OPENAI, "--strategy", "self-consistency:temperature=nan"], 2, "temperature"),
    (["think", "2+2?", *OPENAI, "--strategy", "self-consistency:top_p=nan"], 2, "top_p"),
    (["think", "2+2?", *OPENAI, "-n", "2"], 1, "the openai engine failed"),
    (["think", "2+2?", "--store", "/proc/no/such/dir/t.sqlite"], 2, "cannot open trace store"),
    (["think", "2+2?", "--strategy", "direct", "--samples", "4"], 2, "takes no --samples"),
    (["think", "2+2?", "--samples", "many"], 2, "'--samples'"),
    (["think", "2+2?", "--max-tokens", "0"], 2, "--max-tokens must be at least 1"),
    (["think", "2+2?", "--engine", "openai"], 2, "needs a server"),
    (["think", "2+2?", "--engine", "openai", "--base-url", "ftp://x"], 2, "http:// or https://"),
    (["think", "2+2?", *OPENAI, "--model-path", "m.gguf"], 2, "--model-path only applies"),
    (["think", "2+2?", "--price-input", "3"], 2, "give both --price-input and --price-output"),
    (["think", "2+2?", "--api-key-env", "HOME"], 2, "--api-key-env only applies to --engine openai"),
    (["think", "2+2?", *OPENAI, "--price-input", "nan"], 2, "--price-input"),
    (["think", "2+2?", *OPENAI, "--price-output", "-1"], 2, "--price-output"),
    (["think", "2+2?", *OPENAI, "--api-key-env", "NO_SUCH_VAR_X"], 2, "NO_SUCH_VAR_X"),
    (["think", "2+2?", *OPENAI, "--budget", "$0.01"], 2, "dollar budget needs the price"),
    (["think", "--messages", "{tmp}/missing.json"], 2, "cannot read --messages"),
    (["think", "--messages", "{tmp}/not-json.json"], 2, "not valid JSON"),
    (["think", "--messages", "-"], 2, "--messages 'stdin' is not valid JSON"),  # stdin is empty
    (["think", "--messages", "{tmp}/latin1.json"], 2, "not UTF-8"),
    (["think", "--messages", "{tmp}/object.json"], 2, "must hold a JSON list"),
    (["think", "--messages", "{tmp}/empty.json"], 2, "messages is empty"),
    (["think", "--messages", "{tmp}/bad-role.json"], 2, "role must be one of"),
    (["think", "--messages", "{tmp}/no-content.json"], 2, "content must be text"),
    (["think", "--messages", "{tmp}/ends-with-assistant.json"], 2, "last message must be the user's"),
    (["traces", "show", "nope", "--store", "/nonexistent.sqlite"], 2, "no trace store"),
    (["traces", "show", "deadbeef", "--store", "{tmp}/traces.sqlite"], 2, "no single trace matches"),
    (["traces", "show", "a" * 100_000, "--store", "{tmp}/traces.sqlite"], 2, "(100,000 characters)"),
    (["traces", "show", b"\xff\xfe", "--store", "{tmp}/traces.sqlite"], 2, "not valid UTF-8"),
    (["traces", "list", "--store", "{tmp}/damaged.sqlite"], 2, "malformed"),
    (["think", "2+2?", *OPENAI, "--store", "{tmp}/damaged.sqlite"], 2, "malformed"),
    (["traces", "show", "{damaged_id}", "--store", "{tmp}/damaged.sqlite"], 2, "malformed"),
    (["traces", "list", "--limit", "0", "--store", "{tmp}/traces.sqlite"], 2, "--limit"),
    (["verify", "{tmp}/cand.py", "--tests", "{tmp}/test_cand.py", "--timeout", "nan"], 2, "--timeout"),
    (["verify", "{tmp}/cand.py", "--tests", "{tmp}/test_cand.py", "--timeout", "inf"], 2, "--timeout"),
    (["verify", "{tmp}/cand.py", "--tests", "{tmp}/test_cand.py", "--timeout", "1e19"], 2, "--timeout"),
    (["verify", "{tmp}/cand.py", "--tests", "{tmp}/test_cand.py", "--timeout", "-1"], 2, "--timeout"),
    (["bench", "--dataset", "reasoning-gym:basic_arithmetic", "-s", "direct", "--out", "{tmp}/b",
      "--size", "99999999999"], 2, "at most 10,000 problems"),
    (["bench", "--dataset", "gsm8k", "-s", "direct", "--out", "{tmp}/b", "--size", "99999999999"], 2,
     "gsm8k has 100 problems"),
    (["bench", "--dataset", "gsm8k", "-s", "direct", "--out", "{tmp}/b", "--engine", "openai"], 2,
     "needs a server"),
    (["frobnicate"], 2, "No such command"),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The files the bad inputs point at: chat files, a healthy and a damaged store, a
    candidate for `verify`."""
    from ponder.store import TraceStore

    tmp = tmp_path_factory.mktemp("bad")
    TraceStore(tmp / "traces.sqlite").close()
    chats = {
        "not-json.json": "[{role: user}]",
        "object.json": json.dumps({"role": "user", "content": "hi"}),
        "empty.json": "[]",
        "bad-role.json": json.dumps([{"role": "wizard", "content": "hi"}]),
        "no-content.json": json.dumps([{"role": "user"}]),
        "ends-with-assistant.json": json.dumps(
            [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
        ),
    }
    for name, text in chats.items():
        (tmp / name).write_text(text)
    (tmp / "latin1.json").write_bytes('[{"role": "user", "content": "café"}]'.encode("latin-1"))
    (tmp / "cand.py").write_text("def f():\n    return 1\n")
    (tmp / "test_cand.py").write_text("from candidate import f\n\n\ndef test_f():\n    assert f() == 1\n")
    return {"tmp": str(tmp), "damaged_id": damaged_store(tmp / "damaged.sqlite")[:8]}


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    args: list[str | bytes], code: int, message: str, bad_world: dict[str, str], tmp_path: Path
) -> None:
    argv = [a.format(**bad_world) if isinstance(a, str) and "{" in a else a for a in args]
    result = ponder_bytes(*argv, home=tmp_path)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert len(lines[0]) < 400  # a 100,000-character argument does not come back whole


def test_bench_size_far_beyond_the_dataset_fails_at_once_without_growing(tmp_path: Path) -> None:
    """The size is checked before anything is generated: the process stays small."""
    script = (
        "import resource, sys\n"
        "from ponder.cli import main\n"
        "sys.argv = ['ponder', 'bench', '--dataset', 'reasoning-gym:basic_arithmetic', '-s', 'direct',"
        f" '--out', {str(tmp_path / 'b')!r}, '--size', '99999999999']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n"
        "    print(exc.code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PONDER_HOME": str(tmp_path)})  # fmt: skip
    code, peak_kib = done.stdout.split()
    assert code == "2" and "at most 10,000" in done.stderr
    # imports only (numpy, reasoning-gym, the server's and viewer's modules): ~150-550 MB; it
    # grew by ~70 MB/s without bound before
    assert int(peak_kib) < 1_000_000


def test_unknown_trace_id(tmp_path: Path) -> None:
    ponder("traces", "list", home=tmp_path)  # creates the store
    result = ponder("traces", "show", "deadbeef", home=tmp_path)
    assert result.returncode == 2 and "no single trace" in result.stderr


def think_eight_samples(home: Path, max_tokens: str, *engine: str) -> dict[str, Any]:
    """`ponder think` by self-consistency over 8 samples, as its JSON reply."""
    result = ponder(
        "think",
        "What is 17 + 25?",
        "--strategy",
        "self-consistency",
        "--samples",
        "8",
        "--json",
        "--max-tokens",
        max_tokens,
        *engine,
        home=home,
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


@pytest.mark.model
def test_self_consistency_json_and_trace(tmp_path: Path) -> None:
    out = think_eight_samples(tmp_path, "96")
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
        out = think_eight_samples(tmp_path, "64", "--engine", "openai", "--base-url", server.base_url)
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
         "-s", "self-consistency", "--samples", "16", "--max-tokens", "400", "--json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    db = tmp_path / "traces.sqlite"
    seen = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db)) as con:
                    seen = con.execute(  # finished samples (a sample's node grows from its first token)
                        "SELECT COUNT(*) FROM nodes WHERE kind = 'sample' AND completion_tokens > 0"
                    ).fetchone()[0]
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
    assert status == [("running",)]  # killed: never finished (readers see it as interrupted)
    finished = [text for text, tokens in samples if tokens > 0]
    assert 2 <= len(finished) < 16
    assert all(text for text, _ in samples)  # the ones cut mid-sample keep what they wrote


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


# -- chat input, output on a pipe, verdicts ------------------------------------------------


async def test_system_prompt_and_chat_file_reach_the_engine(tmp_path: Path) -> None:
    """What the CLI's options build is what the engine is sent: the system prompt first
    (ponder's answer instruction after it), the history, then the question."""
    from fakes import ScriptedEngine
    from ponder.cli.think import problem_from_options
    from ponder.think import athink

    chat = tmp_path / "chat.json"
    history = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    chat.write_text(json.dumps([{"role": "system", "content": "Be a pirate."}, *history]))
    problem = problem_from_options("And 3+3?", "Be terse.", chat, "number", None)
    engine = ScriptedEngine(["Arr. Answer: 6"])
    answer = await athink(problem, strategy="direct", engine=engine, store=False)
    sent = engine.calls[0].messages
    assert sent is not None and answer.answer == "6"
    assert sent[0]["role"] == "system" and sent[0]["content"].startswith("Be terse.\n\nBe a pirate.")
    assert sent[1:3] == history
    assert sent[-1]["role"] == "user" and "And 3+3?" in sent[-1]["content"]
    alone = problem_from_options("2+2?", "Be terse.", None, "auto", None)
    assert alone.system == "Be terse." and alone.history == []


@pytest.mark.model
def test_system_prompt_and_messages_reach_the_real_model(tmp_path: Path) -> None:
    """Through the real CLI and model: a system prompt costs its tokens in the prompt, and a
    chat file answers its last user turn."""
    common = ["-s", "direct", "--max-tokens", "8", "--json"]
    plain = json.loads(ponder("think", "What is 5 + 5?", *common, home=tmp_path).stdout)
    system = "You are a careful calculator. Reply with the final number only, nothing else at all."
    told = ponder("think", "What is 5 + 5?", "--system", system, *common, home=tmp_path)
    assert told.returncode == 0, told.stderr
    extra = json.loads(told.stdout)["usage"]["prompt_tokens"] - plain["usage"]["prompt_tokens"]
    assert extra >= len(system.split())  # every word of it reached the model's prompt

    chat = tmp_path / "chat.json"
    chat.write_text(
        json.dumps([{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}])
    )
    result = ponder("think", "--messages", str(chat), "What is 3 + 3?", *common, home=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]  # the history was sent too
    trace = json.loads(ponder("traces", "show", out["trace_id"], "--json", home=tmp_path).stdout)
    assert trace["question"] == "What is 3 + 3?"


def test_long_lines_on_a_pipe_are_not_wrapped() -> None:
    """Model text on a pipe is written as is: a 300-character line stays one line."""
    line = "x = [" + ", ".join(str(i) for i in range(80)) + "]"
    script = f"from ponder.cli.think import write_text; write_text({line!r}); write_text('y = 1', bold=True)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout == f"{line}\ny = 1\n" and len(line) > 300


@pytest.mark.model
def test_code_written_to_a_file_is_what_the_model_wrote(tmp_path: Path) -> None:
    """`ponder think ... --format code > out.py` with a long response: stdout holds the
    response and the code exactly, with no line broken at 80 columns."""
    question = (
        "Write a Python function describe(items) that returns one long f-string naming every item, "
        "its index, its type and its length, all on a single line."
    )
    args = ["think", question, "-s", "direct", "--format", "code", "--show-response", "--max-tokens", "160"]
    result = ponder(*args, home=tmp_path)
    assert result.returncode == 0, result.stderr
    trace_id = result.stderr.rsplit("trace ", 1)[1].split()[0]
    trace = json.loads(ponder("traces", "show", trace_id, "--json", home=tmp_path).stdout)
    response = next(n["text"] for n in trace["nodes"] if n["kind"] == "answer")
    assert result.stdout == f"{response}\n{trace['answer']}\n"
    assert max(len(line) for line in result.stdout.splitlines()) > 80  # a line a wrap would have cut


async def test_the_chosen_answers_verdict_is_found_in_the_trace(tmp_path: Path) -> None:
    """The output reports the verdict on the answer it prints, not on another candidate."""
    from fakes import ScriptedEngine
    from ponder.cli.think import Verdicts, verdict_summary
    from ponder.problem import Problem
    from ponder.think import athink
    from ponder.verifiers import parse_verifier_spec

    tests = tmp_path / "test_add.py"
    tests.write_text("from candidate import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    bad = "```python\ndef add(a, b):\n    return a - b\n```"
    problem = Problem("Write add(a, b).", format="code")
    for script, passed in (([bad, good], True), ([bad, bad], False)):
        verdicts = Verdicts()
        await athink(
            problem,
            strategy="best-of-n:n=2",
            engine=ScriptedEngine(script),
            verifier=parse_verifier_spec(f"tests:{tests}"),
            store=False,
            on_node=verdicts,
        )
        ok, line = verdict_summary(verdicts.of_answer())
        assert ok is passed
        want = "tests passed" if passed else "tests failed (score 0.00): FAILED test_add"
        assert line.startswith(want)
    ok, line = verdict_summary(None)
    assert not ok and line.startswith("not verified")


@pytest.mark.model
def test_a_failed_verifier_is_reported_not_hidden(tmp_path: Path) -> None:
    tests = tmp_path / "test_never.py"
    tests.write_text("def test_never():\n    assert False, 'this test cannot pass'\n")
    args = ["think", "Write a Python function double(x).", "-s", "best-of-n:n=2", "--format", "code",
            "--verify", f"tests:{tests}", "--max-tokens", "64"]  # fmt: skip
    human = ponder(*args, home=tmp_path)
    assert human.returncode == 0, human.stderr
    assert "✗ tests failed (score 0.00)" in human.stderr and "test_never" in human.stderr
    assert "tests failed" not in human.stdout  # stdout stays the code alone
    out = json.loads(ponder(*args, "--json", home=tmp_path).stdout)
    assert out["verdict"]["passed"] is False and out["verdict"]["verifier"] == "tests"


def test_api_key_comes_from_the_variable_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_bench import ArithmeticServer

    monkeypatch.setenv("MY_TEAM_KEY", "sk-test-123")
    with ArithmeticServer() as server:
        args = ["-s", "direct", *server.args, "--api-key-env", "MY_TEAM_KEY", "--json"]
        result = ponder("think", "Calculate 2 + 3.", *args, home=tmp_path)
        posts = server.server.posts("/chat/completions")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"] == "5"
    assert posts and all(p.headers["authorization"] == "Bearer sk-test-123" for p in posts)


def test_prices_reach_the_engine_and_the_usage(tmp_path: Path) -> None:
    """--price-input / --price-output are the engine's price: usd is tokens times price."""
    from test_bench import ArithmeticServer

    with ArithmeticServer() as server:
        result = ponder("think", "Calculate 2 + 3.", "-s", "direct", *server.args, "--price-input", "1000000",
                        "--price-output", "2000000", "--json", home=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    usage = json.loads(result.stdout)["usage"]
    assert usage["completion_tokens"] > 0
    assert usage["usd"] == pytest.approx(usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0)


@pytest.mark.model
def test_demo_compares_strategies_on_seeded_questions(tmp_path: Path) -> None:
    result = ponder("demo", "--size", "2", "--strategies", "direct,cot", "--max-tokens", "48", home=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "direct" in out and "cot" in out and "accuracy" in out and "tokens / question" in out
    assert out.count("✓") + out.count("✗") == 4  # two questions, two strategies, each graded
    from ponder.store import TraceStore

    assert len(TraceStore(tmp_path / "traces.sqlite").list_traces()) == 4  # every answer has its trace
