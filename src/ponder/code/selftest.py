"""Tests a model writes for itself (CodeT, Chen et al. 2022): asked for assert statements
about the entry point, its samples are parsed into distinct, runnable test cases.

A generated test is only a guess about the right behaviour, never ground truth: CodeT uses
them by *agreement* (many solutions passing the same guesses), never one at a time.
"""

from __future__ import annotations

import ast
import re

from ponder.engines.base import GenerationRequest, Message
from ponder.problem import Problem

TESTS_SYSTEM = (
    "You are an expert Python tester. Write assert statements that check a function's behaviour "
    "on small inputs, one per line, in one ```python code block. Do not implement the function."
)
_ASSERT = re.compile(r"^\s*assert\s.+$", re.MULTILINE)


def tests_request(
    problem: Problem, n: int, *, max_tokens: int, temperature: float, seed: int
) -> GenerationRequest:
    """A request for `n` samples of test cases for the problem's entry point."""
    name = problem.entry_point or "the function"
    messages: list[Message] = [
        {"role": "system", "content": TESTS_SYSTEM},
        {
            "role": "user",
            "content": f"{problem.question.rstrip()}\n\nWrite 5 assert statements that test `{name}`, "
            f"each calling `{name}` with literal arguments and comparing with the expected result.",
        },
    ]
    return GenerationRequest(
        messages=messages, n=n, max_tokens=max_tokens, temperature=temperature, top_p=0.95, seed=seed
    )


def parse_asserts(text: str, entry_point: str) -> list[str]:
    """The `assert <call of entry_point> ...` lines of a sample that parse on their own,
    normalised (so the same test written twice counts once)."""
    found = []
    for line in _ASSERT.findall(text):
        try:
            tree = ast.parse(line.strip())
        except SyntaxError:
            continue
        stmt = tree.body[0] if len(tree.body) == 1 else None
        if not isinstance(stmt, ast.Assert):
            continue
        calls = [n for n in ast.walk(stmt.test) if isinstance(n, ast.Call)]
        if any(isinstance(c.func, ast.Name) and c.func.id == entry_point for c in calls):
            found.append(ast.unparse(stmt))
    return found


def asserts_module(asserts: list[str], entry_point: str) -> str:
    """A pytest module with each generated assert as its own test, named by its index."""
    head = f"from candidate import *  # noqa: F403\nfrom candidate import {entry_point}\n"
    body = "".join(f"\n\ndef test_generated_{i}():\n    {a}\n" for i, a in enumerate(asserts))
    return head + body
