"""`ponder fix PATH --check CMD ...`: patches from the model until the repository's checks pass,
checked on sandboxed copies; PATH is only written with --apply, on a clean git tree."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Annotated, cast

import typer

from ponder.budget import Budget, BudgetError
from ponder.cli.app import app
from ponder.cli.engine import EngineOptions, engine_options
from ponder.cli.errors import fail, positive_seconds, stderr
from ponder.cli.think import closing
from ponder.engines.base import EngineError
from ponder.store import StoreError, TraceStore

MAX_CHECK_SECONDS = 1800.0


def git_state(root: Path) -> str | None:
    """Why `root` cannot take a patch (not a git work tree, uncommitted changes), or None."""
    try:
        top = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if top.returncode != 0 or top.stdout.strip() != "true":
            return f"{root} is not in a git work tree: --apply writes only where a change can be undone"
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot ask git about {root}: {exc}"
    if status.returncode != 0:
        return f"git status failed in {root}: {status.stderr.strip()[:200]}"
    if status.stdout.strip():
        return f"{root} has uncommitted changes: commit or stash them before --apply"
    return None


@app.command()
@engine_options
def fix(
    path: Annotated[Path, typer.Argument(help="The repository (a directory) to fix.")],
    check: Annotated[
        list[str],
        typer.Option(
            "--check", "-c", help="A command that must pass, run in the repository: 'pytest -q'. Repeatable."
        ),
    ],
    apply: Annotated[
        bool, typer.Option("--apply", help="Write the best patch to PATH (needs a clean git work tree).")
    ] = False,
    attempts: Annotated[int, typer.Option(help="Patches to ask the model for, at most.")] = 4,
    ask: Annotated[
        str,
        typer.Option(
            help="What to ask the model for: 'code' (the corrected functions; what small models "
            "manage) or 'diff' (a unified diff). Either kind of reply is read."
        ),
    ] = "code",
    budget: Annotated[
        list[str] | None, typer.Option("--budget", "-b", help="Limit: 60s, 4000tok, $0.02. Repeatable.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Wall-clock seconds for one run of all checks.")] = 120.0,
    max_tokens: Annotated[int, typer.Option(help="Cap on tokens per patch.")] = 512,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    store: Annotated[
        Path | None, typer.Option(help="Trace database (default: $PONDER_HOME/traces.sqlite).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    *,
    engine_options: EngineOptions,
) -> None:
    """Run the checks on a sandboxed copy of PATH, ask the model for patches (corrected code
    or unified diffs), rerun every check after each, and print the best patch with what it
    fixed and what still fails. Exit 0 when every check passes at the end, 1 when some still
    fail, 2 for bad input."""
    from ponder.code.checks import default_limits
    from ponder.code.fix import Ask, afix, write_patch
    from ponder.code.patch import PatchError
    from ponder.code.repo import RepoError, read_repo
    from ponder.sandbox import SandboxUnavailable

    if attempts < 1:
        fail("--attempts must be at least 1")
    if ask not in ("code", "diff"):
        fail(f"--ask takes code or diff, not {ask!r}")
    if max_tokens < 1:
        fail("--max-tokens must be at least 1")
    positive_seconds(timeout, "--timeout", MAX_CHECK_SECONDS)
    commands = [c.strip() for c in check]
    if not commands or not all(commands):
        fail("--check needs a command, e.g. --check 'pytest -q'")
    root = path.expanduser()
    try:
        read_repo(root)  # size and readability, before any model is loaded
        limits = Budget.parse(*(budget or []))
        trace_store = TraceStore(store)
    except (RepoError, BudgetError, StoreError, OSError) as exc:
        fail(str(exc))
    if apply and (why := git_state(root)):
        fail(why)
    eng = engine_options.create()
    work = afix(
        root, commands, engine=eng, budget=limits, max_attempts=attempts, store=trace_store,
        limits=default_limits(timeout), max_tokens=max_tokens, seed=seed, ask=cast(Ask, ask),
    )  # fmt: skip
    try:
        report = asyncio.run(closing(eng, work))
    except EngineError as exc:
        fail(f"the {engine_options.engine} engine failed: {exc}", code=1)
    except SandboxUnavailable as exc:  # the checks are never run outside the sandbox
        fail(f"cannot run the checks: {exc}")
    written: list[str] = []
    if apply and report.patch:
        if why := git_state(root):
            fail(f"not applied: {why}")
        try:
            written = write_patch(root, read_repo(root), report.files_after)
        except (PatchError, OSError) as exc:
            fail(f"not applied: {exc}")
    if as_json:
        print(json.dumps({**report.to_dict(), "applied": written}, indent=2))
    else:
        _print(report, apply, written)
    raise typer.Exit(0 if not report.still_failing else 1)


def _print(report: object, apply: bool, written: list[str]) -> None:
    from ponder.code.fix import FixReport

    assert isinstance(report, FixReport)
    for a in report.attempts:
        if a.error:
            stderr.print(f"attempt {a.index}: patch not applied: {a.error.splitlines()[0]}", soft_wrap=True)
        else:
            passing = sum(r.passed for r in a.runs)
            note = (
                "adopted" if a.adopted else ("breaks " + ", ".join(a.broken) if a.broken else "no progress")
            )
            stderr.print(
                f"attempt {a.index}: {passing}/{len(a.runs)} checks pass ({note}; {a.how})", soft_wrap=True
            )
    if report.patch:
        print(report.patch, end="")
    else:
        stderr.print("no patch improved the checks")
    for command in report.fixed:
        stderr.print(f"fixed: {command}", soft_wrap=True)
    for run in report.final:
        if not run.passed:
            tail = "\n  ".join(run.output.strip().splitlines()[-6:])
            stderr.print(f"still failing: {run.command}\n  {tail}", soft_wrap=True, markup=False)
    if not report.still_failing and not report.fixed:
        stderr.print("every check already passes")
    if apply and written:
        stderr.print(f"applied to {report.root}: {', '.join(written)}", soft_wrap=True)
    elif report.patch:
        stderr.print("(not applied: rerun with --apply to write it)")
    stderr.print(f"trace {report.trace_id}")
