"""Budget forcing (s1, Muennighoff et al. 2025): control how long the model thinks by
editing its output, not its weights.

    text = generate(problem)
    while model stopped and tokens(text) < min_tokens and waits < max_waits:
        text += " Wait"                       # suppress the stop, make it reconsider
        text += continue(text)                # prefill continuation
    if tokens(text) >= max_tokens:            # thinking hit the cap: force an answer
        text += continue(text + "\\nAnswer:", answer_tokens)

Models without a thinking delimiter (SmolLM2) end their whole reply with end-of-sequence;
that stop is what "Wait" overrides. Each continuation is a "step" node, chained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.context import Context
from ponder.engines.base import Completion, GenerationRequest
from ponder.extract import extract_answer
from ponder.problem import Problem
from ponder.strategies.base import TEMPERATURE, Result, Strategy


@dataclass
class BudgetForcing(Strategy):
    name = "budget-forcing"
    summary = "s1: append 'Wait' when the model stops before min_tokens; force the answer at max_tokens."

    min_tokens: int = field(
        default=64, metadata={"help": "think at least this many tokens (append 'Wait' before)", "ge": 0}
    )
    max_tokens: int = field(
        default=256, metadata={"help": "thinking cap; then the answer is forced", "ge": 1}
    )
    wait: str = field(default="Wait", metadata={"help": "what to append when the model stops too early"})
    max_waits: int = field(default=3, metadata={"help": "at most this many 'Wait's", "ge": 0})
    answer_prompt: str = field(default="\nAnswer:", metadata={"help": "prefill that forces the final answer"})
    answer_tokens: int = field(default=16, metadata={"help": "tokens for the forced answer", "ge": 1})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature", **TEMPERATURE})

    def __post_init__(self) -> None:
        if self.min_tokens > self.max_tokens:
            raise self.invalid(
                "min_tokens", f"must be <= max_tokens ({self.max_tokens}), got {self.min_tokens}"
            )

    async def run(self, problem: Problem, ctx: Context) -> Result:
        text, used, waits, appended = "", 0, 0, ""
        last: str | None = None
        while True:
            request = ctx.request(
                problem,
                prefill=text,
                max_tokens=self.max_tokens - used,
                temperature=self.temperature,
                seed=ctx.seed + waits,
            )
            # the first call is a new sample; later ones continue it (no new sample)
            got = await self._continue(ctx, problem, request, text, appended, last, waits=waits)
            if got is None:
                break
            last, done = got
            text += done.text
            used += done.completion_tokens
            stopped_early = done.finish_reason == "stop" and used < self.min_tokens
            if not stopped_early or waits >= self.max_waits or ctx.meter.limit_reached(samples=False):
                break
            waits += 1
            appended = ("" if text.endswith((" ", "\n")) else " ") + self.wait
            text += appended
        if last and used >= self.max_tokens and not ctx.meter.limit_reached(samples=False):
            # the cap: end the thinking and ask for the answer
            text += self.answer_prompt
            request = ctx.request(
                problem, prefill=text, max_tokens=self.answer_tokens, temperature=0.0, stop=("\n",)
            )
            got = await self._continue(ctx, problem, request, text, self.answer_prompt, last, forced=True)
            if got is not None:
                last, done = got
                text += done.text
                used += done.completion_tokens
        if last is None:
            return Result(None, "")
        return Result(extract_answer(text, problem.format), text, node=last, response_tokens=used)

    async def _continue(
        self,
        ctx: Context,
        problem: Problem,
        request: GenerationRequest,
        text: str,
        shown: str,
        last: str | None,
        **meta: object,
    ) -> tuple[str, Completion] | None:
        """One continuation as a "step" node under the previous one, showing what ponder
        appended ("Wait") before the model's text; its answer is read from the whole text."""
        (got,) = await ctx.complete(
            [request], kind="step", parent=last, samples=last is None, lead=shown, meta=meta
        )
        if not got:
            return None
        ctx.trace.update(got[0].node, answer=extract_answer(text + got[0].completion.text, problem.format))
        return got[0].node, got[0].completion
