"""Adaptive-Consistency (Aggarwal et al. 2023): self-consistency that stops sampling once
the vote is settled, so easy questions cost a few samples and hard ones up to `max_n`.

    answers = []
    while len(answers) < max_n:
        answers += sample(batch)
        a, b = counts of the two leading answers
        if a - b > max_n - len(answers): stop     # the leader can no longer lose
        if rule == "beta" and P(p_a > p_b | a, b) >= threshold: stop

The Beta rule is the paper's default: with a uniform prior, the leader's share among the top
two answers is p ~ Beta(a + 1, b + 1), and P(p > 1/2) = P(Binomial(a + b + 1, 1/2) <= a),
exact for whole counts. With threshold 0.95 four unanimous samples are enough; 3-1 is not.
Samples with no extractable answer count toward max_n but not toward the vote.

Samples use seeds seed, seed + 1, ... so a run is a prefix of `self-consistency:n=max_n`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import comb
from typing import Literal

from ponder.context import Candidate, Context
from ponder.problem import Problem
from ponder.strategies.base import Result, Strategy
from ponder.strategies.self_consistency import note_votes
from ponder.vote import Tally, tally


def beta_settled(a: float, b: float) -> float:
    """P(the leader's true share among the top two exceeds 1/2) under Beta(a+1, b+1)."""
    a_, b_ = round(a), round(b)
    n = a_ + b_ + 1
    return sum(comb(n, k) for k in range(a_ + 1)) / 2**n


def top_two(votes: Tally) -> tuple[float, float]:
    ranked = [*sorted(votes.totals.values(), reverse=True), 0.0, 0.0]
    return ranked[0], ranked[1]


@dataclass
class AdaptiveConsistency(Strategy):
    name = "adaptive-consistency"
    summary = "Self-consistency in small rounds that stops once the vote is settled (Beta rule, or lead)."

    max_n: int = field(default=16, metadata={"help": "most samples to draw"})
    batch: int = field(default=4, metadata={"help": "samples per round (drawn in parallel)"})
    threshold: float = field(
        default=0.95, metadata={"help": "beta rule: stop when P(leader is the majority) >= this"}
    )
    rule: Literal["beta", "lead"] = field(
        default="beta",
        metadata={"help": "beta: Beta stopping rule (+ lead); lead: only stop when the leader cannot lose"},
    )
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling"})

    def __post_init__(self) -> None:
        if self.max_n < 1 or self.batch < 1:
            raise ValueError("max_n and batch must be >= 1")
        if not 0.5 <= self.threshold <= 1.0:
            raise ValueError("threshold must be in [0.5, 1]")
        if self.rule not in ("beta", "lead"):
            raise ValueError("rule must be beta or lead")

    async def run(self, problem: Problem, ctx: Context) -> Result:
        samples: list[Candidate] = []
        vote_node: str | None = None
        rounds = 0
        while len(samples) < self.max_n and not ctx.meter.exhausted():
            rounds += 1
            k = min(self.batch, self.max_n - len(samples))
            round_node = ctx.note("step", f"round {rounds}: {k} samples", round=rounds)
            new = await ctx.sample(
                problem,
                k,
                parent=round_node,
                seed=ctx.seed + len(samples),
                temperature=self.temperature,
                top_p=self.top_p,
            )
            if not new:
                break
            samples += new
            votes = tally(s.answer for s in samples if s.finished)
            stop, p = self.settled(votes, self.max_n - len(samples))
            vote_node = note_votes(
                ctx, votes, len(samples), parent=round_node, p_majority=round(p, 4), stop=stop
            )
            if stop:
                break
        return self._result(samples, vote_node)

    def settled(self, votes: Tally, remaining: int) -> tuple[str | None, float]:
        """Why to stop now ("lead" or "beta"), or None; and the Beta probability."""
        a, b = top_two(votes)
        p = beta_settled(a, b)
        if a > 0 and a - b > remaining:
            return "lead", p
        if self.rule == "beta" and a > 0 and p >= self.threshold:
            return "beta", p
        return None, p

    def _result(self, samples: list[Candidate], vote_node: str | None) -> Result:
        pool = [s for s in samples if s.finished and s.answer] or [s for s in samples if s.answer] or samples
        if not pool:
            return Result(None, "", node=vote_node)
        votes = tally(s.answer for s in pool)
        chosen = next((s for s in pool if s.answer == votes.winner), pool[0])
        return Result(
            votes.winner,
            chosen.text,
            score=votes.share(),
            node=vote_node,
            response_tokens=chosen.completion.completion_tokens,
        )
