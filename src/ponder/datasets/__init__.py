"""Benchmark datasets read from files shipped inside installed packages (nothing is fetched
from a hub at run time). Each dataset grades its own answers.

    >>> problems = load_dataset("gsm8k", size=10)
    >>> grade(problems[0], "18")
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from ponder.datasets.base import GRADER_KEY, Dataset, ItemRef
from ponder.problem import Problem

__all__ = [
    "DATASETS",
    "Dataset",
    "ItemRef",
    "agrade",
    "get_dataset",
    "grade",
    "item_ref",
    "load_dataset",
    "resolve",
]


def _gsm8k(config: dict[str, Any]) -> Dataset:
    from ponder.datasets.gsm8k import GSM8K

    return GSM8K()


def _mmath(name: str) -> Callable[[dict[str, Any]], Dataset]:
    def make(config: dict[str, Any]) -> Dataset:
        from ponder.datasets.mmath import MMath

        return MMath(name)

    return make


def _humaneval(config: dict[str, Any]) -> Dataset:
    from ponder.datasets.humaneval import HumanEval

    return HumanEval()


# name -> factory(config); "reasoning-gym:<task>" names are resolved by prefix
DATASETS: dict[str, Callable[[dict[str, Any]], Dataset]] = {
    "gsm8k": _gsm8k,
    "math500": _mmath("math500"),
    "aime24": _mmath("aime24"),
    "aime25": _mmath("aime25"),
    "humaneval": _humaneval,
}
RG_PREFIX = "reasoning-gym:"


def get_dataset(name: str, config: dict[str, Any] | None = None) -> Dataset:
    """The dataset called `name` (a key of DATASETS, or "reasoning-gym:<task>")."""
    config = dict(config or {})
    if name.startswith(RG_PREFIX):
        from ponder.datasets.rgym import ReasoningGym

        return ReasoningGym(name[len(RG_PREFIX) :], config)
    factory = DATASETS.get(name)
    if factory is None:
        raise ValueError(
            f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}, or reasoning-gym:<task>"
        )
    if config:
        raise ValueError(f"dataset {name!r} takes no config (only reasoning-gym tasks do)")
    return factory(config)


def load_dataset(
    name: str, *, size: int | None = None, seed: int = 0, config: dict[str, Any] | None = None
) -> list[Problem]:
    """Problems of dataset `name`: the first `size` of a fixed dataset, or `size` generated
    with `seed` for reasoning-gym. Each problem can be graded with `grade`."""
    return get_dataset(name, config).load(size, seed)


def item_ref(problem: Problem) -> ItemRef | None:
    """The reference another process can rebuild `problem` from, for a problem that came
    from `load_dataset` (None for any other problem)."""
    grader = problem.meta.get(GRADER_KEY)
    return grader.ref(problem) if isinstance(grader, Dataset) and problem.id is not None else None


def resolve(ref: ItemRef) -> Problem:
    """The problem `ref` names, with its grader, rebuilt in this process (each dataset is
    loaded once per process and kept, so a worker resolving many ids loads it once)."""
    problem = _loaded(ref.dataset, json.dumps(ref.config, sort_keys=True), ref.size, ref.seed).get(ref.id)
    if problem is None:
        raise ValueError(f"{ref.dataset} (size {ref.size}, seed {ref.seed}) has no problem {ref.id!r}")
    return problem


@functools.lru_cache(maxsize=8)
def _loaded(name: str, config: str, size: int | None, seed: int) -> dict[str, Problem]:
    return {str(p.id): p for p in get_dataset(name, json.loads(config)).load(size, seed)}


def _grader(problem: Problem) -> Dataset:
    grader = problem.meta.get(GRADER_KEY)
    if not isinstance(grader, Dataset):
        raise ValueError(f"problem {problem.id!r} did not come from load_dataset; it has no grader")
    return grader


async def agrade(problem: Problem, answer: str | None, response: str = "") -> bool:
    """Is `answer` (ponder's extracted answer; `response` is the full text it came from)
    correct for a problem from `load_dataset`?"""
    return await _grader(problem).agrade(problem, answer, response)


def grade(problem: Problem, answer: str | None, response: str = "") -> bool:
    """Synchronous `agrade` (not inside a running event loop)."""
    return _grader(problem).grade(problem, answer, response)
