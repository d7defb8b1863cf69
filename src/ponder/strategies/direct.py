"""System 1: one greedy answer, the baseline every other strategy must beat."""

from __future__ import annotations

from dataclasses import dataclass

from ponder.context import Context
from ponder.problem import Problem
from ponder.strategies.base import Result, Strategy


@dataclass
class Direct(Strategy):
    name = "direct"
    summary = "One greedy (temperature 0) answer: the fast System-1 baseline."

    async def run(self, problem: Problem, ctx: Context) -> Result:
        samples = await ctx.sample(problem, 1, temperature=0.0)
        if not samples:
            return Result(None, "")
        best = samples[0]
        return Result(
            best.answer, best.text, node=best.node, response_tokens=best.completion.completion_tokens
        )
