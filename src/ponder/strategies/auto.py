"""Auto: don't overthink. Answer at System-1 cost, and spend more only where the signals
say more compute is likely to change or fix the answer (Snell et al. 2024: allocate test-time
compute by difficulty, not uniformly).

    fast = greedy answer (temperature 0, with token logprobs)          # System 1
    if a verifier exists:
        if verify(fast) passes: return fast                             # checked, done
        sample in rounds, verify each; return the first that passes     # best-of-n, stopped early
        return the best-scoring candidate
    if confidence(fast) >= threshold: return fast                       # easy: the model is sure
    return adaptive vote, with fast as its first vote                   # hard: vote until settled
                                                                        #   (or until it is plainly guessing)

Every step writes a "decision" node with its signals, so `ponder traces show` answers "why did
it think longer here?". The confidence signal and its threshold are *fitted*, not picked:
`benchmarks/routing.py --fit` measures, on seeded questions the bundled model finds easy and
hard, which signal best predicts a wrong greedy answer, the threshold above which voting
stops paying, and how the vote stops (rule, threshold, giving up on scattered answers), all
replayed exactly from recorded samples; the result is `routing.json` beside this file, with
the seeds it was fitted on.
An engine without logprobs gives no confidence: the router then always asks the vote, whose
gain rule stops after two agreeing votes on easy questions anyway.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ponder.context import Candidate, Context
from ponder.problem import Problem
from ponder.stopping import StopRule
from ponder.strategies.adaptive_consistency import AdaptiveConsistency
from ponder.strategies.base import COUNT, TEMPERATURE, TOP_P, Result, Strategy
from ponder.strategies.deepconf import lowest_group_confidence, token_confidences
from ponder.verifiers.base import Verifier

CALIBRATION = Path(__file__).with_name("routing.json")
Signal = Literal["mean_logprob", "min_prob", "group_confidence"]


def _calibrated(key: str, default: Any) -> Any:
    """A fitted value from routing.json; a null threshold (or no file) means always vote."""
    try:
        value = json.loads(CALIBRATION.read_text())[key]
    except (OSError, ValueError, KeyError):
        return default
    return default if value is None else value


def signals(fast: Candidate) -> dict[str, float | bool | None]:
    """What the greedy answer says about its own reliability, from what the engine gave."""
    lps = fast.completion.logprobs or []
    probs = [math.exp(t.logprob) for t in lps]
    return {
        "answered": fast.answer is not None,
        "finished": fast.completion.finish_reason == "stop",
        "mean_logprob": fast.mean_logprob,
        "min_prob": min(probs) if probs else None,
        "group_confidence": lowest_group_confidence(token_confidences(lps), 16) if lps else None,
        "tokens": float(fast.completion.completion_tokens),
    }


@dataclass
class Auto(Strategy):
    name = "auto"
    summary = (
        "Greedy answer first; escalate to a vote (or verified sampling) only when the signals say it pays."
    )

    signal: Signal = field(
        default=_calibrated("signal", "mean_logprob"),
        metadata={"help": "confidence signal of the greedy answer (fitted by benchmarks/routing.py)"},
    )
    threshold: float = field(
        default=_calibrated("threshold", math.inf),
        metadata={"help": "answer at once when the signal is >= this (inf: always vote)", "allow_inf": True},
    )
    max_n: int = field(default=16, metadata={"help": "most samples when escalating", **COUNT})
    batch: int = field(default=2, metadata={"help": "samples per round when escalating", **COUNT})
    temperature: float = field(
        default=0.8, metadata={"help": "sampling temperature when escalating", **TEMPERATURE}
    )
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling when escalating", **TOP_P})
    rule: StopRule = field(
        default=_calibrated("rule", "gain"),
        metadata={"help": "the vote's stopping rule (see adaptive-consistency; fitted)"},
    )
    stop_threshold: float = field(
        default=_calibrated("stop_threshold", 0.96),
        metadata={"help": "the vote stops when its rule's score >= this (fitted)", "ge": 0.5, "le": 1.0},
    )
    give_up: int = field(
        default=_calibrated("give_up", 0),
        metadata={
            "help": "the vote stops once this many samples hold no two equal answers (0: never; fitted)",
            "ge": 0,
        },
    )
    verifier: Verifier | None = field(default=None, metadata={"nested": True})

    async def run(self, problem: Problem, ctx: Context) -> Result:
        fast_samples = await ctx.sample(problem, 1, temperature=0.0, logprobs=True, top_logprobs=5)
        if not fast_samples:
            return Result(None, "")
        fast = fast_samples[0]
        seen = signals(fast)
        verifier = self.verifier or ctx.verifier
        if verifier is not None:
            return await self._verified(problem, ctx, fast, seen, verifier)
        value = seen.get(self.signal)
        confident = isinstance(value, float) and seen["answered"] and value >= self.threshold
        if confident or ctx.meter.exhausted():
            why = "confident" if confident else "budget spent"
            self._decide(ctx, f"answer at once: {why}", "direct", seen)
            return _as_result(fast)
        reason = (
            "no confidence signal" if value is None else f"{self.signal} {value:.3f} < {self.threshold:.3f}"
        )
        if not seen["answered"]:
            reason = "the greedy answer has no extractable answer"
        node = self._decide(ctx, f"escalate to a vote: {reason}", "adaptive-consistency", seen)
        vote = AdaptiveConsistency(
            max_n=self.max_n,
            batch=self.batch,
            temperature=self.temperature,
            top_p=self.top_p,
            rule=self.rule,
            threshold=self.stop_threshold,
            give_up=self.give_up,
        )
        return await vote.vote(problem, ctx.child(node), [fast])

    async def _verified(
        self, problem: Problem, ctx: Context, fast: Candidate, seen: dict[str, Any], verifier: Verifier
    ) -> Result:
        """The ground truth decides: stop at the first candidate that passes the check."""
        verdict, _ = await ctx.verify(problem, fast.text, fast.node, verifier)
        if verdict.passed:
            self._decide(ctx, "answer at once: the greedy answer passed the check", "direct", seen)
            return _as_result(fast, verdict.score)
        node = self._decide(ctx, "escalate: the greedy answer failed the check", "best-of-n (verified)", seen)
        best, best_score = fast, verdict.score
        drawn = 1
        while drawn < self.max_n and not ctx.meter.exhausted():
            k = min(self.batch, self.max_n - drawn)
            batch = await ctx.sample(
                problem, k, parent=node, seed=ctx.seed + drawn, temperature=self.temperature, top_p=self.top_p
            )
            if not batch:
                break
            drawn += len(batch)
            for cand in batch:
                verdict, _ = await ctx.verify(problem, cand.text, cand.node, verifier)
                if verdict.score > best_score:
                    best, best_score = cand, verdict.score
                if verdict.passed:
                    return _as_result(cand, verdict.score)
        return _as_result(best, best_score)

    def _decide(self, ctx: Context, text: str, choice: str, seen: dict[str, Any]) -> str:
        return ctx.note(
            "decision",
            text,
            choice=choice,
            signals=seen,
            signal=self.signal,
            threshold=None if math.isinf(self.threshold) else self.threshold,
        )


def _as_result(cand: Candidate, score: float | None = None) -> Result:
    return Result(
        cand.answer, cand.text, score=score, node=cand.node, response_tokens=cand.completion.completion_tokens
    )
