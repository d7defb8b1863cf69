"""The words ponder puts in front of a model. Kept in one place so that strategies read
like their papers and a prompt change is one diff."""

from __future__ import annotations

from ponder.engines.base import Message
from ponder.problem import Problem

SOLVE_SYSTEM = (
    "You are a careful problem solver. Think step by step, then give the final answer on the "
    "last line as 'Answer: <answer>'."
)
CODE_SYSTEM = (
    "You are an expert Python programmer. Write a complete, correct solution in one ```python code "
    "block. Do not include tests or example usage."
)

_FEW_SHOT = (
    "Question: What is 3 + 4?\nSolution: 3 + 4 = 7.\nAnswer: 7\n\n"
    "Question: Tom has 5 apples and eats 2. How many are left?\nSolution: 5 - 2 = 3.\nAnswer: 3\n\n"
)


def _question(problem: Problem) -> str:
    question = problem.question
    if problem.choices:
        letters = "ABCDEFGHIJ"
        question += "\n" + "\n".join(f"({letters[i]}) {c}" for i, c in enumerate(problem.choices))
    return question


def system_prompt(problem: Problem) -> str:
    """The caller's system prompt, if any, then ponder's instruction on the answer's form
    (extraction and votes depend on it, so it is never dropped)."""
    instruction = CODE_SYSTEM if problem.format == "code" else SOLVE_SYSTEM
    return f"{problem.system}\n\n{instruction}" if problem.system else instruction


def solve_messages(problem: Problem) -> list[Message]:
    """Chat messages asking for a solution in the problem's answer format: the system
    prompt, the caller's earlier turns, the question."""
    return [
        {"role": "system", "content": system_prompt(problem)},
        *problem.history,
        {"role": "user", "content": _question(problem)},
    ]


def solve_prompt(problem: Problem) -> str:
    """A few-shot raw prompt for base models that have no chat template; a system prompt
    and earlier turns go before the question as plain text."""
    if problem.format == "code":
        return f"# Complete the function.\n{problem.question}"
    head = f"{problem.system}\n\n" if problem.system else ""
    turns = "".join(
        f"Question: {m['content']}\n" if m["role"] == "user" else f"Solution: {m['content']}\n\n"
        for m in problem.history
    )
    return f"{head}{_FEW_SHOT}{turns}Question: {_question(problem)}\nSolution:"


def revision_messages(problem: Problem, draft: str, feedback: str) -> list[Message]:
    """Ask for a corrected answer given a verifier's feedback on a draft."""
    return [
        *solve_messages(problem),
        {"role": "assistant", "content": draft},
        {
            "role": "user",
            "content": f"A check of your answer found problems:\n{feedback}\n\n"
            "Fix them and give the complete corrected answer.",
        },
    ]
