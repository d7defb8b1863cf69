"""`auto`: easy questions at System-1 cost, escalation only where the signals say it pays,
every decision in the trace. Control flow on a scripted engine; a real-model smoke run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fakes import ScriptedEngine, collect
from ponder import Budget, Problem, athink
from ponder.engines.base import GenerationRequest
from ponder.store import NodeRecord
from ponder.strategies import parse_strategy
from ponder.think import Answer
from ponder.verifiers import FunctionVerifier


def by_temperature(greedy: str, samples: list[str]) -> Callable[[GenerationRequest, int], str]:
    """The greedy request gets `greedy`; sampled ones cycle through `samples`."""
    drawn = iter(samples * 10)

    def script(request: GenerationRequest, index: int) -> str:
        return greedy if request.temperature == 0 else next(drawn)

    return script


async def think_auto(engine: ScriptedEngine, spec: str, **options: Any) -> tuple[Answer, list[NodeRecord]]:
    nodes: list[NodeRecord] = []
    answer = await athink(
        "What is 2 + 2?", strategy=spec, engine=engine, store=False, on_node=collect(nodes), **options
    )
    return answer, nodes


async def test_a_confident_greedy_answer_is_not_escalated() -> None:
    engine = ScriptedEngine(by_temperature("2 + 2 = 4.\nAnswer: 4", ["Answer: 5"]), logprob=-0.01)
    answer, nodes = await think_auto(engine, "auto:signal=mean_logprob,threshold=-0.5")
    assert answer.answer == "4"
    assert [n.kind for n in nodes].count("sample") == 1 and len(engine.calls) == 1
    (decision,) = [n for n in nodes if n.kind == "decision"]
    assert decision.meta["choice"] == "direct" and decision.meta["signals"]["mean_logprob"] == pytest.approx(
        -0.01
    )


async def test_an_unsure_answer_escalates_and_the_vote_overrules_it() -> None:
    engine = ScriptedEngine(
        by_temperature("Answer: 5", ["Answer: 4", "Answer: 4", "Answer: 6"]), logprob=-2.0
    )
    answer, nodes = await think_auto(engine, "auto:signal=mean_logprob,threshold=-0.5")
    assert answer.answer == "4"
    (decision,) = [n for n in nodes if n.kind == "decision"]
    assert decision.meta["choice"] == "adaptive-consistency" and "< -0.500" in decision.text
    votes = [n for n in nodes if n.kind == "vote"]
    assert votes and votes[-1].meta["totals"]["5"] == 1  # the greedy answer was the first vote, not redrawn
    samples = [n for n in nodes if n.kind == "sample"]
    assert sum(1 for s in samples if s.answer == "5") == 1


async def test_an_engine_without_logprobs_always_asks_the_vote() -> None:
    class NoLogprobs(ScriptedEngine):
        async def generate(self, requests, meter=None, on_completion=None, on_delta=None):  # type: ignore[no-untyped-def]
            out = await super().generate(requests, meter, on_completion, on_delta)
            for group in out:
                for c in group:
                    c.logprobs = None
            return out

    engine = NoLogprobs(["Answer: 4"])
    answer, nodes = await think_auto(engine, "auto:signal=mean_logprob,threshold=-0.5")
    assert answer.answer == "4"
    (decision,) = [n for n in nodes if n.kind == "decision"]
    assert "no confidence signal" in decision.text
    # unanimous votes settle fast: greedy + one round of two
    assert sum(1 for n in nodes if n.kind == "sample") == 3


async def test_a_budget_cut_mid_ladder_returns_the_best_answer_so_far() -> None:
    engine = ScriptedEngine(by_temperature("Answer: 5", ["Answer: 4", "Answer: 7"]), logprob=-2.0)
    answer, nodes = await think_auto(
        engine, "auto:signal=mean_logprob,threshold=-0.5,max_n=16", budget=Budget(samples=3)
    )
    assert answer.stopped_by == "samples"
    assert answer.answer in ("5", "4")  # a vote over what was drawn
    assert sum(1 for n in nodes if n.kind == "sample") == 3


async def test_a_verifier_decides_and_stops_at_the_first_pass() -> None:
    engine = ScriptedEngine(by_temperature("Answer: 5", ["Answer: 3", "Answer: 4", "Answer: 4"]))
    check = FunctionVerifier(lambda problem, text: text.strip().endswith("4"), name="is-four")
    answer, nodes = await think_auto(engine, "auto", verifier=check)
    assert answer.answer == "4"
    verdicts = [n for n in nodes if n.kind == "verdict"]
    assert [v.meta["passed"] for v in verdicts] == [False, False, True]
    (decision,) = [n for n in nodes if n.kind == "decision"]
    assert decision.meta["choice"] == "best-of-n (verified)"


async def test_a_greedy_answer_that_passes_its_check_is_final() -> None:
    engine = ScriptedEngine(by_temperature("Answer: 4", ["Answer: 3"]))
    check = FunctionVerifier(lambda problem, text: text.strip().endswith("4"), name="is-four")
    answer, _ = await think_auto(engine, "auto", verifier=check)
    assert answer.answer == "4" and len(engine.calls) == 1


def test_auto_spec_round_trips() -> None:
    strategy = parse_strategy("auto:threshold=-0.4,max_n=8")
    assert parse_strategy(strategy.spec()) == strategy


@pytest.mark.model
async def test_auto_on_the_bundled_model_records_its_decision() -> None:
    nodes: list[NodeRecord] = []
    answer = await athink(
        Problem("What is 3 + 4?"),
        strategy="auto",
        store=False,
        on_node=collect(nodes),
        budget="60s",
        max_tokens=96,
    )
    assert answer.answer is not None
    (decision,) = [n for n in nodes if n.kind == "decision"]
    assert decision.meta["signals"]["mean_logprob"] is not None  # the embedded engine gives logprobs
    assert answer.usage.completion_tokens == sum(n.completion_tokens for n in nodes)


async def test_a_vote_whose_answers_scatter_gives_up_and_keeps_the_greedy_answer() -> None:
    engine = ScriptedEngine(
        by_temperature("Answer: 5", [f"Answer: {k}" for k in range(10, 40)]), logprob=-2.0
    )
    answer, nodes = await think_auto(
        engine, "auto:signal=mean_logprob,threshold=-0.5,give_up=5,rule=gain,stop_threshold=0.96"
    )
    assert answer.answer == "5"  # no two samples agreed: the first vote (the greedy answer) stands
    assert sum(1 for n in nodes if n.kind == "sample") == 5
    assert [n for n in nodes if n.kind == "vote"][-1].meta["stop"] == "scattered"


async def test_giving_up_waits_while_two_answers_agree() -> None:
    engine = ScriptedEngine(
        by_temperature("Answer: 5", ["Answer: 7", "Answer: 7", *[f"Answer: {k}" for k in range(10, 40)]]),
        logprob=-2.0,
    )
    _, nodes = await think_auto(engine, "auto:signal=mean_logprob,threshold=-0.5,give_up=3,rule=lead,max_n=6")
    assert sum(1 for n in nodes if n.kind == "sample") == 6  # 7 had two votes: never "scattered"
    assert all(n.meta.get("stop") != "scattered" for n in nodes if n.kind == "vote")
