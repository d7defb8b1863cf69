"""Adaptive-Consistency (Aggarwal et al. 2023): self-consistency that stops sampling once
the vote is settled, so easy questions cost a few samples and hard ones up to `max_n`.

    answers = [greedy answer]               # System 1's answer is the first vote
    while len(answers) < max_n:
        answers += sample(batch)            # (the first round: the greedy answer and batch - 1)
        a, b = counts of the two leading answers
        if a - b > max_n - len(answers): stop     # the leader can no longer lose
        if P(settled | answers) >= threshold: stop
        if give_up and len(answers) >= give_up and no two agree: stop     # scattered: hopeless

"Settled" is one of the rules in `ponder.stopping`: `gain` (default: more samples are
expected to raise the chosen answer's vote share by less than 1 - threshold, so they are not
worth drawing), `predictive` (P(the current leader is still the majority after all `max_n`
samples)), `beta` (the paper's) or `lead` (only when the leader can no longer lose).

The greedy answer (temperature 0, decoded in the first round's batch; `greedy=false` turns it
off) is a small model's single most likely answer and far more often right than one sample
at temperature (SmolLM2 on products: 54-62% against 24-48%), so as the first vote it makes an
early 2-0 stop much safer; with a strong model the two hardly differ and it costs one sample.

`give_up` (off by default) is the other side of "don't overthink": when that many samples
hold no two equal answers, the model is guessing and more samples mostly add more guesses, so
the vote stops and returns its first answer (the greedy one, when it is first). Whether it pays
is a question for data: `auto` fits it (benchmarks/routing.py --fit).

Samples with no extractable answer count toward max_n but not toward the vote.

Sampled answers use seeds seed, seed + 1, ... so the samples are a prefix of
`self-consistency:n=max_n`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.context import Candidate, Context
from ponder.problem import Problem
from ponder.stopping import StopRule, settled
from ponder.strategies.base import COUNT, TEMPERATURE, TOP_P, Result, Strategy
from ponder.strategies.self_consistency import note_votes
from ponder.vote import Tally, tally


@dataclass
class AdaptiveConsistency(Strategy):
    name = "adaptive-consistency"
    summary = "Greedy answer first, then samples in small rounds until more are not worth drawing."

    max_n: int = field(default=16, metadata={"help": "most samples to draw", **COUNT})
    batch: int = field(default=2, metadata={"help": "samples per round (drawn in parallel)", **COUNT})
    threshold: float = field(
        default=0.96, metadata={"help": "stop when the rule's score >= this (see rule)", "ge": 0.5, "le": 1.0}
    )
    rule: StopRule = field(
        default="gain",
        metadata={
            "help": "gain: 1 - expected rise of the winner's share by max_n; predictive: P(leader "
            "still wins at max_n); beta: the paper's Beta rule; lead: only when the leader cannot lose"
        },
    )
    greedy: bool = field(
        default=True, metadata={"help": "the first vote is the greedy (temperature 0) answer"}
    )
    alpha: float = field(
        default=1.0, metadata={"help": "gain, predictive: weight of a not-yet-seen answer", "gt": 0.0}
    )
    give_up: int = field(
        default=0,
        metadata={"help": "stop once this many samples hold no two equal answers (0: never)", "ge": 0},
    )
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature", **TEMPERATURE})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling", **TOP_P})

    async def run(self, problem: Problem, ctx: Context) -> Result:
        return await self.vote(problem, ctx, [])

    async def vote(self, problem: Problem, ctx: Context, samples: list[Candidate]) -> Result:
        """Sample in rounds until the vote is settled, counting `samples` (votes already
        drawn, e.g. a router's greedy answer) as the first votes."""
        samples = list(samples)
        vote_node: str | None = None
        rounds = sampled = 0
        while len(samples) < self.max_n and not ctx.meter.limit_reached():
            rounds += 1
            k = min(self.batch, self.max_n - len(samples))
            round_node = ctx.note("step", f"round {rounds}: {k} samples", round=rounds)
            greedy = int(self.greedy and not samples)
            new = await ctx.sample(
                problem,
                k,
                parent=round_node,
                greedy=greedy,
                seed=ctx.seed + sampled,
                temperature=self.temperature,
                top_p=self.top_p,
            )
            sampled += k - greedy
            if not new:
                break
            samples += new
            votes = tally(s.answer for s in samples if s.finished)
            stop, p = self.settled(votes, self.max_n - len(samples))
            vote_node = note_votes(
                ctx, votes, len(samples), parent=round_node, p_settled=round(p, 4), stop=stop
            )
            if stop:
                break
        return self._result(samples, vote_node)

    def settled(self, votes: Tally, remaining: int) -> tuple[str | None, float]:
        stop, p = settled(votes, remaining, self.rule, self.threshold, self.alpha)
        drawn = self.max_n - remaining
        if (
            stop is None
            and self.give_up
            and drawn >= self.give_up
            and max(votes.totals.values(), default=0) <= 1
        ):
            return "scattered", p
        return stop, p

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
