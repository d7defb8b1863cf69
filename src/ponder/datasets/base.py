"""The dataset contract: a named source of `Problem`s that also knows how to grade an answer
to one of them, so a benchmark never has to guess how "correct" is defined."""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ponder.extract import extract_answer, final_answer_text
from ponder.problem import Problem

GRADER_KEY = "grader"  # Problem.meta key holding the Dataset that made the problem


@dataclass(frozen=True)
class ItemRef:
    """Where a problem comes from, small enough to send anywhere: another process rebuilds
    the problem (and its grader) from it with `ponder.datasets.resolve` instead of
    receiving a pickled dataset. `size` and `seed` are those `load` was called with."""

    dataset: str
    id: str
    config: dict[str, Any] = field(default_factory=dict)
    size: int | None = None
    seed: int = 0


class Dataset(ABC):
    """Loads problems (`load`) and grades answers to them (`agrade`).

    `agrade` gets both the extracted answer and the full response: the extracted form is
    what ponder claims, the raw final-answer text (unnormalised \\boxed{} or "Answer:" line)
    lets graders that care about case or LaTeX see what the model actually wrote.
    """

    name: str
    default_size: int | None = None  # None: the whole fixed dataset

    @abstractmethod
    def _load(self, size: int | None, seed: int) -> list[Problem]: ...

    @abstractmethod
    async def agrade(self, problem: Problem, answer: str | None, response: str = "") -> bool: ...

    def load(self, size: int | None = None, seed: int = 0) -> list[Problem]:
        """Problems with stable ids; each carries this dataset in `meta["grader"]`."""
        if size is not None and size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        problems = self._load(size if size is not None else self.default_size, seed)
        for problem in problems:
            problem.meta.setdefault("dataset", self.name)
            problem.meta[GRADER_KEY] = self
        return problems

    def ref(self, problem: Problem) -> ItemRef:
        """How to find `problem` again: a fixed dataset's ids are unique across the whole set."""
        return ItemRef(self.name, str(problem.id))

    def grade(self, problem: Problem, answer: str | None, response: str = "") -> bool:
        """Synchronous `agrade`, for use outside an event loop."""
        return asyncio.run(self.agrade(problem, answer, response))


@cache
def vendored(name: str) -> tuple[dict[str, Any], ...]:
    """The items of data/<name>.jsonl, shipped inside ponder (see data/<name>.LICENSE for
    where each file comes from)."""
    text = resources.files("ponder.datasets").joinpath(f"data/{name}.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def first(items: Sequence[Any], size: int | None, name: str) -> list[Any]:
    """The first `size` items of a fixed dataset (a stable subset, the same for every seed)."""
    if size is None:
        return list(items)
    if size > len(items):
        raise ValueError(f"{name} has {len(items)} problems; --size {size} asks for more")
    return list(items[:size])


def final_answers(answer: str | None, response: str = "", format: str = "auto") -> list[str]:
    """The answer strings a grader should try, most canonical first: ponder's extracted
    answer, then the raw \\boxed{} and "Answer:" text of the response (no last-number guess,
    so a wrong final answer is never rescued by an intermediate number)."""
    found: list[str] = []
    if answer is not None and answer.strip():
        found.append(answer.strip())
    if response:
        raw = final_answer_text(response)
        if raw:
            found.append(raw)
            again = extract_answer(raw, format)
            if again:
                found.append(again)
    return list(dict.fromkeys(found))
