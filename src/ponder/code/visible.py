"""Visible checks: what a code problem shows the solver, turned into something that runs.

An honest code benchmark keeps two sets of checks apart (the split HumanEval's authors
used for CodeT and for Reflexion alike): the *visible* ones, which a strategy may run as
often as it likes, are the examples in the prompt's docstring (`>>> f(2)` / `4`,
`f(2) ==> 4`, `Input: x = 2` / `Output: 4`) plus ruff on the program; the *hidden* tests
grade the final answer and never reach a strategy. An example is used only when both the
call's arguments and the expected value are Python literals, so a check never guesses.
"""

from __future__ import annotations

import ast
import doctest
import re
from dataclasses import dataclass

from ponder.extract import extract_code
from ponder.problem import Problem
from ponder.verifiers.base import Verdict
from ponder.verifiers.code import UnitTests
from ponder.verifiers.composite import Weighted
from ponder.verifiers.lint import Ruff

#: ruff rules that mean the program cannot run as written (syntax, undefined names); style
#: findings are not evidence that an answer is wrong
RUNS_RULES = ("E9", "F63", "F7", "F82")
#: weight of the docstring examples against ruff in a visible-checks score
EXAMPLES_WEIGHT = 4.0

_ARROW = re.compile(
    r"^\s*(?:for\s+|e\.g\.\s*)?(?P<call>.+?\))\s*"
    r"(?:==>|=>|➞|->|==|=|should return|returns?)\s*(?P<want>.+?)\s*$"
)


@dataclass(frozen=True)
class Example:
    """One worked example: `call` evaluates to `expected` (both Python source)."""

    call: str
    expected: str

    def assertion(self) -> str:
        value = ast.literal_eval(self.expected)
        if isinstance(value, float):
            return f"assert {self.call} == pytest.approx({self.expected})"
        return f"assert {self.call} == {self.expected}"


def _literal(source: str) -> bool:
    try:
        ast.literal_eval(source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def _signature(prompt: str, entry_point: str) -> tuple[list[str], str | None]:
    """The entry point's parameter names and docstring, read from the prompt."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return [], None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point:
            return [a.arg for a in node.args.args], ast.get_docstring(node)
    return [], None


def _call(source: str, entry_point: str, params: list[str]) -> str | None:
    """`source` as a call of the entry point with literal arguments (keywords turned
    positional when they name the parameters), or None."""
    try:
        node = ast.parse(source.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point):
        return None
    args = [ast.unparse(a) for a in node.args]
    if node.keywords:
        by_name = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if None in by_name or params[len(args) : len(args) + len(by_name)] != list(by_name):
            return None
        args += [by_name[p] for p in params[len(args) : len(args) + len(by_name)]]
    if not all(_literal(a) for a in args):
        return None
    return f"{entry_point}({', '.join(args)})"


def docstring_examples(prompt: str, entry_point: str) -> list[Example]:
    """The examples in the entry point's docstring, in order, without duplicates."""
    params, doc = _signature(prompt, entry_point)
    if doc is None:
        return []
    found: list[Example] = []
    try:
        doctests = doctest.DocTestParser().get_examples(doc)
    except ValueError:  # inconsistent indentation: the arrow forms below may still match
        doctests = []
    for ex in doctests:  # >>> f(x) / want
        call = _call(ex.source, entry_point, params)
        want = ex.want.strip() or "None"
        if not _literal(want):  # doctest runs on to the next blank line: try the first line alone
            want = want.splitlines()[0].strip()
        if call and _literal(want):
            found.append(Example(call, want))
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith(">>>"):
            continue
        if (m := _ARROW.match(line)) and (call := _call(m["call"], entry_point, params)):
            want = m["want"].rstrip(".,;")
            if _literal(want):
                found.append(Example(call, want))
        elif line.strip().lower().startswith("input:"):  # Input: a = 1, b = 2 / Output: 3
            rest = [ln.strip() for ln in lines[i + 1 : i + 4] if ln.strip()]
            out = next((ln for ln in rest if ln.lower().startswith("output:")), None)
            call = _call(f"{entry_point}({line.strip()[6:]})", entry_point, params)
            if out and call and _literal(want := out[7:].strip()):
                found.append(Example(call, want))
    return list(dict.fromkeys(found))


def examples_module(examples: list[Example], entry_point: str) -> str:
    """A pytest module with one test per example (so a score counts examples passed)."""
    head = f"import pytest\n\nfrom candidate import *  # noqa: F403\nfrom candidate import {entry_point}\n"
    body = "".join(f"\n\ndef test_example_{i}():\n    {ex.assertion()}\n" for i, ex in enumerate(examples, 1))
    return head + body


def visible_tests(prompt: str, entry_point: str) -> str | None:
    """The docstring's examples as a tests module, or None when the prompt shows none."""
    examples = docstring_examples(prompt, entry_point)
    return examples_module(examples, entry_point) if examples else None


class RunsClean(Ruff):
    """Ruff's can-it-run rules on the program as it will be tested (prompt + answer), so an
    answer that drops the prompt's imports is not blamed for names the prompt provides."""

    def __init__(self) -> None:
        super().__init__(select=RUNS_RULES, name="ruff")

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        code = extract_code(candidate)
        if not code:
            return Verdict(0.0, False, "the answer contains no code")
        return await self.check(f"{problem.preamble.rstrip()}\n\n\n{code}" if problem.preamble else code)


def visible_checks(problem: Problem) -> Weighted:
    """The checks a strategy may use on a code problem: its visible tests (`problem.tests`,
    e.g. the docstring's examples) weighted above ruff's can-it-run rules."""
    if problem.tests:
        return Weighted([(UnitTests(name="examples"), EXAMPLES_WEIGHT), (RunsClean(), 1.0)], name="visible")
    return Weighted([(RunsClean(), 1.0)], name="visible")


def describe_checks(problem: Problem) -> str:
    """What `visible_checks` runs for this problem, in words for a summary."""
    return "docstring examples + ruff" if problem.tests else "ruff"
