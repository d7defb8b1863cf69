"""Particle filtering over solution steps (Puri et al. 2025, "A probabilistic inference
approach to inference-time scaling of LLMs"; as in its_hub): inference as sampling from the
model's distribution tilted by a process reward, instead of searching for the reward's top.

    particles <- `particles` empty solutions
    repeat until all are finished or `max_steps`:
        advance each unfinished particle by one sampled step
        weight_i <- softmax(logit(reward_i) / weight_temperature)   (finished ones keep theirs)
        particles <- resample(particles, weight)                     (multinomial or systematic)
    answer <- the highest-weighted finished particle, or a weighted vote over them

Copies of one particle share their history, so they are advanced by one request with n =
copies. Trace: each new step is a "step" node under the step it extends (a resampled
particle's copies all hang under it), with its reward as score and its weight in meta; each
round's resampling is a "note" node with the weights and the ancestors drawn.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

from ponder.context import Context
from ponder.problem import Problem
from ponder.strategies.base import COUNT, Result
from ponder.strategies.steps import Path, Steps, StepScorer, StepSearch, usable
from ponder.vote import tally

Resampler = Literal["multinomial", "systematic"]
Pick = Literal["weight", "vote"]


@dataclass
class ParticleFilter(StepSearch):
    name = "particle-filter"
    summary = (
        "Particles advanced step by step, weighted by a process reward and resampled (Puri et al. 2025)."
    )

    particles: int = field(default=4, metadata={"help": "number of particles", **COUNT})
    max_steps: int = field(default=8, metadata={"help": "deepest solution, in steps", "ge": 1})
    weight_temperature: float = field(
        default=1.0, metadata={"help": "softmax temperature on reward logits", "gt": 0}
    )
    resample: Resampler = field(default="multinomial", metadata={"help": "resampler"})
    pick: Pick = field(default="weight", metadata={"help": "top weight or weighted vote"})

    async def run(self, problem: Problem, ctx: Context) -> Result:
        steps = self.steps()
        score, rng = StepScorer(self.scorer), random.Random(ctx.seed)
        particles, cut = [Path()] * self.particles, list[Path]()
        for depth in range(1, self.max_steps + 1):
            if all(p.complete for p in particles) or ctx.meter.limit_reached():
                break
            advanced = await self.advance(particles, steps, score, problem, ctx, cut, seed=ctx.seed + depth)
            if advanced is None:
                break  # the budget cut this round: the last resampled particles stand
            particles = advanced
            weights = self.weights(particles)
            ancestors = self.draw(weights, rng)
            ctx.note(
                "note",
                f"resample at step {depth}",
                depth=depth,
                weights=[round(w, 4) for w in weights],
                ancestors=ancestors,
            )
            particles = [particles[i] for i in ancestors]
        return self.answer(particles, cut, steps, problem, ctx)

    async def advance(
        self,
        particles: list[Path],
        steps: Steps,
        score: StepScorer,
        problem: Problem,
        ctx: Context,
        cut: list[Path],
        *,
        seed: int,
    ) -> list[Path] | None:
        """Each unfinished particle one step further; copies of a particle share one request."""
        copies: dict[int, list[int]] = {}
        for i, p in enumerate(particles):
            if not p.complete:
                copies.setdefault(id(p), []).append(i)
        groups = list(copies.values())
        grown_groups = await steps.grow(
            ctx, problem, [particles[g[0]] for g in groups], [len(g) for g in groups], seed=seed
        )
        grown = {
            i: path
            for g, paths in zip(groups, grown_groups, strict=True)
            for i, path in zip(g, paths, strict=False)  # the samples budget may clamp n
        }
        for p in grown.values():
            if not usable(p):
                cut.append(steps.record(ctx, problem, p, cut=True))
        if not any(usable(p) for p in grown.values()):
            return None
        fresh = [i for i, p in grown.items() if usable(p)]
        scored = dict(zip(fresh, await score(ctx, problem, steps, [grown[i] for i in fresh]), strict=True))
        out = [scored.get(i, p) for i, p in enumerate(particles)]
        weights = self.weights(out)
        for i in fresh:
            out[i] = steps.record(ctx, problem, out[i], weight=round(weights[i], 4))
        return out

    def weights(self, particles: list[Path]) -> list[float]:
        """softmax(logit(reward) / temperature), as its_hub does."""
        logits = [_logit(p.score) / self.weight_temperature for p in particles]
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        return [e / sum(exps) for e in exps]

    def draw(self, weights: list[float], rng: random.Random) -> list[int]:
        """Ancestor indices: multinomial draws, or systematic (one uniform offset, lower variance)."""
        n = len(weights)
        if self.resample == "multinomial":
            return rng.choices(range(n), weights=weights, k=n)
        u, cumulative, i, out = rng.random() / n, weights[0], 0, []
        for k in range(n):
            while u + k / n > cumulative and i < n - 1:
                i += 1
                cumulative += weights[i]
            out.append(i)
        return out

    def answer(
        self, particles: list[Path], cut: list[Path], steps: Steps, problem: Problem, ctx: Context
    ) -> Result:
        # anytime: when no particle finished, the unfinished ones
        pool = [p for p in particles if p.complete] or particles
        weights = self.weights(pool)
        best = max(range(len(pool)), key=lambda i: weights[i])
        if self.pick == "vote":
            answers = [steps.answer(problem, p) for p in pool]
            votes = tally(answers, weights)
            ctx.note("vote", ", ".join(f"{a}: {w:.3g}" for a, w in votes.totals.items()), answer=votes.winner)
            best = max(
                (i for i in range(len(pool)) if answers[i] == votes.winner),
                key=lambda i: weights[i],
                default=best,
            )
        path = pool[best]
        if not path.steps and cut:  # not one step finished: the longest half-written one
            path = max(cut, key=lambda p: p.tokens)
        return Result(steps.answer(problem, path), steps.text(path), path.score, path.node, path.tokens)


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))
