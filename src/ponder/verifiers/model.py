"""Model-based verifiers: an LLM judge's score, and a reward read from token logprobs.

`Reward` needs no trained reward head: P("Yes") to "Is this answer correct?" from the
engine's top logprobs turns any engine that reports them (the embedded llama.cpp one
included) into an outcome/process reward model, for whole answers and (the step searches'
"prm" scorer) for partial solutions alike.

Their tokens are the request's: inside `Context.verify` they generate through the
request's context (`generating_through`), which charges its meter and writes their
generations as trace nodes; called on their own (a user's script) they call their engine.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from ponder.engines.base import Completion, GenerationRequest, Message, TokenLogprob
from ponder.problem import Problem
from ponder.verifiers.base import Verdict

if TYPE_CHECKING:
    from ponder.engines.base import Engine

Generate = Callable[["Engine", Sequence[GenerationRequest]], Awaitable[list[list[Completion]]]]
"""Generate on an engine, metered and recorded by whoever provides it (a request's context)."""

_through: contextvars.ContextVar[Generate | None] = contextvars.ContextVar("ponder_generate", default=None)


@contextlib.contextmanager
def generating_through(generate: Generate) -> Iterator[None]:
    """Model verifiers called inside this block (composites and concurrent tasks
    included: asyncio copies the context into the tasks it starts) generate via `generate`."""
    token = _through.set(generate)
    try:
        yield
    finally:
        _through.reset(token)


async def _ask(
    engine: Engine, system: str | None, user: str, max_tokens: int, top_logprobs: int = 0
) -> Completion | None:
    """One greedy answer to `user` (with top logprobs if asked), chat or raw as the engine
    wants, through the current request's context when there is one; None when the budget
    gave it no tokens."""
    if getattr(engine, "chat", True):
        messages: list[Message] = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        request = GenerationRequest(messages=messages)
    else:
        request = GenerationRequest(prompt=f"{system}\n\n{user}\n" if system else f"{user}\n")
    request = replace(
        request, max_tokens=max_tokens, temperature=0.0, logprobs=top_logprobs > 0, top_logprobs=top_logprobs
    )
    through = _through.get()
    groups = await (through(engine, [request]) if through is not None else engine.generate([request]))
    return groups[0][0] if groups and groups[0] else None


JUDGE_SYSTEM = (
    "You are a strict, fair grader. Judge whether the answer correctly and completely solves "
    "the question. Briefly explain the main problems, if any, then give a score."
)
JUDGE_USER = (
    "Question:\n{question}\n\n{reference}Answer to grade:\n{answer}\n\n"
    "Give a short critique, then end with a line of the form 'Score: N' where N is an integer "
    "from {low} (wrong) to {high} (fully correct)."
)
REWARD_USER = "Question:\n{question}\n\nAnswer:\n{answer}\n\nIs this answer correct? Answer Yes or No."

_NUM = r"(-?\d+(?:\.\d+)?)"
_SCORE_PATTERNS = [
    re.compile(
        rf"(?:score|rating|grade)\s*(?:is|of|:|=)?\s*\**\s*{_NUM}\s*\**\s*(?:/\s*{_NUM}|out of\s*{_NUM})?",
        re.I,
    ),
    re.compile(rf"{_NUM}\s*(?:/|out of)\s*{_NUM}", re.I),
    re.compile(rf"\[\[\s*{_NUM}\s*\]\]"),
]


def parse_score(text: str, low: float = 1, high: float = 10) -> float | None:
    """The judge's score normalized to 0..1, or None when the text has none.

    Looks for the last "Score: 7", "Rating: 8/10", "7 out of 10", "[[7]]"; then a last line
    that is only a number. A stated denominator ("4/5") rescales to that scale. Numbers in
    passing (list items, quoted answers) are not scores: better no score than a made-up one.
    """
    for pattern in _SCORE_PATTERNS:
        matches = list(pattern.finditer(text))
        for m in reversed(matches):
            groups = [g for g in m.groups() if g is not None]
            value = float(groups[0])
            if len(groups) > 1:
                denominator = float(groups[1])
                if denominator <= 0:
                    continue
                value, scale_low, scale_high = value / denominator, 0.0, 1.0
            else:
                scale_low, scale_high = low, high
            if scale_low <= value <= scale_high:
                return (value - scale_low) / (scale_high - scale_low)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    bare = re.fullmatch(rf"[^\w\d-]*{_NUM}[^\w\d]*", lines[-1].strip()) if lines else None
    if bare and low <= float(bare[1]) <= high:  # a last line that is only a number ("**8**")
        return (float(bare[1]) - low) / (high - low)
    return None


class Judge:
    """Asks the engine to grade the answer on a `low`..`high` scale; its critique is the
    feedback. Passes at `threshold` (normalized 0..1)."""

    def __init__(
        self,
        engine: Engine,
        low: int = 1,
        high: int = 10,
        threshold: float = 0.7,
        max_tokens: int = 384,
        name: str = "judge",
    ) -> None:
        self.engine = engine
        self.low, self.high = low, high
        self.threshold = threshold
        self.max_tokens = max_tokens
        self.name = name

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        reference = f"Reference answer:\n{problem.gold}\n\n" if problem.gold else ""
        user = JUDGE_USER.format(
            question=problem.question, reference=reference, answer=candidate, low=self.low, high=self.high
        )
        completion = await _ask(self.engine, JUDGE_SYSTEM, user, self.max_tokens)
        if completion is None:
            return Verdict(0.0, False, "the budget ended before the judge spoke", {"error": "no tokens"})
        text = completion.text.strip()
        score = parse_score(text, self.low, self.high)
        if score is None:
            return Verdict(0.0, False, "the judge gave no score", {"judge_text": text, "error": "no score"})
        critique = re.sub(r"(?im)^.*\b(score|rating)\b.*$", "", text).strip() or text
        return Verdict(score, score >= self.threshold, critique[:2000], {"judge_text": text})


def _yes_no_mass(top: dict[str, float]) -> tuple[float, float]:
    yes = no = 0.0
    for token, logprob in top.items():
        word = token.strip().strip("*\"'.:").lower()
        if word == "yes":
            yes += math.exp(logprob)
        elif word == "no":
            no += math.exp(logprob)
    return yes, no


def p_yes(logprobs: list[TokenLogprob] | None) -> float | None:
    """P(Yes) / (P(Yes) + P(No)) at the first position where the model says either."""
    for position in logprobs or []:
        top = dict(position.top)
        top.setdefault(position.token, position.logprob)
        yes, no = _yes_no_mass(top)
        if yes + no > 0:
            return yes / (yes + no)
    return None


class Reward:
    """Reward = P("Yes") to "Is this answer correct?", read from the top logprobs of the
    engine's first few tokens. Passes at `threshold`."""

    def __init__(
        self, engine: Engine, threshold: float = 0.5, top_logprobs: int = 20, name: str = "reward"
    ) -> None:
        self.engine = engine
        self.threshold = threshold
        self.top_logprobs = top_logprobs
        self.name = name

    async def score(self, question: str, answer: str) -> float | None:
        """The reward of one (question, answer) pair; a partial solution gives a step reward."""
        ask = REWARD_USER.format(question=question, answer=answer)
        completion = await _ask(self.engine, None, ask, 3, self.top_logprobs)
        return p_yes(completion.logprobs) if completion is not None else None

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        p = await self.score(problem.question, candidate)
        if p is None:
            return Verdict(
                0.0, False, "the reward model said neither Yes nor No", {"error": "no yes/no logprobs"}
            )
        verdict = "likely correct" if p >= self.threshold else "likely incorrect"
        return Verdict(p, p >= self.threshold, f"reward model: {verdict} (P(yes)={p:.2f})", {"p_yes": p})
