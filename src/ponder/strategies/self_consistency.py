"""Self-consistency (Wang et al. 2023): sample n reasoning paths, majority-vote the answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ponder.context import Candidate, Context
from ponder.problem import Problem
from ponder.strategies.base import COUNT, TEMPERATURE, TOP_P, Result, Strategy
from ponder.vote import Tally, tally


@dataclass
class SelfConsistency(Strategy):
    name = "self-consistency"
    summary = "Sample n answers at temperature and return the majority vote (ties: first seen)."

    n: int = field(default=8, metadata={"help": "samples to vote over", **COUNT})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature", **TEMPERATURE})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling", **TOP_P})

    async def run(self, problem: Problem, ctx: Context) -> Result:
        samples = await ctx.sample(problem, self.n, temperature=self.temperature, top_p=self.top_p)
        return majority(samples, ctx)


def majority(samples: list[Candidate], ctx: Context, weights: list[float] | None = None) -> Result:
    """Vote over finished samples; if the budget cut every sample short, vote over what the
    partial samples say rather than return nothing (anytime)."""
    pool = [(s, w) for s, w in zip(samples, weights or [1.0] * len(samples), strict=True) if s.finished]
    if not any(s.answer for s, _ in pool):
        pool = list(zip(samples, weights or [1.0] * len(samples), strict=True))
    votes = tally((s.answer for s, _ in pool), (w for _, w in pool))
    winner = votes.winner
    vote_node = note_votes(ctx, votes, len(pool))
    chosen = next((s for s, _ in pool if s.answer == winner), samples[0] if samples else None)
    if chosen is None:
        return Result(None, "", node=vote_node)
    return Result(
        winner,
        chosen.text,
        score=votes.share(),
        node=vote_node,
        response_tokens=chosen.completion.completion_tokens,
    )


def note_votes(ctx: Context, votes: Tally, voters: int, weight_format: str = "g", **meta: Any) -> str:
    """A "vote" node: each answer's total as its text, the winner and its share, and `meta`."""
    return ctx.note(
        "vote",
        ", ".join(f"{a}: {w:{weight_format}}" for a, w in votes.totals.items()),
        answer=votes.winner,
        score=votes.share(),
        totals=votes.totals,
        voters=voters,
        **meta,
    )
