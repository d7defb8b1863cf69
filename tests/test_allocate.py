"""Batch allocation: one total token budget spent where it is needed. Control flow on a
scripted engine (easy questions are confident and agree, hard ones are unsure and scatter),
the CLI's bad input, and a smoke run on the bundled model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakes import ScriptedEngine
from ponder import Budget, Problem
from ponder.allocate import ESCALATED
from ponder.batch import Outcome, athink_many, think_many
from ponder.bench import BenchRun, parse_strategies, read_results, run_bench
from ponder.budget import BudgetError
from ponder.datasets import get_dataset, load_dataset
from ponder.engines.base import GenerationRequest
from ponder.store import TraceStore

AUTO = "auto:signal=mean_logprob,threshold=-0.5,max_n=8"
PADDING = " ".join(["hmm"] * 10)  # a sampled thought: 10 tokens before its answer


class Classroom(ScriptedEngine):
    """Questions containing "easy" get a confident greedy answer ("sure", logprob -0.01) and
    agreeing samples; "hard" ones an unsure greedy answer and samples that scatter. "hard"
    questions listed in `failing` raise when sampled (phase 2 breaks, phase 1 did not)."""

    def __init__(self, failing: Sequence[str] = ()) -> None:
        super().__init__((), logprob=self.confidence)
        self.failing = set(failing)
        self.sampled: list[str] = []  # the question of every sampled (temperature > 0) request

    @staticmethod
    def confidence(text: str) -> float:
        """ "sure" -0.01; "maybe<i>" (hard question i) less sure as i grows; samples -2."""
        if text.startswith("sure"):
            return -0.01
        return -1.0 - int(text[5]) if text.startswith("maybe") and text[5].isdigit() else -2.0

    @staticmethod
    def question(request: GenerationRequest) -> str:
        return str((request.messages or [{}])[-1].get("content", request.prompt or ""))

    def text(self, request: GenerationRequest, sample: int) -> str:
        question = self.question(request)
        easy = "easy" in question
        if request.temperature == 0:
            number = question.split(":")[0][-1] if question.startswith("hard") else ""
            return "sure. Answer: 4" if easy else f"maybe{number}. Answer: 5"
        self._count += 1
        return f"{PADDING} Answer: {4 if easy else self._count % 5}"

    async def generate(self, requests, meter=None, on_completion=None, on_delta=None):  # type: ignore[no-untyped-def]
        for request in requests:
            if request.temperature != 0:
                self.sampled.append(self.question(request))
                if any(name in self.question(request) for name in self.failing):
                    raise RuntimeError("the sampler broke")
        return await super().generate(requests, meter, on_completion, on_delta)


def questions(easy: int, hard: int) -> list[Problem]:
    return [Problem(f"easy question {i}: what is 2 + 2?", id=f"e{i}") for i in range(easy)] + [
        Problem(f"hard question {i}: what is 2 + 2?", id=f"h{i}") for i in range(hard)
    ]


def spent(outcomes: list[Outcome]) -> int:
    return sum(o.share.spent for o in outcomes if o.share is not None)


async def test_easy_questions_take_one_greedy_answer_and_leave_tokens_to_hard_ones() -> None:
    engine = Classroom()
    problems = questions(easy=4, hard=4)
    total = 400
    outcomes = await athink_many(
        problems, strategy=AUTO, total_budget=f"{total}tok", engine=engine, store=False, concurrency=4
    )
    assert [o.id for o in outcomes] == [str(p.id) for p in problems]  # the order given
    easy, hard = outcomes[:4], outcomes[4:]
    for o in easy:
        assert o.share is not None and not o.share.escalated
        assert o.answer is not None and o.answer.answer == "4" and o.share.spent == 3  # "sure. Answer: 4"
        assert o.decision is not None and o.decision["choice"] == "direct"
    assert not any("easy" in q for q in engine.sampled)  # no easy question was ever sampled
    for o in hard:
        assert o.share is not None and o.share.escalated
        assert o.share.granted > total // len(problems)  # more than an even share
        assert o.share.spent > total // len(problems)
        assert o.decision is not None and o.decision["choice"] != "direct"  # phase 1's decision
        assert o.answer is not None and o.answer.usage.completion_tokens == o.share.spent
    # a sample is at most 12 tokens; the scripted engine overshoots by at most one per problem at once
    assert spent(outcomes) <= total + 4 * 12
    assert spent(outcomes) == sum(o.answer.usage.completion_tokens for o in outcomes if o.answer)
    assert {o.strategy for o in outcomes} == {AUTO}


async def test_the_least_confident_escalate_first_and_leftovers_flow_forward() -> None:
    """Waves of one: phase 2 runs the hard questions least confident first (h2 is the least
    sure), each capped at what is left divided by the problems not yet run."""
    engine = Classroom()
    problems = questions(easy=2, hard=3)
    total = 300
    outcomes = await athink_many(
        problems, strategy=AUTO, total_budget=Budget(tokens=total), engine=engine, store=False, concurrency=1
    )
    assert list(dict.fromkeys(q.split(":")[0] for q in engine.sampled)) == [
        "hard question 2",
        "hard question 1",
        "hard question 0",
    ]
    hard = [o for o in reversed(outcomes) if o.share is not None and o.share.escalated]  # in phase-2 order
    assert [o.id for o in hard] == ["h2", "h1", "h0"]
    left = total - 3 * len(problems)  # every greedy answer is 3 tokens
    caps = []
    for i, o in enumerate(hard):  # the oracle: an even share of what is left
        assert o.share is not None
        caps.append(left // (len(hard) - i))
        left -= o.share.spent - 3
    granted = [o.share.granted - phase1_cap(total, problems, o.id) for o in hard if o.share]
    assert granted == caps
    assert caps[0] < caps[1] < caps[2]  # what an early problem leaves flows to later ones
    assert spent(outcomes) <= total + 12


def phase1_cap(total: int, problems: list[Problem], pid: str) -> int:
    """Phase-1 cap of problem `pid` in waves of one when every greedy answer costs 3 tokens."""
    left = total
    for i, p in enumerate(problems):
        cap = left // (len(problems) - i)
        if str(p.id) == pid:
            return cap
        left -= 3
    raise KeyError(pid)


async def test_one_phase_strategies_split_in_waves_with_leftovers_flowing_forward() -> None:
    engine = ScriptedEngine([" ".join(["word"] * 7) + " Answer: 1"])  # 9 tokens a sample
    problems = [Problem(f"q{i}", id=str(i)) for i in range(5)]
    total = 100
    outcomes = await athink_many(
        problems, strategy="direct", total_budget="100tok", engine=engine, store=False, concurrency=2
    )
    caps, left = [], total
    for start in range(0, 5, 2):  # the oracle: waves of two, an even share of what is left
        cap = left // (5 - start)
        caps += [cap] * min(2, 5 - start)
        left -= 9 * min(2, 5 - start)
    assert [o.share.granted for o in outcomes if o.share] == caps == [20, 20, 27, 27, 64]
    assert [o.share.spent for o in outcomes if o.share] == [9] * 5


async def test_a_phase_two_failure_keeps_the_phase_one_answer_and_counts_its_cap() -> None:
    engine = Classroom(failing=["hard question 0"])
    outcomes = await athink_many(
        questions(easy=1, hard=2), strategy=AUTO, total_budget="300tok", engine=engine, store=False
    )
    broken = outcomes[1]
    assert broken.answer is not None and broken.answer.answer == "5"  # phase 1's greedy answer
    assert broken.error is None and broken.share is not None and broken.share.escalated
    assert broken.share.note is not None and "the sampler broke" in broken.share.note
    assert broken.share.spent == broken.share.granted - (300 // 3) + 3  # its phase-2 cap, in full
    assert broken.answer.usage.completion_tokens == broken.share.spent
    assert outcomes[2].answer is not None and outcomes[2].share and outcomes[2].share.escalated


async def test_the_phases_are_traces_of_their_own_linked_by_id(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.sqlite")
    outcomes = await athink_many(
        questions(easy=1, hard=1), strategy=AUTO, total_budget="200tok", engine=Classroom(), store=store
    )
    hard = outcomes[1]
    assert hard.share is not None and hard.answer is not None
    first, second = hard.share.traces
    assert second == first + ESCALATED == hard.answer.trace_id
    one, two = store.get_trace(first), store.get_trace(second)
    assert one is not None and two is not None
    (decision,) = [n for n in one.nodes if n.kind == "decision"]
    assert decision.meta["choice"] != "direct" and "auto:" in one.strategy and "max_n=1" in one.strategy
    assert sum(n.kind == "sample" for n in two.nodes) > 1
    easy = outcomes[0]
    assert easy.share is not None and len(easy.share.traces) == 1


def test_think_many_with_a_per_problem_budget_too_takes_the_stricter() -> None:
    engine = Classroom()
    outcomes = think_many(
        questions(easy=0, hard=2),
        strategy=AUTO,
        total_budget="1000tok",
        budget="30tok",
        engine=engine,
        store=False,
    )
    for o in outcomes:
        assert o.answer is not None and o.share is not None
        assert o.answer.usage.completion_tokens <= 2 * (30 + 12)  # two phases, each capped at 30


@pytest.mark.parametrize("total", ["30s", "$1", "4 samples", "100tok, 30s"])
async def test_a_total_budget_that_is_not_tokens_is_refused(total: str) -> None:
    with pytest.raises(BudgetError, match="tokens only"):
        await athink_many(["q"], strategy="direct", total_budget=total, engine=Classroom(), store=False)


async def test_bench_splits_the_total_per_strategy_and_resumes_with_what_is_left(tmp_path: Path) -> None:
    dataset = get_dataset("reasoning-gym:basic_arithmetic", {"min_digits": 1, "max_digits": 1})
    problems = dataset.load(4, 5)
    run = BenchRun(
        dataset=dataset,
        problems=problems[:2],
        strategies=parse_strategies(f"direct;{AUTO}"),
        out=tmp_path / "out",
        seed=5,
        total_budget=200,
        concurrency=2,
    )
    run.prepare()
    rows, errors = await run_bench(run, Classroom(), store=False)
    assert not errors and all(len(r) == 2 for r in rows.values())
    for spec_rows in rows.values():
        assert sum(r["completion_tokens"] for r in spec_rows) <= 200 + 2 * 12
    run.problems = problems  # two more problems: they share what the first two left
    engine = Classroom()
    rows, _ = await run_bench(run, engine, store=False)
    for spec_rows in rows.values():
        assert len(spec_rows) == 4 and sum(r["completion_tokens"] for r in spec_rows) <= 200 + 4 * 12
    assert len(read_results(run.results_path)) == 8
    header = json.loads((run.out / "run.json").read_text())
    assert header["total_budget"] == 200


@pytest.mark.parametrize(
    ("total", "message"),
    [("banana", "cannot parse budget"), ("30s", "tokens only"), ("0tok", "must be positive")],
)
def test_bench_cli_bad_total_is_one_line_exit_2(total: str, message: str, tmp_path: Path) -> None:
    from ponder.cli import app

    argv = ["bench", "--dataset", "reasoning-gym:basic_arithmetic", "--strategies", "auto", "--size", "2"]
    argv += ["--out", str(tmp_path / "o"), "--total-budget", total]
    result = CliRunner().invoke(app, argv, env={"PONDER_HOME": str(tmp_path)})
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bench_cli_refuses_resuming_with_a_different_total(tmp_path: Path) -> None:
    from ponder.cli import app

    out = tmp_path / "o"
    out.mkdir()
    run = {"dataset": "reasoning-gym:basic_arithmetic", "dataset_config": {}, "budget": {}, "max_tokens": 512}
    (out / "run.json").write_text(json.dumps({**run, "engine": "llamacpp", "total_budget": 1000}))
    argv = ["bench", "--dataset", "reasoning-gym:basic_arithmetic", "--strategies", "auto", "--size", "2"]
    argv += ["--out", str(out), "--total-budget", "2000tok"]
    result = CliRunner().invoke(app, argv, env={"PONDER_HOME": str(tmp_path)})
    assert result.exit_code == 2 and "total_budget" in result.stderr


@pytest.mark.model
def test_the_bundled_model_keeps_to_a_small_total(tmp_path: Path) -> None:
    problems = load_dataset("reasoning-gym:basic_arithmetic", size=4, seed=301)
    total = 600
    outcomes = think_many(
        problems, strategy="auto", total_budget=f"{total}tok", store=tmp_path / "t.sqlite", max_tokens=96
    )
    assert all(o.answer is not None and o.answer.answer is not None for o in outcomes), outcomes
    # the embedded engine overshoots by at most (sequences decoding together - 1) per problem at once
    assert spent(outcomes) <= total + 4 * 16
    assert all(o.share is not None and o.share.spent <= o.share.granted + 16 for o in outcomes)


def test_bench_cli_reports_the_total_and_what_each_strategy_spent(tmp_path: Path) -> None:
    from test_bench import ArithmeticServer, bench_in_process

    out = tmp_path / "o"
    args = ["--dataset", "reasoning-gym:basic_arithmetic", "--strategies", "direct;auto", "--size", "3"]
    with ArithmeticServer() as server:
        argv = [*args, "--out", str(out), "--total-budget", "300tok", *server.args]
        result = bench_in_process(*argv, env={"PONDER_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.stderr
    data = json.loads((out / "summary.json").read_text())
    assert data["total_budget"] == 300
    spent_by = {s["strategy"]: s["completion_tokens_total"] for s in data["strategies"]}
    assert 0 < spent_by["direct"] < spent_by["auto"] <= 300 + 3 * 20  # auto spends what direct leaves
    assert f"total budget 300 tokens per strategy; spent `direct` {spent_by['direct']}" in result.stdout
