"""The executor seam without Ray: jobs as plain data (dataset items by reference), traces
recorded in memory and replayed into a real SQLite store, engines as specs, `think_many` on
the local executor, and a core that never imports Ray (checked in a subprocess where
`import ray` fails)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import ScriptedEngine
from ponder import think_many
from ponder.batch import Job, make_job, solve
from ponder.datasets import ItemRef, item_ref, load_dataset, resolve
from ponder.engines.spec import EngineSpec
from ponder.executors import LocalExecutor, Recorder, get_executor
from ponder.store import TraceStore
from ponder.strategies import BestOfN
from ponder.think import athink
from ponder.verifiers.math import MathEquivalence
from servers import free_port
from test_bench import ArithmeticEngine, bench_in_process, expected_direct_correct

ARITH = ("reasoning-gym:basic_arithmetic", {"min_digits": 1, "max_digits": 1})


def test_a_dataset_problem_travels_as_a_reference_and_is_rebuilt_with_its_grader() -> None:
    name, config = ARITH
    problems = load_dataset(name, size=5, seed=7, config=config)
    job = make_job(problems[3], "direct", seed=7, remote=True)
    assert job.problem == ItemRef(name, problems[3].id or "", config, 5, 7)
    assert b"ReasoningGym" not in pickle.dumps(job)  # no dataset object crosses the wire
    again = resolve(pickle.loads(pickle.dumps(job)).problem)
    assert (again.id, again.question, again.gold) == (problems[3].id, problems[3].question, problems[3].gold)
    gold = problems[3].gold
    assert gold is not None
    assert again.meta["grader"].grade(again, gold) and not again.meta["grader"].grade(again, gold + "1")
    fixed = load_dataset("gsm8k", size=3)[2]
    assert resolve(item_ref(fixed) or ItemRef("?", "?")).question == fixed.question
    with pytest.raises(ValueError, match="has no problem 'nope'"):
        resolve(ItemRef("gsm8k", "nope"))
    # the local executor keeps the objects it already has (a verifier object has no spec)
    strategy = BestOfN(n=2, verifier=MathEquivalence(rel_tol=0.1))
    job = make_job(problems[3], strategy)
    assert job.problem is problems[3] and job.strategy is strategy and job.spec == "best-of-n:n=2"


async def test_a_recorded_trace_replays_into_sqlite_as_thought_there(tmp_path: Path) -> None:
    engine = ScriptedEngine(lambda request, i: f"Thinking {i}. Answer: 42")
    recorder = Recorder()
    answer = await athink("What is 6 x 7?", strategy="self-consistency:n=3", engine=engine, store=recorder)
    store = TraceStore(tmp_path / "t.sqlite")
    recorder.replay(store)
    trace = store.get_trace(answer.trace_id)
    assert trace is not None and trace.status == "done" and trace.answer == "42"
    recorded = recorder.get_trace(answer.trace_id)
    assert recorded is not None
    assert [(n.kind, n.text, n.answer) for n in trace.nodes] == [
        (n.kind, n.text, n.answer) for n in recorded.nodes
    ]
    assert sum(n.kind == "sample" for n in trace.nodes) == 3
    assert trace.usage == recorded.usage and trace.problem == recorded.problem
    assert trace.prompts and trace.prompts == recorded.prompts  # the prompts as sent came along
    assert [t.id for t in recorder.list_traces(status="done", strategy="self-consistency")] == [trace.id]
    assert recorder.list_traces(text="not in it") == []


def test_engine_spec_is_json_and_keeps_secrets_out(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = EngineSpec(name="openai", options={"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"})
    assert EngineSpec.model_validate_json(spec.model_dump_json()) == spec
    assert "sk-x" not in spec.label() and "base_url=http://127.0.0.1:9/v1" in spec.label()
    with pytest.raises(ValueError, match="unknown engine 'vllm'"):
        EngineSpec(name="vllm")
    with pytest.raises(ValueError, match="PONDER_TEST_KEY"):
        EngineSpec(name="openai", options={"api_key_env": "PONDER_TEST_KEY"}).build()
    monkeypatch.setenv("PONDER_TEST_KEY", "sk-y")
    options = {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "PONDER_TEST_KEY"}
    assert EngineSpec(name="openai", options=options).build() is not None  # the key was found


def test_think_many_local_grades_in_order_and_writes_every_trace(tmp_path: Path) -> None:
    name, config = ARITH
    problems = load_dataset(name, size=6, seed=2, config=config)
    store = TraceStore(tmp_path / "t.sqlite")
    heard: list[str] = []
    outcomes = think_many(
        problems,
        strategy="direct",
        engine=ArithmeticEngine(),
        store=store,
        executor=LocalExecutor(concurrency=3),
        on_outcome=lambda o: heard.append(o.id),
    )
    assert [o.id for o in outcomes] == [p.id for p in problems]
    assert sorted(heard) == sorted(o.id for o in outcomes)
    assert sum(bool(o.correct) for o in outcomes) == expected_direct_correct([p.question for p in problems])
    assert len(store.list_traces(limit=100)) == 6
    assert all(o.answer and store.get_trace(o.answer.trace_id) for o in outcomes)
    # plain questions: ids by position, no grader, nothing stored with store=False
    plain = think_many(
        ["What is 2 + 2?", "And 3 + 3?"], strategy="direct", engine=ArithmeticEngine(), store=False
    )
    assert [(o.id, o.correct) for o in plain] == [("0", None), ("1", None)]
    with pytest.raises(ValueError, match="unique"):
        think_many(problems[:1] * 2, strategy="direct", engine=ArithmeticEngine(), store=False)


async def test_a_failing_problem_is_an_outcome_with_the_error() -> None:
    def boom(request: object, i: int) -> str:
        raise RuntimeError("engine fell over")

    name, config = ARITH
    problem = load_dataset(name, size=1, config=config)[0]
    outcome = await solve(Job(problem, "direct"), ScriptedEngine(boom), None)
    assert outcome.answer is None and outcome.error == "RuntimeError: engine fell over"


def test_executor_names_and_bad_settings_are_clear() -> None:
    assert isinstance(get_executor("local", concurrency=2), LocalExecutor)
    with pytest.raises(ValueError, match="unknown executor 'spark'"):
        get_executor("spark")
    with pytest.raises(ValueError, match="concurrency"):
        LocalExecutor(0)


BLOCKED = """
import sys
sys.modules["ray"] = None  # `import ray` raises ImportError from here on
import ponder, ponder.batch, ponder.bench, ponder.executors, ponder.executors.ray, ponder.cli
from ponder.executors import get_executor
executor = get_executor("ray")
try:
    executor.start()
except Exception as exc:
    print(type(exc).__name__, exc)
from ponder.cli import main
sys.argv = ["ponder", "bench", "--dataset", "gsm8k", "--strategy", "direct", "--out", sys.argv[1],
            "--executor", "ray"]
main()
"""


def test_the_core_never_imports_ray_and_says_how_to_get_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "PONDER_HOME": str(tmp_path)},
        timeout=120,
    )
    assert done.stdout.strip() == "ExecutorError the ray executor needs Ray: pip install 'ponder[ray]'"
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("pip install 'ponder[ray]'")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_bench_cli_rejects_ray_options_without_ray_executor(tmp_path: Path) -> None:
    env = {"PONDER_HOME": str(tmp_path)}
    base = ["--dataset", "gsm8k", "--strategy", "direct", "--out", str(tmp_path / "o")]
    bad = bench_in_process(*base, "--executor", "spark", env=env)
    assert bad.exit_code == 2 and "unknown executor 'spark'" in bad.output
    local = bench_in_process(*base, "--ray-address", "auto", "--workers", "2", env=env)
    assert local.exit_code == 2 and "--ray-address and --workers only apply to --executor ray" in local.output
    zero = bench_in_process(*base, "--executor", "ray", "--workers", "0", env=env)
    assert zero.exit_code == 2 and "--workers must be at least 1" in zero.output


def test_a_strategy_that_grades_with_the_engine_goes_to_workers_as_typed() -> None:
    from ponder.batch import _canonical
    from ponder.strategies import StrategyError

    assert _canonical({"name": "self-consistency", "n": 8}, EngineSpec()) == "self-consistency"
    assert _canonical("best-of-n:n=2,verifier=judge", EngineSpec()) == "best-of-n:n=2,verifier=judge"
    with pytest.raises(StrategyError, match="nope"):
        _canonical("best-of-n:n=2,verifier=nope", EngineSpec())


def test_a_ray_address_nobody_listens_at_fails_in_seconds(tmp_path: Path) -> None:
    port = free_port()
    args = ["--dataset", "gsm8k", "--strategy", "direct", "--out", str(tmp_path / "o"), "--executor", "ray"]
    result = bench_in_process(*args, "--ray-address", f"127.0.0.1:{port}", env={"PONDER_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in result.output
    bad = bench_in_process(*args, "--ray-address", "nohost", env={"PONDER_HOME": str(tmp_path)})
    assert bad.exit_code == 2 and "expected host:port" in bad.output
