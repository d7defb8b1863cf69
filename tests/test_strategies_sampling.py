"""The sampling strategies: cot, best-of-n, refine, budget-forcing, adaptive-consistency,
deepconf. Control flow on scripted engines (the branches a small model will not exercise
on demand); the real bundled model at the end (marked `model`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from fakes import ScriptedEngine, collect
from ponder import Budget, athink
from ponder.budget import Meter
from ponder.engines.base import (
    Completion,
    Engine,
    FinishReason,
    GenerationRequest,
    OnCompletion,
    Price,
    TokenLogprob,
)
from ponder.extract import extract_answer
from ponder.problem import Problem
from ponder.stopping import beta_settled, expected_gain, leader_holds
from ponder.store import NodeRecord
from ponder.strategies import REGISTRY, parse_strategy
from ponder.strategies.adaptive_consistency import AdaptiveConsistency
from ponder.strategies.best_of_n import BestOfN
from ponder.strategies.budget_forcing import BudgetForcing
from ponder.strategies.deepconf import DeepConf, lowest_group_confidence, percentile, token_confidences
from ponder.strategies.refine import Refine
from ponder.think import Answer
from ponder.verifiers.base import Verdict


class AnswerVerifier:
    """Scores a response by its extracted answer; passes at score 1."""

    name = "answer-check"

    def __init__(self, scores: dict[str, float], gold: str = "4") -> None:
        self.scores = scores
        self.gold = gold
        self.seen: list[str] = []

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        self.seen.append(candidate)
        answer = extract_answer(candidate) or ""
        score = self.scores.get(answer, 0.0)
        return Verdict(
            score,
            score >= 1.0,
            "" if score >= 1.0 else f"test_sum failed: expected {self.gold}, got {answer}",
        )


async def run(
    strategy: object, engine: object, question: str = "q?", **options: object
) -> tuple[Answer, list[NodeRecord]]:
    nodes: list[NodeRecord] = []
    answer = await athink(
        question, strategy=strategy, engine=engine, store=False, on_node=collect(nodes), **options
    )  # type: ignore[arg-type]
    return answer, nodes


def kids(nodes: list[NodeRecord], parent: NodeRecord, kind: str | None = None) -> list[NodeRecord]:
    return [n for n in nodes if n.parent_id == parent.id and (kind is None or n.kind == kind)]


# --- cot -------------------------------------------------------------------------------------


async def test_cot_samples_one_chain_at_its_temperature() -> None:
    engine = ScriptedEngine(["First 2 + 2 = 4. So the total is 4."])
    answer, nodes = await run("cot:temperature=0.5", engine)
    assert answer.answer == "4"
    assert [r.temperature for r in engine.calls] == [0.5] and engine.calls[0].n == 1
    assert [n.kind for n in nodes] == ["root", "sample", "answer"]


# --- best-of-n -------------------------------------------------------------------------------


async def test_best_of_n_picks_the_best_score_ties_to_first() -> None:
    engine = ScriptedEngine(["Answer: 3", "Answer: 5", "Answer: 4", "Answer: 6", "Answer: 4"])
    verifier = AnswerVerifier({"3": 0.2, "5": 0.9, "4": 0.9, "6": 0.1})
    answer, nodes = await run(BestOfN(n=5), engine, verifier=verifier)
    assert answer.answer == "5" and answer.score == pytest.approx(0.9)  # 5 and 4 tie; 5 came first
    assert len(verifier.seen) == 5 and sum(n.kind == "verdict" for n in nodes) == 5
    answer_node = nodes[-1]
    assert next(n for n in nodes if n.id == answer_node.parent_id).answer == "5"


async def test_best_of_n_weighted_vote_sums_scores_per_answer() -> None:
    texts = ["Answer: 7", "Answer: 8", "Answer: 7", "Answer: 7"]
    verifier = AnswerVerifier({"7": 0.4, "8": 0.9})
    best, _ = await run(BestOfN(n=4), ScriptedEngine(texts), verifier=verifier)
    assert best.answer == "8"
    weighted, nodes = await run("best-of-n:n=4,weighted", ScriptedEngine(texts), verifier=verifier)
    assert weighted.answer == "7"  # 3 x 0.4 = 1.2 > 0.9
    vote = next(n for n in nodes if n.kind == "vote")
    assert vote.meta["totals"] == pytest.approx({"7": 1.2, "8": 0.9})


async def test_best_of_n_without_verifier_scores_by_mean_logprob_and_says_so() -> None:
    engine = ScriptedEngine(
        ["maybe Answer: 1", "I am sure Answer: 2", "hmm Answer: 3"],
        logprob=lambda text: -0.05 if "sure" in text else -2.0,  # "sure" samples are confident
    )
    answer, nodes = await run(BestOfN(n=3), engine)
    assert answer.answer == "2"
    assert engine.calls[0].logprobs
    assert any(n.kind == "note" and "mean token probability" in n.text for n in nodes)


async def test_best_of_n_of_refine_nests_each_refinement_under_a_sample() -> None:
    # each refine: draft 3 (fails) -> revision 4 (passes)
    engine = ScriptedEngine(["Answer: 3", "Answer: 4"])
    verifier = AnswerVerifier({"3": 0.0, "4": 1.0})
    answer, nodes = await run(BestOfN(n=2, of=Refine(max_rounds=2)), engine, verifier=verifier)
    assert answer.answer == "4" and answer.score == 1.0
    root = nodes[0]
    outer = kids(nodes, root, "sample")
    assert len(outer) == 2 and all(n.meta["strategy"] == "refine:max_rounds=2" for n in outer)
    for sample in outer:
        (draft,) = kids(nodes, sample, "sample")
        (verdict,) = kids(nodes, draft, "verdict")
        (revision,) = kids(nodes, verdict, "revision")
        assert [v.meta["passed"] for v in kids(nodes, revision, "verdict")] == [True]
        assert kids(nodes, sample, "verdict")  # best-of-n's own score of the refined answer
    # the two inner runs sampled with different seeds
    assert len({r.seed for r in engine.calls if r.messages and len(r.messages) == 2}) == 2


# --- refine ----------------------------------------------------------------------------------


async def test_refine_stops_when_the_verifier_passes_and_feeds_back_the_failure() -> None:
    engine = ScriptedEngine(["def f(): return 3  Answer: 3", "def f(): return 4  Answer: 4", "never"])
    verifier = AnswerVerifier({"3": 0.0, "4": 1.0})
    answer, nodes = await run(Refine(max_rounds=5), engine, verifier=verifier)
    assert answer.answer == "4" and answer.score == 1.0
    assert len(engine.calls) == 2  # draft + one revision, then the tests passed
    revision_prompt = engine.calls[1].messages
    assert revision_prompt is not None
    assert revision_prompt[-2] == {"role": "assistant", "content": "def f(): return 3  Answer: 3"}
    assert "test_sum failed: expected 4, got 3" in revision_prompt[-1]["content"]
    kinds = [n.kind for n in nodes]
    assert kinds == ["root", "sample", "verdict", "revision", "verdict", "answer"]
    # a chain: each node hangs from the one before it
    assert all(nodes[i].parent_id == nodes[i - 1].id for i in range(2, 5))
    assert nodes[3].meta["feedback"] == "test_sum failed: expected 4, got 3"


async def test_refine_gives_up_after_max_rounds_with_the_best_version() -> None:
    engine = ScriptedEngine(["Answer: 1", "Answer: 2", "Answer: 0", "Answer: 0"])
    verifier = AnswerVerifier({"1": 0.3, "2": 0.6, "0": 0.1})
    answer, nodes = await run(Refine(max_rounds=3), engine, verifier=verifier)
    assert len(engine.calls) == 4 and answer.answer == "2" and answer.score == pytest.approx(0.6)
    assert [n.kind for n in nodes].count("revision") == 3 and [n.kind for n in nodes].count("verdict") == 4


async def test_refine_without_verifier_uses_self_critique() -> None:
    engine = ScriptedEngine(["Answer: 3", "The sum is wrong: 1 + 3 is 4.", "Answer: 4", "CORRECT."])
    answer, nodes = await run(Refine(max_rounds=3), engine)
    assert answer.answer == "4" and answer.score is None
    assert [n.kind for n in nodes] == ["root", "sample", "critique", "revision", "critique", "answer"]
    assert "The sum is wrong" in (engine.calls[2].messages or [])[-1]["content"]
    assert nodes[4].meta["passed"] is True


# --- budget forcing --------------------------------------------------------------------------


async def test_budget_forcing_appends_wait_when_the_model_stops_early() -> None:
    engine = ScriptedEngine(["2 + 2 = 4.", " yes, then", " so Answer: 4", "never reached"])
    answer, nodes = await run(BudgetForcing(min_tokens=10, max_tokens=100, max_waits=3), engine)
    assert engine.calls[0].prefill == ""
    assert engine.calls[1].prefill == "2 + 2 = 4. Wait"
    assert engine.calls[2].prefill == "2 + 2 = 4. Wait yes, then Wait"
    assert len(engine.calls) == 3  # 5 + 2 + 3 tokens reach min_tokens: no fourth call
    steps = [n for n in nodes if n.kind == "step"]
    assert [s.parent_id for s in steps[1:]] == [s.id for s in steps[:-1]]  # chained
    assert steps[1].text.startswith(" Wait")
    assert answer.answer == "4"


async def test_budget_forcing_caps_thinking_and_forces_the_answer() -> None:
    engine = ScriptedEngine([" ".join(["think"] * 50), "12"])
    answer, nodes = await run(BudgetForcing(min_tokens=0, max_tokens=20, answer_tokens=5), engine)
    assert engine.calls[0].max_tokens == 20
    assert engine.calls[1].prefill.endswith("think\nAnswer:") and engine.calls[1].max_tokens == 5
    assert answer.answer == "12"
    steps = [n for n in nodes if n.kind == "step"]
    assert len(steps) == 2 and steps[1].meta["forced"] is True


async def test_budget_forcing_stops_waiting_after_max_waits() -> None:
    engine = ScriptedEngine(["Answer: 5"])
    answer, _ = await run(BudgetForcing(min_tokens=100, max_tokens=200, max_waits=2), engine)
    assert len(engine.calls) == 3 and answer.answer == "5"


# --- adaptive consistency --------------------------------------------------------------------


def test_beta_rule_matches_the_paper() -> None:
    assert beta_settled(4, 0) == pytest.approx(1 - 1 / 32)  # four unanimous votes clear 0.95
    assert beta_settled(3, 0) < 0.95 < beta_settled(4, 0)
    assert beta_settled(3, 1) == pytest.approx(0.8125)
    assert beta_settled(2, 2) == pytest.approx(0.5)


def exact_urn(
    counts: tuple[int, ...], remaining: int, alpha: float, value: Callable[[tuple[int, ...]], float]
) -> float:
    """E[value(final counts)] by enumerating the Polya urn (small cases only): the oracle for
    the rules' simulations. The current leader is at index 0."""
    if remaining == 0:
        return value(counts)
    total = sum(counts) + alpha
    e = alpha / total * exact_urn((*counts, 1), remaining - 1, alpha, value)
    for i, k in enumerate(counts):
        bumped = tuple(c + (j == i) for j, c in enumerate(counts))
        e += k / total * exact_urn(bumped, remaining - 1, alpha, value)
    return e


def exact_leader_holds(counts: tuple[int, ...], remaining: int, alpha: float) -> float:
    return exact_urn(counts, remaining, alpha, lambda final: float(final.index(max(final)) == 0))


@pytest.mark.parametrize(
    ("counts", "remaining", "alpha"),
    [((1, 1), 1, 1.0), ((2, 1), 4, 1.0), ((3,), 5, 1.0), ((3, 2, 1), 6, 0.5), ((4, 1), 7, 2.0)],
)
def test_predictive_rule_matches_the_exact_urn(counts: tuple[int, ...], remaining: int, alpha: float) -> None:
    exact = exact_leader_holds(counts, remaining, alpha)
    assert leader_holds(list(counts), remaining, alpha) == pytest.approx(exact, abs=0.03)
    assert leader_holds(list(counts), remaining, alpha) == leader_holds(list(counts), remaining, alpha)


def test_predictive_rule_edges() -> None:
    assert leader_holds([1, 1], 1) == pytest.approx(2 / 3, abs=0.03)  # 1/3 the rival overtakes
    assert leader_holds([2, 2], 0) == 1.0  # ties go to the answer seen first
    assert leader_holds([5, 1], 3) == 1.0  # the rival cannot catch up
    assert leader_holds([0], 5) == leader_holds([], 5) == 0.0
    more_left = [leader_holds([3, 1], r) for r in (2, 6, 12)]
    assert more_left == sorted(more_left, reverse=True) and more_left[-1] < 1.0


def exact_gain(counts: tuple[int, ...], remaining: int, alpha: float) -> float:
    total = sum(counts) + remaining
    return exact_urn(counts, remaining, alpha, lambda final: (max(final) - final[0]) / total)


@pytest.mark.parametrize(
    ("counts", "remaining", "alpha"),
    [((1, 1), 1, 1.0), ((2, 1), 4, 1.0), ((3,), 5, 1.0), ((3, 2, 1), 6, 0.5), ((2, 2, 1), 5, 2.0)],
)
def test_gain_rule_matches_the_exact_urn(counts: tuple[int, ...], remaining: int, alpha: float) -> None:
    exact = exact_gain(counts, remaining, alpha)
    assert expected_gain(list(counts), remaining, alpha) == pytest.approx(exact, abs=0.01)


def test_gain_rule_stops_on_a_scattered_vote_and_samples_on_in_a_close_race() -> None:
    """Where gain and predictive part: scattered answers may well change the leader (the
    predictive rule samples on), but only to another rare answer (gain stops); a close
    two-way race is worth more samples under both."""
    for counts, left in (([2, 1, 1, 1, 1, 1, 1, 1, 1, 1], 4), ([3, 2, 1, 1, 1, 1], 6)):
        assert 1 - expected_gain(counts, left) >= 0.96 and leader_holds(counts, left) < 0.8
    for counts, left in (([4, 3], 9), ([3, 3], 10)):
        assert 1 - expected_gain(counts, left) < 0.96 and leader_holds(counts, left) < 0.8
    assert expected_gain([5, 1], 3) == 0.0 and expected_gain([], 4) == 1.0
    assert expected_gain([2, 1], 13) == expected_gain([2, 1], 13)  # seeded: decisions reproduce


async def test_adaptive_consistency_stops_early_when_unanimous() -> None:
    engine = ScriptedEngine(["Answer: 6"])
    answer, nodes = await run(AdaptiveConsistency(max_n=16), engine)  # gain, 0.96, rounds of 2
    assert sum(r.n for r in engine.calls) == 2 and answer.answer == "6"
    (vote,) = [n for n in nodes if n.kind == "vote"]
    assert vote.meta["stop"] == "gain" and 0.96 <= vote.meta["p_settled"] < 1.0


async def test_adaptive_consistency_beta_rule_needs_four_unanimous_votes() -> None:
    engine = ScriptedEngine(["Answer: 6"])
    answer, nodes = await run(AdaptiveConsistency(max_n=16, batch=1, rule="beta", threshold=0.95), engine)
    assert sum(r.n for r in engine.calls) == 4 and answer.answer == "6"
    assert [n.meta["stop"] for n in nodes if n.kind == "vote"] == [None, None, None, "beta"]


async def test_adaptive_consistency_never_stops_on_one_vote() -> None:
    """However low the threshold, a single sample is not a settled vote."""
    engine = ScriptedEngine(["Answer: 6"])
    await run(AdaptiveConsistency(max_n=16, batch=1, threshold=0.5), engine)
    assert sum(r.n for r in engine.calls) == 2


async def test_adaptive_consistency_runs_to_max_n_when_split() -> None:
    engine = ScriptedEngine(["Answer: 1", "Answer: 2"])
    answer, nodes = await run(AdaptiveConsistency(max_n=16, batch=4), engine)
    assert sum(r.n for r in engine.calls) == 16 and answer.answer == "1"
    rounds = [n for n in nodes if n.kind == "step"]
    assert len(rounds) == 4 and all(
        len(kids(nodes, r, "sample")) == 4 and kids(nodes, r, "vote") for r in rounds
    )
    # round 1 is the greedy answer and 3 samples, drawn in one batch; the sampled seeds run on
    # from 0, so the samples are a prefix of self-consistency's
    assert [(r.n, r.temperature) for r in engine.calls[:2]] == [(1, 0.0), (3, 0.8)]
    assert [r.seed for r in engine.calls[1:]] == [0, 3, 7, 11]
    first = kids(nodes, rounds[0], "sample")
    assert [n.meta.get("greedy", False) for n in first] == [True, False, False, False]
    assert [n.meta["index"] for n in first] == [0, 1, 2, 3]


async def test_adaptive_consistency_without_greedy_samples_every_vote() -> None:
    engine = ScriptedEngine(["Answer: 1", "Answer: 2"])
    await run("adaptive-consistency:max_n=8,batch=4,greedy=false", engine)
    assert [(r.n, r.seed, r.temperature) for r in engine.calls] == [(4, 0, 0.8), (4, 4, 0.8)]


async def test_adaptive_consistency_lead_rule_stops_when_the_leader_cannot_lose() -> None:
    engine = ScriptedEngine(["Answer: 6"])
    _answer, nodes = await run("adaptive-consistency:max_n=6,batch=2,rule=lead", engine)
    assert sum(r.n for r in engine.calls) == 4  # 4-0 with 2 left
    assert [n.meta["stop"] for n in nodes if n.kind == "vote"] == [None, "lead"]


async def test_adaptive_consistency_ignores_unanswered_samples() -> None:
    engine = ScriptedEngine(["", "", "", "", "Answer: 3"])
    answer, _ = await run(AdaptiveConsistency(max_n=8, batch=4), engine)
    assert answer.answer == "3" and sum(r.n for r in engine.calls) == 8


# --- deepconf --------------------------------------------------------------------------------


def confident(word: str) -> TokenLogprob:
    return TokenLogprob(word, -0.01, {word: -0.01, "a": -9.0, "b": -10.0})


def unsure(word: str) -> TokenLogprob:
    return TokenLogprob(word, -1.2, {word: -1.2, "a": -1.3, "b": -1.4})


def test_confidence_is_the_lowest_window_mean() -> None:
    confs = token_confidences([confident("x")] * 6 + [unsure("y")] * 2 + [confident("x")] * 6)
    assert confs[0] == pytest.approx((0.01 + 9 + 10) / 3)
    low = lowest_group_confidence(confs, 4)
    assert low == pytest.approx((2 * confs[0] + 2 * confs[6]) / 4)
    assert lowest_group_confidence(confs[:3], 4) == pytest.approx(confs[0])  # shorter than a window
    assert lowest_group_confidence(confs[:3], 4, partial=False) is None
    assert percentile([1, 2, 3, 4, 5], 50) == 3 and percentile([1, 2], 25) == pytest.approx(1.25)
    # no top-k: the chosen token's probability
    assert token_confidences([TokenLogprob("x", 0.0)]) == [1.0]


class ConfidenceEngine:
    """Serves scripted traces; chunked continuation by prefill; a trace whose text says
    "calm" is confident, any other is not. Charges the meter per token and stops when it is
    exhausted, like a real engine."""

    model = "scripted-confidence"
    price = Price()
    chat = True

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.calls: list[GenerationRequest] = []
        self.started = 0

    async def generate(
        self,
        requests: Sequence[GenerationRequest],
        meter: Meter | None = None,
        on_completion: OnCompletion | None = None,
    ) -> list[list[Completion]]:
        out = []
        for req in requests:
            self.calls.append(req)
            group = []
            for _ in range(req.n):
                if req.prefill:  # a continuation; one of ours, or endless musing after a "Wait"
                    full = next(
                        (t for t in self.texts if t.startswith(req.prefill)), req.prefill + " hmm" * 50
                    )
                else:
                    full = self.texts[self.started % len(self.texts)]
                    self.started += 1
                rest = full[len(req.prefill) :].split(" " if not req.prefill else None)
                finish: FinishReason = "length" if len(rest) > req.max_tokens else "stop"
                words: list[str] = []
                if meter is not None:
                    meter.charge(prompt_tokens=5)
                for word in rest[: req.max_tokens]:
                    if meter is not None and meter.exhausted():
                        finish = "budget"
                        break
                    words.append(word)
                    if meter is not None:
                        meter.charge(completion_tokens=1)
                text = " ".join(words)
                if req.prefill and words:
                    text = " " + text
                make = confident if "calm" in full else unsure
                group.append(Completion(text, finish, 5, len(words), logprobs=[make(w) for w in words]))
            out.append(group)
        return out

    async def aclose(self) -> None:
        return None


def trace(kind: str, answer: str, length: int = 20) -> str:
    return " ".join([kind] * length) + f" Answer: {answer}"


def answer_first(kind: str, answer: str, length: int = 12) -> str:
    """A trace that states its answer first, so that a cut-off prefix still has it."""
    return f"Answer: {answer}\n" + " ".join([kind] * length)


async def test_deepconf_offline_drops_low_confidence_traces() -> None:
    texts = [trace("shaky", "9")] * 5 + [trace("calm", "7")] * 3
    engine = ConfidenceEngine(texts)
    answer, nodes = await run(DeepConf(n=8, mode="offline", eta=25, window=8), engine)
    assert answer.answer == "7"  # plain majority would say 9
    vote = next(n for n in nodes if n.kind == "vote")
    assert vote.meta["voters"] == 2 and sorted(vote.meta["dropped"]) == [
        0,
        1,
        2,
        3,
        4,
        7,
    ]  # ties: earliest kept
    assert engine.calls[0].logprobs and engine.calls[0].top_logprobs == 5


async def test_deepconf_online_stops_unconfident_traces_early() -> None:
    texts = [trace("calm", "7"), trace("shaky", "9"), trace("calm", "7"), trace("shaky", "9")]
    engine = ConfidenceEngine(texts)
    strategy = DeepConf(n=8, warmup=4, batch=4, eta=50, window=4, chunk=8, consensus=0)
    answer, nodes = await run(strategy, engine)
    assert answer.answer == "7"
    online = [n for n in nodes if n.kind == "sample" and "stopped_early" in n.meta]
    assert len(online) == 4
    for n in online:
        if "shaky" in n.text:  # cut after its first chunk: 8 of 22 tokens
            assert n.meta["stopped_early"] and n.completion_tokens == 8
        else:
            assert not n.meta["stopped_early"] and n.completion_tokens == 22 and n.answer == "7"
    # continuation chunks carry the text so far as prefill
    assert any(r.prefill.startswith("calm calm") for r in engine.calls)
    assert answer.usage.completion_tokens == 4 * 22 + 2 * 22 + 2 * 8


async def test_deepconf_online_stops_sampling_at_consensus() -> None:
    engine = ConfidenceEngine([trace("calm", "7")])
    answer, nodes = await run(DeepConf(n=16, warmup=4, window=4), engine)
    assert answer.answer == "7" and len([n for n in nodes if n.kind == "sample"]) == 4


@pytest.mark.parametrize(("stop", "traces"), [("share", 12), ("predictive", 4)])
async def test_deepconf_consensus_rule(stop: str, traces: int) -> None:
    """3 of 4 confident traces agree: a 0.75 share is below 0.9, so the paper's rule samples
    on until the leader cannot lose (9-3 with 4 left); the predictive rule already gives
    P(the leader still wins after 12 more) > 0.9."""
    engine = ConfidenceEngine(
        [trace("calm", "7"), trace("calm", "7"), trace("calm", "7"), trace("calm", "9")]
    )
    strategy = DeepConf(n=16, warmup=4, window=4, chunk=64, consensus=0.9, stop=stop)  # type: ignore[arg-type]
    answer, nodes = await run(strategy, engine)
    assert answer.answer == "7" and len([n for n in nodes if n.kind == "sample"]) == traces


async def test_deepconf_without_logprobs_falls_back_to_majority() -> None:
    class NoLogprobs(ScriptedEngine):
        async def generate(self, requests, meter=None, on_completion=None):  # type: ignore[no-untyped-def]
            out = await super().generate(requests, meter, on_completion)
            for group in out:
                for c in group:
                    c.logprobs = None
            return out

    answer, nodes = await run(
        DeepConf(n=3, mode="offline"), NoLogprobs(["Answer: 1", "Answer: 2", "Answer: 2"])
    )
    assert answer.answer == "2" and any("plain majority" in n.text for n in nodes)


# --- budgets: every strategy is anytime ------------------------------------------------------

ALL = [
    "cot",
    "best-of-n:n=8",
    "refine:max_rounds=6",
    "budget-forcing:min_tokens=100,max_tokens=400,max_waits=8",
    "adaptive-consistency:max_n=16,rule=lead",
    "deepconf:n=16,mode=offline",
    "deepconf:n=16,warmup=2,batch=2,consensus=0",
]


@pytest.mark.parametrize("spec", ALL)
async def test_each_strategy_respects_a_token_budget_with_its_best_so_far(spec: str) -> None:
    engine = ConfidenceEngine(
        [answer_first("calm", "5"), answer_first("calm", "6"), answer_first("calm", "5")]
    )
    verifier = AnswerVerifier({"5": 0.5, "6": 0.4})  # never passes: refine would go on
    answer, nodes = await run(spec, engine, budget=Budget(tokens=12), verifier=verifier)
    assert answer.stopped_by == "tokens"
    assert answer.usage.completion_tokens == 12  # the engine stops mid-sample
    assert answer.answer in ("5", "6") and nodes[-1].kind == "answer"


@pytest.mark.parametrize("spec", [s for s in ALL if not s.startswith(("cot", "budget"))])
async def test_each_sampling_strategy_respects_a_samples_budget(spec: str) -> None:
    engine = ConfidenceEngine([answer_first("calm", "5"), answer_first("shaky", "6")])
    verifier = AnswerVerifier({"5": 0.5, "6": 0.4})
    answer, nodes = await run(spec, engine, budget="3 samples", verifier=verifier)
    assert answer.stopped_by == "samples"
    assert len([n for n in nodes if n.kind in ("sample", "revision") and not n.meta.get("strategy")]) <= 3
    assert answer.answer in ("5", "6")


# --- specs and the CLI -----------------------------------------------------------------------


def test_specs_round_trip_and_nested_fields_stay_out_of_the_cli() -> None:
    for spec in ALL:
        assert parse_strategy(parse_strategy(spec).spec()).spec() == parse_strategy(spec).spec()
    names = [p[0] for p in BestOfN.parameters()]
    assert "of" not in names and "verifier" not in names and "weighted" in names
    with pytest.raises(ValueError):
        parse_strategy("adaptive-consistency:rule=vibes")
    with pytest.raises(ValueError):
        parse_strategy("deepconf:top_k=1")


def test_strategies_command_lists_every_strategy_with_parameters() -> None:
    from typer.testing import CliRunner

    import ponder.cli.strategies  # noqa: F401  (registers the command)
    from ponder.cli.app import app

    result = CliRunner().invoke(app, ["strategies", "--json"])
    assert result.exit_code == 0, result.output
    listed = {s["name"]: s for s in json.loads(result.output)}
    assert set(REGISTRY) <= set(listed)
    for name in ("cot", "best-of-n", "refine", "budget-forcing", "adaptive-consistency", "deepconf"):
        assert listed[name]["summary"]
    ac = {p["name"]: p for p in listed["adaptive-consistency"]["parameters"]}
    assert ac["rule"] == {
        "name": "rule",
        "type": "gain|predictive|beta|share|lead",
        "default": "gain",
        "help": ac["rule"]["help"],
    }
    assert ac["max_n"]["default"] == 16 and ac["max_n"]["help"]
    text = CliRunner().invoke(app, ["strategies"])
    assert text.exit_code == 0 and "deepconf" in text.output and "max_waits" in text.output


# --- the real bundled model ------------------------------------------------------------------
# Small token caps keep this quick on a shared CPU; the model's text is never asserted, only
# that each strategy answers inside its budget, stops at a deadline with what it has, and
# leaves the trace tree its algorithm implies.


@pytest.fixture(scope="module")
def model() -> Iterator[Engine]:
    from ponder.engines.llamacpp import LlamaCppEngine

    # one thread: on a CPU shared with other work, llama.cpp's spinning thread barrier makes
    # two threads many times slower than one
    eng = LlamaCppEngine(max_batch=16, n_ctx=4096, n_threads=1)
    yield eng
    eng.close()


QUESTION = "What is 6 * 7?"
LONG_QUESTION = "Count from 1 to 300, one number per line, then tell me which of them are prime."

SHAPES: dict[str, Callable[[list[NodeRecord]], None]] = {}


def shape(spec: str) -> Callable[[Callable[[list[NodeRecord]], None]], Callable[[list[NodeRecord]], None]]:
    def register(check: Callable[[list[NodeRecord]], None]) -> Callable[[list[NodeRecord]], None]:
        SHAPES[spec] = check
        return check

    return register


def by_id(nodes: list[NodeRecord]) -> dict[str, NodeRecord]:
    return {n.id: n for n in nodes}


@shape("cot")
def _cot(nodes: list[NodeRecord]) -> None:
    assert [n.kind for n in nodes] == ["root", "sample"]


@shape("best-of-n:n=3")
def _best_of_n(nodes: list[NodeRecord]) -> None:
    root = nodes[0]
    assert len(kids(nodes, root, "sample")) == 3 and len(kids(nodes, root, "note")) == 1  # logprob fallback


@shape("refine:max_rounds=1,critique_tokens=24")
def _refine(nodes: list[NodeRecord]) -> None:
    kinds = [n.kind for n in nodes]
    assert kinds[:3] == ["root", "sample", "critique"]
    for i in range(2, len(nodes) - 1):  # a chain
        assert nodes[i].parent_id == nodes[i - 1].id
    assert set(kinds[3:-1]) <= {"revision", "critique"}


@shape("budget-forcing:min_tokens=40,max_tokens=64,max_waits=2,answer_tokens=8")
def _budget_forcing(nodes: list[NodeRecord]) -> None:
    steps = [n for n in nodes if n.kind == "step"]
    assert steps and steps[0].parent_id == nodes[0].id
    assert [s.parent_id for s in steps[1:]] == [s.id for s in steps[:-1]]
    total = sum(s.completion_tokens for s in steps)
    assert total >= 40 or len(steps) == 3  # thought at least min_tokens, or used up its waits
    if total >= 64:
        assert steps[-1].meta.get("forced")


@shape("adaptive-consistency:max_n=8,batch=4")
def _adaptive(nodes: list[NodeRecord]) -> None:
    rounds = kids(nodes, nodes[0], "step")
    assert 1 <= len(rounds) <= 2
    for r in rounds:
        assert len(kids(nodes, r, "sample")) == 4 and len(kids(nodes, r, "vote")) == 1
    greedy = [[bool(n.meta.get("greedy")) for n in kids(nodes, r, "sample")] for r in rounds]
    assert greedy[0].count(True) == 1 and not any(any(g) for g in greedy[1:])  # first vote: greedy
    votes = [n for n in nodes if n.kind == "vote"]
    assert votes[-1].meta["stop"] or sum(len(kids(nodes, r, "sample")) for r in rounds) == 8


@shape("deepconf:n=8,warmup=4,batch=4,chunk=16,window=8")
def _deepconf(nodes: list[NodeRecord]) -> None:
    phases = kids(nodes, nodes[0], "step")
    assert phases[0].meta["phase"] == "warmup" and len(kids(nodes, phases[0], "sample")) == 4
    assert any(n.kind == "note" and "threshold" in n.meta for n in kids(nodes, phases[0]))
    for online in phases[1:]:
        assert all("confidence" in s.meta for s in kids(nodes, online, "sample"))
    assert sum(1 for n in nodes if n.kind == "vote") == len(phases)


@pytest.mark.model
@pytest.mark.parametrize("spec", list(SHAPES))
async def test_real_model_answers_within_budget_with_its_trace(model: Engine, spec: str) -> None:
    answer, nodes = await run(spec, model, QUESTION, budget="2000 tokens", max_tokens=48)
    assert answer.answer is not None and answer.response
    assert answer.usage.completion_tokens <= 2000 + 48
    assert nodes[-1].kind == "answer"
    SHAPES[spec](nodes[:-1])


@pytest.mark.model
@pytest.mark.parametrize(
    "spec",
    [
        "cot",
        "best-of-n:n=16",
        "refine:max_rounds=8",
        "budget-forcing:min_tokens=2000,max_tokens=4000,max_waits=50",
        "adaptive-consistency:max_n=64,batch=16,rule=lead",
        "deepconf:n=64,warmup=16,batch=16,consensus=0",
    ],
)
async def test_real_model_stops_at_a_deadline_with_its_best_so_far(model: Engine, spec: str) -> None:
    start = time.monotonic()
    answer, nodes = await run(spec, model, LONG_QUESTION, budget="1.5s", max_tokens=2048)
    assert answer.stopped_by == "seconds"
    assert time.monotonic() - start < 1.5 + 2.5  # one decode step, the verifier and bookkeeping late at most
    assert answer.response  # what it had when time ran out
    assert nodes[-1].kind == "answer" and nodes[-1].parent_id in by_id(nodes)


CODE_PROBLEMS = [
    (
        "Write a Python function `second_largest(xs)` that returns the second largest distinct value "
        "in the list xs, or None if there is none.",
        "from candidate import second_largest\n\n"
        "def test_basic():\n    assert second_largest([3, 1, 2]) == 2\n\n"
        "def test_duplicates():\n    assert second_largest([5, 5, 4]) == 4\n\n"
        "def test_none():\n    assert second_largest([7, 7]) is None\n",
    ),
    (
        "Write a Python function `clamp(x, lo, hi)` that limits x to the range [lo, hi].",
        "from candidate import clamp\n\n"
        "def test_inside():\n    assert clamp(5, 0, 10) == 5\n\n"
        "def test_below():\n    assert clamp(-3, 0, 10) == 0\n\n"
        "def test_above():\n    assert clamp(42, 0, 10) == 10\n",
    ),
    (
        "Write a Python function `count_vowels(s)` that counts the vowels (a, e, i, o, u, upper or lower "
        "case) in the string s.",
        "from candidate import count_vowels\n\n"
        "def test_lower():\n    assert count_vowels('banana') == 3\n\n"
        "def test_upper():\n    assert count_vowels('AEIOUxyz') == 5\n\n"
        "def test_empty():\n    assert count_vowels('') == 0\n",
    ),
    (
        "Write a Python function `run_length(s)` that run-length encodes a string: 'aaabcc' -> 'a3b1c2'.",
        "from candidate import run_length\n\n"
        "def test_example():\n    assert run_length('aaabcc') == 'a3b1c2'\n\n"
        "def test_single():\n    assert run_length('z') == 'z1'\n\n"
        "def test_empty():\n    assert run_length('') == ''\n",
    ),
]


@pytest.mark.model
async def test_real_model_refines_code_against_sandboxed_tests(model: Engine) -> None:
    from ponder.verifiers.code import UnitTests

    async def solve(question: str, tests: str) -> list[NodeRecord]:
        nodes: list[NodeRecord] = []
        problem = Problem(question, format="code", tests=tests)
        await athink(
            problem,
            strategy="refine:max_rounds=1,temperature=0.2",
            engine=model,
            store=False,
            verifier=UnitTests(),
            on_node=collect(nodes),
            max_tokens=160,
            budget="60s",
        )
        return nodes

    runs = await asyncio.gather(*(solve(q, t) for q, t in CODE_PROBLEMS))
    revised = 0
    for nodes in runs:
        kinds = [n.kind for n in nodes[:-1]]
        assert kinds[:3] == ["root", "sample", "verdict"]
        assert all(nodes[i].parent_id == nodes[i - 1].id for i in range(2, len(kinds)))  # a chain
        first = nodes[2]
        if first.meta["passed"]:
            assert kinds == ["root", "sample", "verdict"]  # passing drafts are not revised
            continue
        # a failing draft: the test failure went back to the model, and the revision was tested again
        assert first.text and kinds == ["root", "sample", "verdict", "revision", "verdict"]
        assert nodes[3].meta["feedback"] == first.text.strip()
        revised += 1
    assert revised >= 1  # the 135M model fails at least one of these on the first try
