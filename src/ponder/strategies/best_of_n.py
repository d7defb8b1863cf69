"""Best-of-N (rejection sampling with a verifier, e.g. Cobbe et al. 2021; Lightman et al.
2023): draw n candidates, score each with a verifier, keep the best, or let the scores
weight a vote over canonical answers (weighted best-of-N, as in search-and-learn).

Candidates are plain samples, or whole runs of an inner strategy (`of=`), which is how
strategies compose: `BestOfN(of=Refine(max_rounds=2), n=4)` scores four refined answers.
Without a verifier, the score is the mean token probability the model gave its own sample
(exp of the mean logprob): a weak, self-reported signal, and the trace says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ponder.context import Context
from ponder.problem import Problem
from ponder.strategies.base import COUNT, TEMPERATURE, TOP_P, Result, Strategy
from ponder.strategies.self_consistency import note_votes
from ponder.verifiers.base import Verifier
from ponder.vote import tally

#: seed stride between runs of an inner strategy, so their samples differ
SEED_STRIDE = 10_007


@dataclass
class Scored:
    answer: str | None
    text: str
    node: str
    tokens: int
    score: float | None = None
    finished: bool = True


@dataclass
class BestOfN(Strategy):
    name = "best-of-n"
    summary = "n candidates scored by a verifier (or mean logprob); keep the best, or vote weighted by score."

    n: int = field(default=8, metadata={"help": "candidates to draw", **COUNT})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature", **TEMPERATURE})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling", **TOP_P})
    weighted: bool = field(
        default=False, metadata={"help": "score-weighted vote over answers instead of the top score"}
    )
    of: Strategy | None = field(
        default=None, metadata={"help": "the strategy each candidate is a run of (default: one sample)"}
    )
    verifier: Verifier | None = field(
        default=None, metadata={"help": "scores the candidates (default: the request's verifier)"}
    )

    async def run(self, problem: Problem, ctx: Context) -> Result:
        verifier = self.verifier or ctx.verifier
        pool = await (
            self._inner(problem, ctx, verifier) if self.of else self._samples(problem, ctx, verifier)
        )
        if verifier is not None:
            for cand in pool:
                verdict, _ = await ctx.verify(problem, cand.text, cand.node, verifier)
                cand.score = verdict.score
                if ctx.meter.limit_reached(samples=False):  # verdicts are no samples
                    break  # unscored candidates keep score None and lose to scored ones
        else:
            how = "the inner strategy's own score" if self.of else "mean token probability (exp mean logprob)"
            ctx.note("note", f"no verifier: candidates scored by {how}")
        return self._choose(pool, ctx)

    async def _samples(self, problem: Problem, ctx: Context, verifier: Verifier | None) -> list[Scored]:
        samples = await ctx.sample(
            problem, self.n, temperature=self.temperature, top_p=self.top_p, logprobs=verifier is None
        )
        pool = []
        for s in samples:
            lp = s.mean_logprob
            score = math.exp(lp) if verifier is None and lp is not None and math.isfinite(lp) else None
            pool.append(Scored(s.answer, s.text, s.node, s.completion.completion_tokens, score, s.finished))
        return pool

    async def _inner(self, problem: Problem, ctx: Context, verifier: Verifier | None) -> list[Scored]:
        assert self.of is not None
        pool = []
        for i in range(self.n):
            if ctx.meter.limit_reached():
                break
            node = ctx.note("sample", f"{self.of.spec()} #{i + 1}", strategy=self.of.spec(), index=i)
            child = replace(ctx.child(node), seed=ctx.seed + SEED_STRIDE * i, verifier=verifier)
            result = await self.of.run(problem, child)
            if result.response or result.answer:
                pool.append(
                    Scored(result.answer, result.response, node, result.response_tokens, result.score)
                )
        return pool

    def _choose(self, pool: list[Scored], ctx: Context) -> Result:
        finished = [c for c in pool if c.finished] or pool
        if not finished:
            return Result(None, "")
        if self.weighted:
            scored = any(c.score is not None for c in finished)
            weights = [(c.score or 0.0) if scored else 1.0 for c in finished]
            votes = tally((c.answer for c in finished), weights)
            winner = votes.winner
            node = note_votes(ctx, votes, len(finished), ".3g", method="score-weighted")
            backing = [c for c in finished if c.answer == winner] or finished
            best = _first_best(backing)
            return Result(winner, best.text, score=votes.share(), node=node, response_tokens=best.tokens)
        best = _first_best(finished)
        ctx.note(
            "vote",
            f"best score {best.score}",
            parent=best.node,
            answer=best.answer,
            score=best.score,
            scores=[c.score for c in finished],
            method="best",
        )
        return Result(best.answer, best.text, score=best.score, node=best.node, response_tokens=best.tokens)


def _first_best(pool: list[Scored]) -> Scored:
    """Highest score, ties (and unscored candidates) going to the earliest."""
    best = pool[0]
    for cand in pool[1:]:
        if cand.score is not None and (best.score is None or cand.score > best.score):
            best = cand
    return best
