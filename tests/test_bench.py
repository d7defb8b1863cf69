"""`ponder bench` end to end: scripted answers for exact numbers (a scripted engine through
the API, the same script behind a real loopback HTTP server for the CLI), the real bundled
model for every output file, and a SIGKILL halfway through that a rerun resumes without
redoing work."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from fakes import ScriptedEngine
from ponder.bench import BenchRun, parse_strategies, read_results, run_bench, split_strategies, summary
from ponder.datasets import get_dataset
from ponder.engines.base import GenerationRequest
from servers import Reply, Request, ScriptedServer, chat_response, free_port

ARITH = [
    "--dataset",
    "reasoning-gym:basic_arithmetic",
    "--dataset-config",
    '{"min_digits": 1, "max_digits": 1}',
]
OUTPUTS = ["results.jsonl", "summary.json", "summary.md", "summary.csv", "accuracy_vs_tokens.png"]


def arithmetic_answer(question: str, i: int) -> str:
    """Sample i of a reasoning-gym arithmetic question is right unless crc32(question) + i is
    divisible by 4: every answer is a pure function of (question, sample index), whatever
    order concurrent problems arrive in."""
    expression = re.search(r"Calculate (.*)\.", question)
    value = eval(expression.group(1)) if expression else 0  # the generator's own arithmetic
    wrong = (zlib.crc32(question.encode()) + i) % 4 == 0
    return f"Let me compute. Answer: {int(value) + (1 if wrong else 0)}"


class ArithmeticEngine(ScriptedEngine):
    """`arithmetic_answer` as an engine, for runs through the Python API."""

    def __init__(self) -> None:
        super().__init__(())

    def text(self, request: GenerationRequest, sample: int) -> str:
        question = (request.messages or [{}])[-1].get("content", request.prompt or "")
        return arithmetic_answer(question, sample)


class ArithmeticServer:
    """`arithmetic_answer` behind a real OpenAI-compatible HTTP server on loopback, in a
    thread of this process, so that the CLI in a subprocess gets scripted answers with no
    test hook in the product (`--engine openai --base-url ...`). Each request for n choices
    answers samples 0..n-1; usage counts words; `delay` slows every reply."""

    model = "arith"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.server = ScriptedServer(self._handle)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def args(self) -> list[str]:
        return ["--engine", "openai", "--base-url", self.server.base_url, "--model", self.model]

    def completions(self) -> int:
        return len(self.server.posts("/chat/completions"))

    async def _handle(self, request: Request) -> Reply:
        if request.path.endswith("/models"):
            return Reply(body={"data": [{"id": self.model}]})
        body = request.json()
        if self.delay:
            await asyncio.sleep(self.delay)
        question = body["messages"][-1]["content"]
        texts = [arithmetic_answer(question, i) for i in range(int(body.get("n", 1)))]
        prompt = sum(len(m["content"].split()) for m in body["messages"])
        usage = {"prompt_tokens": prompt, "completion_tokens": sum(len(t.split()) for t in texts)}
        return Reply(body=chat_response(texts, usage=usage))

    def __enter__(self) -> ArithmeticServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def arith_server() -> Iterator[ArithmeticServer]:
    with ArithmeticServer() as server:
        yield server


def expected_direct_correct(questions: list[str]) -> int:
    return sum(zlib.crc32(q.encode()) % 4 != 0 for q in questions)


def bench_cli(
    *args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ponder", "bench", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PONDER_HOME": str(home), **(env or {})},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def bench_in_process(*args: str, env: dict[str, str]) -> Result:
    """The command in this process (no interpreter start-up): for the checks that need no kill."""
    from ponder.cli import app

    return CliRunner().invoke(app, ["bench", *args], env=env)


def test_strategy_lists_split_on_strategy_names() -> None:
    assert split_strategies("direct,self-consistency:n=4,self-consistency:n=16") == [
        "direct",
        "self-consistency:n=4",
        "self-consistency:n=16",
    ]
    assert split_strategies("self-consistency:n=4,temperature=0.5;direct") == [
        "self-consistency:n=4,temperature=0.5",
        "direct",
    ]
    assert split_strategies(["direct", "self-consistency:n=2"]) == ["direct", "self-consistency:n=2"]
    specs = [s.spec() for _, s in parse_strategies("direct,self-consistency:n=8,self-consistency")]
    assert specs == ["direct", "self-consistency"]  # n=8 is the default: one strategy, not two


async def test_run_bench_scripted_counts_and_metrics(tmp_path: Path) -> None:
    dataset = get_dataset("reasoning-gym:basic_arithmetic", {"min_digits": 1, "max_digits": 1})
    problems = dataset.load(6, 3)
    run = BenchRun(
        dataset=dataset,
        problems=problems,
        strategies=parse_strategies("direct,self-consistency:n=4"),
        out=tmp_path / "out",
        seed=3,
        concurrency=3,
    )
    run.prepare()
    engine = ArithmeticEngine()
    rows, errors = await run_bench(run, engine, store=False)
    assert not errors
    assert [len(rows[s]) for s in ("direct", "self-consistency:n=4")] == [6, 6]
    direct = rows["direct"]
    assert sum(r["correct"] for r in direct) == expected_direct_correct([p.question for p in problems])
    for row in rows["self-consistency:n=4"]:
        assert len(row["samples"]) == 4
        # at most one of any 4 consecutive samples is wrong, so the vote is always right
        assert row["correct"] and sum(c for _, c in row["samples"]) >= 2
    data = summary(run, rows)
    sc = data["strategies"][1]
    assert sc["accuracy"] == 1.0 and sc["coverage"] == 1.0 and sc["samples_per_problem"] == 4
    assert sc["pass_at_k"]["4"] == 1.0 and 0.5 <= sc["pass_at_k"]["1"] < 1.0
    assert sc["completion_tokens_per_problem"] > data["strategies"][0]["completion_tokens_per_problem"]
    # a second run over the same out dir has nothing left to do
    calls = len(engine.calls)
    again, _ = await run_bench(run, engine, store=False)
    assert len(engine.calls) == calls and again == rows


def test_truncated_last_line_is_dropped_and_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    good = json.dumps({"id": "a", "strategy": "direct", "seed": 0, "correct": True})
    path.write_text(good + "\n" + '{"id": "b", "strat')
    rows = read_results(path)
    assert list(rows) == [("a", "direct", 0)]
    assert path.read_text() == good + "\n"


def test_bench_cli_scripted_writes_every_output(tmp_path: Path, arith_server: ArithmeticServer) -> None:
    out = tmp_path / "out"
    result = bench_cli(
        *ARITH,
        *arith_server.args,
        "--size",
        "5",
        "--seed",
        "7",
        "--strategies",
        "direct,self-consistency:n=2,self-consistency:n=4",
        "--out",
        str(out),
        home=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 15
    assert set(rows[0]) >= {
        "id",
        "strategy",
        "answer",
        "gold",
        "correct",
        "prompt_tokens",
        "reasoning_tokens",
        "completion_tokens",
        "seconds",
        "usd",
        "trace_id",
    }
    data = json.loads((out / "summary.json").read_text())
    assert [s["strategy"] for s in data["strategies"]] == [
        "direct",
        "self-consistency:n=2",
        "self-consistency:n=4",
    ]
    assert "| direct |" in (out / "summary.md").read_text()
    assert (out / "summary.csv").read_text().startswith("strategy,problems,accuracy")
    assert (out / "accuracy_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"
    assert "direct" in result.stdout
    # traces went to the normal store
    assert (tmp_path / "traces.sqlite").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "gsm9k"], "unknown dataset"),
        (["--dataset", "reasoning-gym:nope"], "unknown reasoning-gym task"),
        (["--strategies", "telepathy"], "unknown strategy"),
        (["--size", "0"], "--size must be at least 1"),
        (["--dataset-config", "{min_digits: 1}"], "not valid JSON"),
        (["--dataset-config", '{"bogus": 1}'], "rejects config"),
        (["--out", "/proc/version/out"], "cannot write to --out"),
        (["--budget", "3 parsecs"], "budget"),
    ],
)
def test_bad_input_is_one_line_exit_2_before_the_engine(
    args: list[str], message: str, tmp_path: Path
) -> None:
    base = {
        "--dataset": "reasoning-gym:basic_arithmetic",
        "--strategies": "direct",
        "--out": str(tmp_path / "o"),
        "--size": "2",
    }
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [x for kv in base.items() for x in kv]
    # a server that is not there: reaching the engine would be exit 1 ("runs failed"), so
    # exit 2 proves the input was checked before any engine was made
    dead = ["--engine", "openai", "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--model", "m"]
    result = bench_in_process(*argv, *dead, env={"PONDER_HOME": str(tmp_path)})
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_different_run_in_the_same_out_dir_is_refused(
    tmp_path: Path, arith_server: ArithmeticServer
) -> None:
    out = tmp_path / "out"
    common = ["--size", "2", "--strategies", "direct", "--out", str(out), *arith_server.args]
    env = {"PONDER_HOME": str(tmp_path)}
    assert bench_in_process(*ARITH, *common, env=env).exit_code == 0
    other = bench_in_process("--dataset", "reasoning-gym:products", *common, env=env)
    assert other.exit_code == 2 and "different run" in other.stderr


def test_sigkill_halfway_then_rerun_resumes_and_matches_an_uninterrupted_run(
    tmp_path: Path, arith_server: ArithmeticServer
) -> None:
    args = [
        *ARITH,
        "--size",
        "12",
        "--seed",
        "5",
        "--strategies",
        "direct,self-consistency:n=3",
        "--concurrency",
        "2",
        *arith_server.args,
    ]
    out = tmp_path / "killed"
    arith_server.delay = 0.15  # slow replies, so that the kill lands halfway
    proc = subprocess.Popen(
        [sys.executable, "-m", "ponder", "bench", *args, "--out", str(out)],
        env={**os.environ, "PONDER_HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    results = out / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.exists() and len(results.read_bytes().splitlines()) >= 6:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    before = read_results(results)
    assert 6 <= len(before) < 24, "the kill should land halfway"
    calls_before = arith_server.completions()  # counted on arrival: those cut off by the kill too

    arith_server.delay = 0.0
    resumed = bench_cli(*args, "--out", str(out), home=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    after = read_results(results)
    assert len(after) == 24
    for key, row in before.items():  # finished rows were not redone
        assert after[key]["trace_id"] == row["trace_id"]
    new_calls = arith_server.completions() - calls_before
    assert new_calls <= 24 - len(before)  # one engine request per (problem, strategy) still to do

    clean = tmp_path / "clean"
    assert bench_cli(*args, "--out", str(clean), home=tmp_path).returncode == 0
    assert _comparable(out / "summary.json") == _comparable(clean / "summary.json")


def _comparable(path: Path) -> dict[str, Any]:
    """summary.json without wall-clock seconds, which differ between any two runs."""
    data = json.loads(path.read_text())
    for s in data["strategies"]:
        s.pop("seconds_per_problem")
    return data


@pytest.mark.model
def test_real_model_small_run_produces_every_output(tmp_path: Path) -> None:
    pytest.importorskip("ponder.engines.llamacpp")
    out = tmp_path / "out"
    result = bench_cli(
        *ARITH,
        "--size",
        "3",
        "--seed",
        "1",
        "--strategies",
        "direct,self-consistency:n=2",
        "--max-tokens",
        "32",
        "--concurrency",
        "3",
        "--out",
        str(out),
        home=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert all(r["model"].startswith("smollm2") and r["completion_tokens"] > 0 for r in rows)
    data = json.loads((out / "summary.json").read_text())
    assert {s["problems"] for s in data["strategies"]} == {3}
