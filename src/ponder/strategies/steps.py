"""Steps, shared by the step-level searches (beam-search, mcts, particle-filter): what a step
is, how to ask for the next one, when a solution is done, and how a partial solution scores.

A step is text up to a delimiter: a blank line by default, a single line, any literal string,
or "Step k:" markers. The next step is a continuation of the partial assistant message
(`prefill`) that stops at the delimiter, so one batched request expands a path n ways.

When is a solution complete? An engine's finish reason "stop" does not say whether the
delimiter or the end of text stopped it, so a path is complete when a step holds an answer
line ("Answer: ...", "the answer is ...", \\boxed{}), when the step's last logprob token is
an end-of-text token (<|im_end|>, </s>, <eos>, ...: the embedded engine reports it), or
when asking for its next step yields nothing (the model ends at once). Small models ignore
formats: a step that never ends is cut at `max_step_tokens`, and the searches bound depth by
`max_steps`.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from ponder.context import Context
from ponder.engines.base import Completion, GenerationRequest
from ponder.extract import extract_answer, final_answer_text
from ponder.problem import Problem
from ponder.strategies.base import TEMPERATURE, TOP_P, Strategy
from ponder.trace import NodeKind
from ponder.verifiers.model import Reward

ScorerName = Literal["auto", "prm", "verifier", "logprob"]

_EOS = re.compile(r"^(?:<\|?[^<>\s]*(?:end|eos|eot)[^<>\s]*\|?>|</s>)$", re.IGNORECASE)
_HINTS = {
    "step": " Number your steps 'Step 1:', 'Step 2:', and so on, one per line.",
    "\n\n": " Separate your steps with a blank line.",
    "\n": " Write one step per line.",
}


@dataclass(frozen=True)
class Path:
    """A partial or complete solution: its steps, its score (the value of the prefix), the
    trace node of its last step, and what it cost. Immutable, so copies (resampled
    particles, beams) share history safely."""

    steps: tuple[str, ...] = ()
    score: float = 0.5
    complete: bool = False
    node: str | None = None
    tokens: int = 0
    logprob: float = 0.0
    logprob_tokens: int = 0
    last: Completion | None = None

    @property
    def depth(self) -> int:
        return len(self.steps)

    @property
    def ended(self) -> bool:
        """The last expansion was the model saying it has nothing to add (an "end" node)."""
        return self.last is not None and not self.last.text.strip()


@dataclass(frozen=True)
class Steps:
    """How solutions are cut into steps and extended one step at a time."""

    delimiter: str = "blank"
    max_step_tokens: int = 96
    temperature: float = 0.8
    top_p: float = 0.95

    @property
    def marker(self) -> bool:
        return self.delimiter == "step"

    @property
    def separator(self) -> str:
        """What goes between steps in the text; "step" mode puts each "Step k:" on a new line."""
        if self.marker:
            return "\n"
        named = {"blank": "\n\n", "line": "\n"}
        return named.get(self.delimiter, self.delimiter.replace("\\n", "\n"))

    @property
    def stop(self) -> str:
        return "\nStep " if self.marker else self.separator

    def text(self, path: Path) -> str:
        return self.separator.join(path.steps)

    def prefix(self, path: Path) -> str:
        """The prefill that asks for the next step: the steps so far, then the separator."""
        return self.text(path) + self.separator if path.steps else ""

    def split(self, text: str) -> list[str]:
        """A whole solution's steps, e.g. to score a finished sample step by step."""
        if self.marker:
            parts = re.split(r"\n(?=\s*Step \d+)", text)
        elif self.separator == "\n\n":
            parts = re.split(r"\n\s*\n", text)
        else:
            parts = text.split(self.separator)
        return [p.strip("\n") for p in parts if p.strip()]

    def request(
        self,
        ctx: Context,
        problem: Problem,
        path: Path,
        n: int,
        *,
        seed: int | None = None,
        to_end: bool = False,
    ) -> GenerationRequest:
        """n continuations of `path`: the next step, or (`to_end`) the rest of the solution."""
        base = ctx.request(problem)
        messages = base.messages
        if messages and messages[0]["role"] == "system":
            hint = _HINTS.get("step" if self.marker else self.separator, "")
            messages = [{**messages[0], "content": messages[0]["content"] + hint}, *messages[1:]]
        return replace(
            base,
            messages=messages,
            prefill=self.prefix(path),
            n=n,
            max_tokens=max(16, ctx.max_tokens - path.tokens) if to_end else self.max_step_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(base.stop) if to_end else (*base.stop, self.stop),
            seed=seed,
            logprobs=True,
        )

    async def grow(
        self,
        ctx: Context,
        problem: Problem,
        paths: Sequence[Path],
        counts: Sequence[int],
        *,
        seed: int | None,
        to_end: bool = False,
        kind: NodeKind = "step",
    ) -> list[list[Path]]:
        """`counts[i]` continuations of each `paths[i]` in one batched call, each written as
        a `kind` node under the path's last step as it is generated; per path, the grown
        paths (fewer when the budget cut the call)."""
        asks = zip(paths, counts, strict=True)
        requests = [self.request(ctx, problem, p, k, seed=seed, to_end=to_end) for p, k in asks]
        groups = await ctx.complete(requests, kind=kind, parent=[p.node for p in paths])
        grown = zip(paths, groups, strict=True)
        return [[self.extend(p, g.completion, g.node) for g in group] for p, group in grown]

    def extend(self, path: Path, completion: Completion, node: str | None = None) -> Path:
        """The path with one more step (not yet scored), written as `node`; an empty step
        means the model ended: the path is complete and keeps its score."""
        lps = [t.logprob for t in completion.logprobs or () if math.isfinite(t.logprob)]
        grown = replace(
            path,
            tokens=path.tokens + completion.completion_tokens,
            logprob=path.logprob + sum(lps),
            logprob_tokens=path.logprob_tokens + len(lps),
            last=completion,
            node=node,
        )
        step = completion.text.rstrip()
        if not step.strip():
            return replace(grown, complete=completion.finish_reason == "stop")
        tokens = completion.logprobs or []
        eos = (
            completion.finish_reason == "stop" and bool(tokens) and bool(_EOS.match(tokens[-1].token.strip()))
        )
        return replace(grown, steps=(*path.steps, step), complete=eos or final_answer_text(step) is not None)

    def answer(self, problem: Problem, path: Path) -> str | None:
        return extract_answer(self.text(path), problem.format) if path.steps else None

    def record(self, ctx: Context, problem: Problem, path: Path, **meta: object) -> Path:
        """Finish the node of the path's newest step (written while it was generated): the
        step's text, its score and answer; an "end" node (empty text) marks where the
        model finished."""
        if path.node is None or path.last is None:
            return path
        ctx.trace.update(
            path.node,
            text="" if path.ended or not path.steps else path.steps[-1],
            answer=self.answer(problem, path) if path.complete else None,
            score=path.score,
            meta={
                "depth": path.depth + path.ended,  # an end node sits one level below the step it ends
                "complete": path.complete,
                "end": path.ended,
                **meta,
            },
        )
        return path


@dataclass(kw_only=True)
class StepSearch(Strategy):
    """The parameters the step-level searches share: how a step is cut and sampled, and how a
    partial solution is scored. It has no `name`, so it is no strategy of its own."""

    delimiter: str = field(
        default="blank", metadata={"help": "step boundary: blank, line, step or a string", "min_length": 1}
    )
    max_step_tokens: int = field(default=96, metadata={"help": "tokens per step before it is cut", "ge": 1})
    scorer: ScorerName = field(default="auto", metadata={"help": "prm, verifier, logprob or auto"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature", **TEMPERATURE})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling", **TOP_P})

    def steps(self) -> Steps:
        return Steps(self.delimiter, self.max_step_tokens, self.temperature, self.top_p)


def usable(path: Path) -> bool:
    """The newest step was finished by the engine (not cut by the budget or an error)."""
    return path.last is not None and path.last.finish_reason in ("stop", "length")


@dataclass(frozen=True)
class StepScorer:
    """The value of a partial solution in [0, 1].

    - "prm": a process reward from the engine itself: `ponder.verifiers.model.Reward`'s
      P("Yes") to "is this answer correct?" on the partial solution;
    - "verifier": `ctx.verifier`'s score on the partial solution;
    - "logprob": exp(mean token logprob) of the path, free but only the model's confidence;
    - "auto": the verifier when there is one, else "prm".
    Scores are verdicts recorded under the step they score (`Context.verify`), so a reward
    model's tokens are the request's: charged to the meter, not samples. Once the budget is
    spent, or when the engine returns no Yes/No logprobs, scores fall back to "logprob".
    """

    how: ScorerName = "auto"

    async def __call__(
        self, ctx: Context, problem: Problem, steps: Steps, paths: Sequence[Path]
    ) -> list[Path]:
        """The paths with scores; "end" paths keep the score of the solution they finish."""
        todo = [i for i, p in enumerate(paths) if p.steps and not p.ended and p.node is not None]
        how = self.how if self.how != "auto" else ("verifier" if ctx.verifier is not None else "prm")
        verifier = ctx.verifier if how == "verifier" else Reward(ctx.engine) if how == "prm" else None
        scores: list[float | None] = [None] * len(todo)
        if todo and verifier is not None and ctx.meter.limit_reached(samples=False) is None:
            verdicts = await asyncio.gather(
                *(ctx.verify(problem, steps.text(paths[i]), paths[i].node or "", verifier) for i in todo)
            )
            if how == "verifier":
                scores = [v.score for v, _ in verdicts]
            else:  # a reward model that said neither Yes nor No gives no score
                scores = [v.details.get("p_yes") for v, _ in verdicts]
        out = list(paths)
        for i, s in zip(todo, scores, strict=True):
            out[i] = replace(paths[i], score=s if s is not None else confidence(paths[i]))
        return out


def confidence(path: Path) -> float:
    """exp(mean token logprob) of the path: the cheapest, self-reported score."""
    return math.exp(path.logprob / path.logprob_tokens) if path.logprob_tokens else 0.5
