"""`ponder verify`: run verifiers on a candidate file, exit 0 when it passes, 1 when not."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Annotated

import typer

from ponder.cli.app import app
from ponder.cli.errors import fail, positive_seconds
from ponder.problem import Problem

MAX_TIMEOUT = 3600.0  # an hour; the sandbox's CPU limit is an integer of seconds below this


@app.command()
def verify(
    candidate: Annotated[Path, typer.Argument(help="The candidate Python file (importable as `candidate`).")],
    tests: Annotated[
        Path | None, typer.Option("--tests", help="pytest-style tests that `from candidate import ...`.")
    ] = None,
    ruff: Annotated[bool, typer.Option("--ruff", help="Lint with ruff.")] = False,
    mypy: Annotated[bool, typer.Option("--mypy", help="Type-check with mypy.")] = False,
    check: Annotated[
        list[str] | None,
        typer.Option("--check", help="More verifier specs: math, schema:FILE.json, regex:PATTERN, ..."),
    ] = None,
    gold: Annotated[str | None, typer.Option(help="Gold answer, for the math check.")] = None,
    timeout: Annotated[
        float, typer.Option(help=f"Wall-clock seconds for the sandboxed tests (at most {MAX_TIMEOUT:g}).")
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:
    """Verify CANDIDATE: tests in the sandbox, ruff, mypy. Exit 0 passed, 1 not, 2 bad input."""
    from ponder.sandbox import NOT_ISOLATED_WARNING, Limits
    from ponder.verifiers import AllOf, Mypy, Ruff, UnitTests, Verifier, parse_verifier_spec

    positive_seconds(timeout, "--timeout", MAX_TIMEOUT)
    if not candidate.is_file():
        fail(f"candidate file not found: {candidate}")
    if tests is not None and not tests.is_file():
        fail(f"tests file not found: {tests}")
    try:
        code = candidate.read_text(encoding="utf-8")
        tests_text = tests.read_text(encoding="utf-8") if tests is not None else None
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read input: {exc}")
    checks: list[Verifier] = []
    if tests_text is not None:
        limits = Limits(wall_seconds=timeout, cpu_seconds=max(1, math.ceil(timeout)))
        checks.append(UnitTests(tests_text, limits))
    if ruff:
        checks.append(Ruff())
    if mypy:
        checks.append(Mypy())
    for spec in check or []:
        try:
            checks.append(parse_verifier_spec(spec))
        except ValueError as exc:
            fail(str(exc))
    if not checks:
        fail("nothing to verify: give --tests FILE, --ruff, --mypy or --check SPEC")
    problem = Problem(question=f"verify {candidate.name}", format="code", gold=gold)
    verdict = asyncio.run(AllOf(checks).verify(problem, code))
    if as_json:
        out = {
            "passed": verdict.passed,
            "score": round(verdict.score, 4),
            "feedback": verdict.feedback,
            "checks": verdict.details["checks"],
        }
        typer.echo(json.dumps(out, indent=2, default=str))
    else:
        typer.echo(f"{'PASSED' if verdict.passed else 'FAILED'}  score {verdict.score:.2f}")
        for item in verdict.details["checks"]:
            typer.echo(f"  {item['name']:<6} {'ok' if item['passed'] else 'FAIL'}  score {item['score']:.2f}")
            if item["details"].get("isolated") is False:
                typer.echo(f"         {NOT_ISOLATED_WARNING}")
        if not verdict.passed:
            typer.echo("")
            typer.echo(verdict.feedback)
    raise typer.Exit(0 if verdict.passed else 1)
