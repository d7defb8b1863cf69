"""reasoning-gym: procedurally generated tasks (arithmetic, logic, puzzles...). Any of its
generators, made reproducibly with a seed and a generator config, graded by the task's own
scorer."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ponder.datasets.base import Dataset, ItemRef, final_answers
from ponder.extract import is_number
from ponder.problem import Problem

PREFIX = "reasoning-gym:"
# Generated problems are made one by one in memory; a bench past this many would take weeks on
# a small model, and an unchecked --size 99999999999 grew memory without bound.
MAX_GENERATED = 10_000
PASS_SCORE = 0.99  # scorers return 0..1; partial credit (a right number in a wrong format) is not a pass


def tasks() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


class ReasoningGym(Dataset):
    default_size = 100

    def __init__(self, task: str, config: dict[str, Any] | None = None) -> None:
        try:
            known = tasks()
        except ImportError as exc:
            raise ValueError(
                "reasoning-gym datasets need the reasoning-gym package (pip install reasoning-gym)"
            ) from exc
        if task not in known:
            raise ValueError(
                f"unknown reasoning-gym task {task!r} ({len(known)} tasks, e.g. basic_arithmetic, products)"
            )
        self.task = task
        self.name = PREFIX + task
        self.config = dict(config or {})
        self._generators: dict[tuple[int, int], Any] = {}

    def generator(self, size: int, seed: int) -> Any:
        """The reasoning-gym dataset object; its `score_answer` grades answers."""
        key = (size, seed)
        if key not in self._generators:
            import reasoning_gym

            try:
                self._generators[key] = reasoning_gym.create_dataset(
                    self.task, size=size, seed=seed, **self.config
                )
            except (TypeError, ValueError, AssertionError) as exc:
                raise ValueError(
                    f"reasoning-gym task {self.task!r} rejects config {self.config}: {exc}"
                ) from exc
        return self._generators[key]

    def _load(self, size: int | None, seed: int) -> list[Problem]:
        size = size or self.default_size or 1
        if size > MAX_GENERATED:
            raise ValueError(
                f"{self.name} generates at most {MAX_GENERATED:,} problems; --size {size} asks for more"
            )
        data = self.generator(size, seed)
        tag = (
            hashlib.sha1(json.dumps(self.config, sort_keys=True).encode()).hexdigest()[:6]
            if self.config
            else ""
        )
        problems = []
        for index in range(size):
            entry = data[index]
            gold = str(entry["answer"])
            problems.append(
                Problem(
                    entry["question"],
                    format="number" if is_number(gold) else "text",
                    gold=gold,
                    id=f"{self.task}-s{seed}{'-' + tag if tag else ''}-{index}",
                    meta={"entry": entry, "generator": (size, seed)},
                )
            )
        return problems

    def ref(self, problem: Problem) -> ItemRef:
        size, seed = problem.meta["generator"]
        return ItemRef(self.name, str(problem.id), self.config, size, seed)

    async def agrade(self, problem: Problem, answer: str | None, response: str = "") -> bool:
        entry = problem.meta["entry"]
        data = self.generator(*problem.meta["generator"])
        for candidate in final_answers(answer, response, problem.format):
            try:
                if float(data.score_answer(candidate, entry)) >= PASS_SCORE:
                    return True
            except Exception:  # a scorer choking on malformed model output is a wrong answer
                continue
        return False
