"""Refine (Reflexion, Shinn et al. 2023; Self-Refine, Madaan et al. 2023): draft, check,
turn what the check found into a revision request, repeat.

    draft = sample(problem)
    for round in 0..max_rounds:
        verdict = verify(draft)            # failing test, lint finding, judge critique
        if verdict.passed: break
        draft = revise(problem, draft, verdict.feedback)
    return the best-scoring draft so far   # anytime: every draft is kept

The trace is a chain: sample -> verdict -> revision -> verdict -> revision -> ...

Without a verifier the model critiques its own draft (a "critique" node) and the critique is
the feedback; a draft passes when the critique says it is correct. Small models are poor
judges of their own work, so with no verifier Refine returns the latest revision (as
Self-Refine does) and gives it no score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ponder.context import Candidate, Context
from ponder.engines.base import GenerationRequest, Message
from ponder.problem import Problem
from ponder.prompts import revision_messages, solve_messages, solve_prompt
from ponder.strategies.base import TEMPERATURE, Result, Strategy
from ponder.verifiers.base import Verdict, Verifier

CRITIQUE_REQUEST = (
    "Check your answer above step by step. If it is fully correct, reply with the single word CORRECT. "
    "Otherwise, list the mistakes briefly."
)
_CORRECT = re.compile(r"^\W*correct\b", re.IGNORECASE)


@dataclass
class Refine(Strategy):
    name = "refine"
    summary = "Draft, verify, revise from the verifier's feedback until it passes (self-critique if none)."

    max_rounds: int = field(default=3, metadata={"help": "revisions after the first draft", "ge": 0})
    temperature: float = field(
        default=0.7, metadata={"help": "sampling temperature of drafts and revisions", **TEMPERATURE}
    )
    critique_tokens: int = field(
        default=128, metadata={"help": "token cap of a self-critique (no verifier)", "ge": 1}
    )
    verifier: Verifier | None = field(
        default=None, metadata={"help": "checks each version (default: the request's verifier)"}
    )

    async def run(self, problem: Problem, ctx: Context) -> Result:
        verifier = self.verifier or ctx.verifier
        drafts = await ctx.sample(problem, 1, temperature=self.temperature)
        if not drafts:
            return Result(None, "")
        draft = drafts[0]
        best, best_score = draft, -1.0
        for round in range(self.max_rounds + 1):
            verdict, verdict_node = await self._check(problem, draft, ctx, verifier)
            if verdict is None:  # the budget ran out before the check
                break
            # ties keep the earlier version; a revision that lost the answer does not replace one that had it
            keeps_answer = draft.answer is not None or best.answer is None
            if (verifier is None and keeps_answer) or (verifier is not None and verdict.score > best_score):
                best, best_score = draft, verdict.score
            if verdict.passed or round == self.max_rounds or ctx.meter.limit_reached():
                break
            revised = await self._revise(problem, draft, verdict.feedback, verdict_node, ctx, round + 1)
            if revised is None or not revised.completion.completion_tokens:
                break
            draft = revised
        score = None if verifier is None or best_score < 0 else best_score
        return Result(
            best.answer,
            best.text,
            score=score,
            node=best.node,
            response_tokens=best.completion.completion_tokens,
        )

    async def _check(
        self, problem: Problem, draft: Candidate, ctx: Context, verifier: Verifier | None
    ) -> tuple[Verdict | None, str]:
        """The verifier's verdict on a draft, or the model's critique of it; returns the node
        the next revision hangs from."""
        if verifier is not None:
            return await ctx.verify(problem, draft.text, draft.node, verifier)
        if ctx.meter.limit_reached():
            return None, draft.node
        request = _follow_up(
            ctx, problem, draft.text, CRITIQUE_REQUEST, self.critique_tokens, temperature=0.0
        )
        (critiques,) = await ctx.complete([request], kind="critique", parent=draft.node)
        if not critiques:
            return None, draft.node
        critique = critiques[0]
        passed = bool(_CORRECT.match(critique.completion.text))
        ctx.trace.update(critique.node, meta={"passed": passed})
        verdict = Verdict(score=1.0 if passed else 0.0, passed=passed, feedback=critique.completion.text)
        return verdict, critique.node

    async def _revise(
        self, problem: Problem, draft: Candidate, feedback: str, parent: str, ctx: Context, round: int
    ) -> Candidate | None:
        feedback = feedback.strip() or "The answer did not pass the check."
        request = (
            GenerationRequest(
                messages=revision_messages(problem, draft.text, feedback),
                max_tokens=ctx.max_tokens,
                temperature=self.temperature,
                top_p=0.95,
                seed=ctx.seed + round,
            )
            if ctx.chat
            else _follow_up(
                ctx,
                problem,
                draft.text,
                f"Feedback: {feedback}\nCorrected solution:",
                ctx.max_tokens,
                temperature=self.temperature,
            )
        )
        (revisions,) = await ctx.complete(
            [request],
            kind="revision",
            parent=parent,
            problem=problem,
            meta={"round": round, "feedback": feedback},
        )
        return ctx.candidate(revisions[0]) if revisions else None


def _follow_up(
    ctx: Context, problem: Problem, draft: str, ask: str, max_tokens: int, *, temperature: float
) -> GenerationRequest:
    """A request that shows the model its draft and asks something about it."""
    if ctx.chat:
        messages: list[Message] = [
            *solve_messages(problem),
            {"role": "assistant", "content": draft},
            {"role": "user", "content": ask},
        ]
        return GenerationRequest(
            messages=messages, max_tokens=max_tokens, temperature=temperature, seed=ctx.seed
        )
    prompt = f"{solve_prompt(problem)} {draft.strip()}\n\n{ask}"
    return GenerationRequest(
        prompt=prompt, max_tokens=max_tokens, temperature=temperature, seed=ctx.seed, stop=("\nQuestion:",)
    )
