"""Chain of thought (Wei et al. 2022; Kojima et al. 2022): one sampled step-by-step
solution, then pull the final answer out of it. The cheapest strategy that still thinks."""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.context import Context
from ponder.problem import Problem
from ponder.strategies.base import TEMPERATURE, TOP_P, Result, Strategy


@dataclass
class ChainOfThought(Strategy):
    name = "cot"
    summary = "One sampled step-by-step chain of thought, with the final answer extracted from it."

    temperature: float = field(
        default=0.7, metadata={"help": "sampling temperature (0 = greedy)", **TEMPERATURE}
    )
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling", **TOP_P})

    async def run(self, problem: Problem, ctx: Context) -> Result:
        samples = await ctx.sample(problem, 1, temperature=self.temperature, top_p=self.top_p)
        if not samples:  # the budget was gone before we started
            return Result(None, "")
        chain = samples[0]
        return Result(
            chain.answer, chain.text, node=chain.node, response_tokens=chain.completion.completion_tokens
        )
