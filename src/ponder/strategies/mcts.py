"""Monte Carlo tree search over solution steps (UCT, Kocsis & Szepesvári 2006, as used for
LLM reasoning by rStar and optillm's mcts). Each iteration:

1. select: from the root, follow the child with the highest UCT, Q + c * sqrt(ln N_parent / N),
   unvisited children first, until a leaf;
2. expand: a visited, unfinished leaf gets `expand` sampled next steps (one batched request),
   each scored; the best-scored new step becomes the leaf;
3. evaluate: the leaf's value is its step score ("score"), or a rollout to the end of the
   solution scored by the scorer ("rollout") or by how many earlier rollouts reached the
   same answer ("agreement"); a leaf is valued once, except that an agreement value is
   re-read on every visit (later rollouts change how many agree with it);
4. back up: every node from the leaf to the root gets one more visit and the value.

So the root's visits equal the iterations run, and a node's visits are the sum of its
children's plus the iterations that ended at it (`leaf_visits`). The answer is the complete
solution (a finished path in the tree, or a rollout) whose node has the most visits, then
the highest mean value; anytime, when the budget ends before any, the most visited path.

Trace: nodes are append-only, so each step is written when created (score = its step score)
and each rollout as a "sample" under its leaf; visit counts and value sums live in memory
and go into one final "note" node (`meta["tree"]`, keyed by step node id).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from ponder.context import Context
from ponder.problem import Problem
from ponder.strategies.base import COUNT, Result
from ponder.strategies.steps import Path, StepScorer, StepSearch, usable

Value = Literal["rollout", "agreement", "score"]


@dataclass(eq=False)
class Node:
    path: Path
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value: float = 0.0  # sum of backed-up values
    leaf_visits: int = 0
    estimate: float | None = None  # the value it got as a leaf
    solution: Path | None = None  # its rollout (or itself, when finished)

    @property
    def q(self) -> float:
        return self.value / self.visits if self.visits else self.path.score

    def walk(self) -> list[Node]:
        return [self, *(n for child in self.children for n in child.walk())]


@dataclass
class MCTS(StepSearch):
    name = "mcts"
    summary = "Monte Carlo tree search over steps: UCT selection, sampled steps, rollout or reward values."

    iterations: int = field(default=16, metadata={"help": "select-expand-evaluate-backup rounds", **COUNT})
    expand: int = field(default=3, metadata={"help": "next steps sampled when a leaf is expanded", **COUNT})
    c: float = field(default=1.0, metadata={"help": "UCT exploration weight", "ge": 0})
    max_steps: int = field(default=8, metadata={"help": "deepest solution, in steps", "ge": 1})
    value: Value = field(
        default="rollout",
        metadata={"help": "leaf value: rollout (scored), agreement (of rollout answers) or score"},
    )

    async def run(self, problem: Problem, ctx: Context) -> Result:
        search = _Search(self, problem, ctx)
        root, done = Node(Path()), 0
        for it in range(self.iterations):
            if ctx.meter.limit_reached():
                break
            leaf = self.select(root)
            if not self.terminal(leaf) and (leaf.visits or leaf is root):
                children = await search.expand(leaf, seed=ctx.seed + it)
                if not children:
                    break  # the budget cut the expansion short
                leaf = max(children, key=lambda n: n.path.score)
            value = await search.evaluate(leaf, seed=ctx.seed + it)
            self.backup(leaf, value)
            done += 1
        ctx.note(
            "note",
            f"mcts: {done} iterations, {len(root.walk()) - 1} steps in the tree",
            iterations=done,
            root={"visits": root.visits, "value": root.value, "leaf_visits": root.leaf_visits},
            tree={
                n.path.node: {
                    "parent": n.parent.path.node if n.parent else None,
                    "visits": n.visits,
                    "value": n.value,
                    "leaf_visits": n.leaf_visits,
                }
                for n in root.walk()[1:]
            },
        )
        return search.best(root)

    def select(self, node: Node) -> Node:
        while node.children:
            parent = node
            node = max(parent.children, key=lambda ch: self.uct(ch, parent))
        return node

    def uct(self, child: Node, parent: Node) -> tuple[bool, float]:
        """Unvisited children first (best step score first), then Q + exploration."""
        if child.visits == 0:
            return True, child.path.score
        return False, child.q + self.c * math.sqrt(math.log(parent.visits) / child.visits)

    def terminal(self, node: Node) -> bool:
        return node.path.complete or node.path.depth >= self.max_steps

    @staticmethod
    def backup(leaf: Node, value: float) -> None:
        leaf.leaf_visits += 1
        node: Node | None = leaf
        while node is not None:
            node.visits += 1
            node.value += value
            node = node.parent


@dataclass
class _Search:
    """The engine-facing half of MCTS: expansions, rollouts and the final pick."""

    mcts: MCTS
    problem: Problem
    ctx: Context
    answers: list[str | None] = field(default_factory=list)
    cut: list[Path] = field(default_factory=list)  # steps the budget cut short

    def __post_init__(self) -> None:
        m = self.mcts
        self.steps = m.steps()
        self.score = StepScorer(m.scorer)

    async def expand(self, node: Node, *, seed: int) -> list[Node]:
        m, steps = self.mcts, self.steps
        (paths,) = await steps.grow(self.ctx, self.problem, [node.path], [m.expand], seed=seed)
        fresh = [
            p for i, p in enumerate(paths) if usable(p) and (p.steps, p.complete) not in _keys(paths[:i])
        ]
        for path in paths:
            if not usable(path):
                self.cut.append(steps.record(self.ctx, self.problem, path, cut=True))
            elif all(path is not f for f in fresh):
                steps.record(self.ctx, self.problem, path, duplicate=True)
        for path in await self.score(self.ctx, self.problem, steps, fresh):
            node.children.append(Node(steps.record(self.ctx, self.problem, path), node))
        return node.children

    async def evaluate(self, leaf: Node, *, seed: int) -> float:
        if leaf.estimate is None:
            leaf.estimate = await self._estimate(leaf, seed)
        elif self.mcts.value == "agreement" and leaf.solution is not None:
            leaf.estimate = self._agreement(self.steps.answer(self.problem, leaf.solution))
        return leaf.estimate

    def _agreement(self, answer: str | None) -> float:
        return self.answers.count(answer) / len(self.answers) if answer and self.answers else 0.0

    async def _estimate(self, leaf: Node, seed: int) -> float:
        path = leaf.path
        if self.mcts.value == "score" and not path.complete:
            return path.score
        solution = path if path.complete else await self._rollout(path, seed)
        if solution is None:
            return path.score  # the budget cut the rollout: fall back on the step score
        leaf.solution = solution
        answer = self.steps.answer(self.problem, solution)
        self.answers.append(answer)
        return self._agreement(answer) if self.mcts.value == "agreement" else solution.score

    async def _rollout(self, path: Path, seed: int) -> Path | None:
        """Finish the solution from `path` in one sample, written as a "sample" node under it."""
        m, steps, ctx = self.mcts, self.steps, self.ctx
        (group,) = await steps.grow(ctx, self.problem, [path], [1], seed=seed, to_end=True, kind="sample")
        if not group or not usable(group[0]):
            return None
        solution = group[0]
        solution = replace(solution, complete=True)
        if m.value == "rollout":
            (solution,) = await self.score(ctx, self.problem, steps, [solution])
        ctx.trace.update(
            solution.node or "",
            answer=steps.answer(self.problem, solution),
            score=solution.score if m.value == "rollout" else None,
            meta={"rollout": True},
        )
        return solution

    def best(self, root: Node) -> Result:
        finished = [n for n in root.walk() if n.solution is not None]
        if finished:
            node = max(finished, key=lambda n: (n.visits, n.q))
            return self._result(node.solution)  # type: ignore[arg-type]
        node = root
        while node.children:  # anytime: the most visited path so far
            node = max(node.children, key=lambda n: (n.visits, n.q))
        if node is root and self.cut:  # not one step finished: the longest half-written one
            node = Node(max(self.cut, key=lambda p: p.tokens))
        return self._result(node.path) if node is not root else Result(None, "")

    def _result(self, path: Path) -> Result:
        steps = self.steps
        return Result(steps.answer(self.problem, path), steps.text(path), path.score, path.node, path.tokens)


def _keys(paths: list[Path]) -> set[tuple[tuple[str, ...], bool]]:
    return {(p.steps, p.complete) for p in paths}
