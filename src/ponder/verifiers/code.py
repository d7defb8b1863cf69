"""Unit tests as a verifier: the candidate's code runs against the tests in the sandbox."""

from __future__ import annotations

from ponder.extract import extract_code
from ponder.problem import Problem
from ponder.sandbox import Limits, SandboxResult, run_in_sandbox
from ponder.verifiers.base import Verdict

_FEEDBACK_CHARS = 3000


class UnitTests:
    """Score = fraction of test functions passed; feedback names the failures with their
    assertion messages and trimmed tracebacks, which is what a revision needs to see.

    `tests` overrides `problem.tests` (a pytest-style module importing `candidate`).
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
        result = await run_in_sandbox(code, tests, self.limits)
        return verdict_from_result(result)


def verdict_from_result(result: SandboxResult) -> Verdict:
    """A test the run never reported (it crashed or timed out mid-way) counts as failed."""
    counted = result.n_counted if result.completed else result.n_counted + 1
    score = result.n_passed / counted if counted and result.setup_error is None else 0.0
    lines = []
    problem = result.problem()
    if problem:
        lines.append(problem)
    for t in result.tests:
        if not t.passed and not t.skipped:
            lines.append(f"FAILED {t.name}:\n{t.error}".rstrip())
    if lines and result.stderr.strip() and not result.completed:
        lines.append("stderr (tail):\n" + result.stderr.strip()[-500:])
    feedback = "\n\n".join(lines)
    if len(feedback) > _FEEDBACK_CHARS:
        feedback = feedback[:_FEEDBACK_CHARS] + "\n... (trimmed)"
    if result.passed:
        feedback = f"all {result.n_counted} tests passed"
    details = {
        "tests": [
            {"name": t.name, "passed": t.passed, "skipped": t.skipped, "error": t.error} for t in result.tests
        ],
        "n_passed": result.n_passed,
        "n_tests": result.n_counted,
        "completed": result.completed,
        "timed_out": result.timed_out,
        "output_exceeded": result.output_exceeded,
        "exit_code": result.exit_code,
        "seconds": round(result.seconds, 3),
        "isolation": result.isolation,
        "stdout": result.stdout[-2000:],
    }
    return Verdict(min(1.0, max(0.0, score)), result.passed, feedback, details)
