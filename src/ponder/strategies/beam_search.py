"""Step-level beam search guided by a process reward (Snell et al. 2024; Hugging Face
search-and-learn): keep `width` partial solutions, expand each `expand` ways by one step,
score the prefixes, keep the best `width`, until they are complete or `max_steps`.

One batched generate call per depth. Every expansion is a "step" node under the step it
extends, with its score and whether it was kept, so the kept nodes form a tree of
levels x width. Anytime: when the budget ends, the best complete solution wins, else the
best partial path's answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.context import Context
from ponder.problem import Problem
from ponder.strategies.base import COUNT, Result
from ponder.strategies.steps import Path, Steps, StepScorer, StepSearch, usable


@dataclass
class BeamSearch(StepSearch):
    name = "beam-search"
    summary = "Step-level beam search: expand `width` partial solutions `expand` ways, keep the best-scored."

    width: int = field(default=4, metadata={"help": "beams kept per step", **COUNT})
    expand: int = field(default=2, metadata={"help": "next steps sampled per beam", **COUNT})
    max_steps: int = field(default=8, metadata={"help": "deepest solution, in steps", "ge": 1})

    async def run(self, problem: Problem, ctx: Context) -> Result:
        steps = self.steps()
        score = StepScorer(self.scorer)
        beams, done, cut = [Path()], list[Path](), list[Path]()
        for depth in range(1, self.max_steps + 1):
            if ctx.meter.limit_reached():
                break
            grown = await steps.grow(ctx, problem, beams, [self.expand] * len(beams), seed=ctx.seed + depth)
            children = [path for group in grown for path in group]
            ok = [p for p in children if usable(p)]
            scored = await score(ctx, problem, steps, ok)
            keep = set(_top(scored, self.width))
            kept = [steps.record(ctx, problem, p, kept=i in keep) for i, p in enumerate(scored)]
            kept = [p for i, p in enumerate(kept) if i in keep]
            cut += [steps.record(ctx, problem, p, kept=False) for p in children if not usable(p)]
            if not kept:
                break  # the budget cut this whole level: the previous beams stand
            done += [p for p in kept if p.complete]
            beams = [p for p in kept if not p.complete]
            if not beams or len(done) >= self.width:
                break
        return _best(problem, steps, done, beams, cut)


def _top(paths: list[Path], k: int) -> list[int]:
    """Indices of the k best-scored distinct paths (a small model often repeats itself)."""
    seen: set[tuple[tuple[str, ...], bool]] = set()
    order = sorted(range(len(paths)), key=lambda i: -paths[i].score)
    picked: list[int] = []
    for i in order:
        key = (paths[i].steps, paths[i].complete)
        if key not in seen and len(picked) < k:
            seen.add(key)
            picked.append(i)
    return picked


def _best(problem: Problem, steps: Steps, done: list[Path], beams: list[Path], cut: list[Path]) -> Result:
    """The best complete solution; else the best-scored partial path that has an answer
    (budget-cut steps last, they are half-written)."""
    ranked = sorted(done, key=lambda p: -p.score) or [
        *sorted(beams, key=lambda p: -p.score),
        *sorted(cut, key=lambda p: -p.depth),
    ]
    best = next((p for p in ranked if steps.answer(problem, p)), ranked[0] if ranked else None)
    if best is None:
        return Result(None, "")
    return Result(steps.answer(problem, best), steps.text(best), best.score, best.node, best.tokens)
