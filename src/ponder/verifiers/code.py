"""Unit tests as a verifier: the candidate's code runs against the tests in the sandbox, and
the feedback is written for a model that has to fix it."""

from __future__ import annotations

import ast
import re

from ponder.extract import extract_code
from ponder.problem import Problem
from ponder.sandbox import (
    NOT_ISOLATED_WARNING,
    Limits,
    SandboxResult,
    SandboxUnavailable,
    TestResult,
    run_in_sandbox,
)
from ponder.verifiers.base import Verdict

_FEEDBACK_CHARS = 2500
_SHOWN_FAILURES = 3
_TRACE_LINES = 8
_LINE_CHARS = 200


class UnitTests:
    """Score = fraction of test functions passed; feedback names each failing test with what
    was expected, what came back and the first lines of the traceback.

    `tests` overrides `problem.tests` (a pytest module importing `candidate`).
    """

    def __init__(self, tests: str | None = None, limits: Limits | None = None, name: str = "tests") -> None:
        self.tests = tests
        self.limits = limits or Limits()
        self.name = name

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        tests = self.tests if self.tests is not None else problem.tests
        if not tests:
            return Verdict(0.0, False, "no tests to run for this problem", {"error": "no tests"})
        code = extract_code(candidate)
        if not code:
            return Verdict(0.0, False, "the answer contains no code", {"error": "no code"})
        if problem.preamble:  # the candidate's definitions come last, so they win
            code = f"{problem.preamble.rstrip()}\n\n\n{code}"
        try:
            result = await run_in_sandbox(code, tests, self.limits)
        except SandboxUnavailable as exc:
            return Verdict(0.0, False, str(exc), {"error": "sandbox unavailable"})
        return verdict_from_result(result)


def _where(error: str, got: str | None) -> str:
    """`(where fizzbuzz(15) = 'Fizz')` from the failing `assert X == Y` line in the traceback,
    when X is not itself a literal."""
    if got is None:
        return ""
    for line in reversed(error.splitlines()):
        stmt = line.strip()
        if not stmt.startswith("assert ") or "==" not in stmt:
            continue
        try:
            node = ast.parse(stmt).body[0]
        except SyntaxError:
            return ""
        test = node.test if isinstance(node, ast.Assert) else None
        if isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.Eq):
            if isinstance(test.left, ast.Constant):
                return ""
            return f"  (where {ast.unparse(test.left)} = {got})"
        return ""
    return ""


def _trace_head(error: str) -> list[str]:
    """The first lines of the traceback: locations, source lines and the error (`E` lines)."""
    lines = [ln[:_LINE_CHARS] for ln in error.splitlines() if ln.strip() and ln.strip() != "E"]
    head = lines[:_TRACE_LINES]
    if len(lines) > _TRACE_LINES:
        head.append(f"... ({len(lines) - _TRACE_LINES} more lines)")
    return head


def describe_failure(t: TestResult) -> str:
    """One failing test for a model: name, expected, got, the start of the traceback."""
    out = [f"FAILED {t.name}"]
    if t.expected is not None or t.got is not None:
        out.append(f"  expected: {t.expected}")
        out.append(f"  got:      {t.got}{_where(t.error, t.got)}")
    out += ["  " + ln for ln in _trace_head(t.error)]
    return "\n".join(out)


def feedback_text(result: SandboxResult) -> str:
    """Concise feedback: the run's problem, the first few failing tests in detail, the rest
    by name; trimmed to a size a prompt can carry."""
    lines = []
    if not result.isolated:
        lines.append(NOT_ISOLATED_WARNING)
    if result.passed:
        return "\n".join([f"all {result.n_counted} tests passed", *lines])
    problem = result.problem()
    if problem:
        lines.append(problem)
    failing = [t for t in result.tests if not t.passed and not t.skipped]
    lines += [describe_failure(t) for t in failing[:_SHOWN_FAILURES]]
    if len(failing) > _SHOWN_FAILURES:
        rest = [t.name for t in failing[_SHOWN_FAILURES:]]
        lines.append(f"also failed ({len(rest)}): " + ", ".join(rest[:20]))
    if result.missing and not problem:
        lines.append("never reported: " + ", ".join(result.missing))
    if not result.completed and result.stderr.strip():
        lines.append("stderr (tail):\n" + result.stderr.strip()[-400:])
    feedback = "\n\n".join(lines)
    if len(feedback) > _FEEDBACK_CHARS:
        feedback = feedback[:_FEEDBACK_CHARS] + "\n... (trimmed)"
    return re.sub(r"\n{3,}", "\n\n", feedback)


def verdict_from_result(result: SandboxResult) -> Verdict:
    """A test the run never reported (it crashed or timed out mid-way) counts as failed: the
    tests file names it (`missing`), or, when it could not be read, one more is assumed."""
    unknown = not result.completed and not result.missing
    counted = result.n_counted + 1 if unknown else result.n_counted
    score = result.n_passed / counted if counted and result.setup_error is None else 0.0
    if result.leftovers:
        score = 0.0
    details = {
        "tests": [
            {
                "name": t.name,
                "passed": t.passed,
                "skipped": t.skipped,
                "error": t.error,
                "expected": t.expected,
                "got": t.got,
            }
            for t in result.tests
        ],
        "n_passed": result.n_passed,
        "n_tests": result.n_counted,
        "completed": result.completed,
        "timed_out": result.timed_out,
        "cpu_exceeded": result.cpu_exceeded,
        "memory_exceeded": result.memory_exceeded,
        "output_exceeded": result.output_exceeded,
        "exit_code": result.exit_code,
        "seconds": round(result.seconds, 3),
        "cpu_seconds": result.cpu_seconds,
        "memory_peak_mb": result.memory_peak_mb,
        "isolation": result.isolation,
        "isolated": result.isolated,
        "cgroup": result.cgroup,
        "leftovers": result.leftovers,
        "missing": result.missing,
        "stdout": result.stdout[-2000:],
    }
    return Verdict(min(1.0, max(0.0, score)), result.passed, feedback_text(result), details)
