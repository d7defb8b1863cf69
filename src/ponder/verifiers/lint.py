"""Static checks on candidate code: ruff (lint) and mypy (types).

Both read the code from a temporary file and never execute it, so they run outside the
sandbox; each ignores project configuration files so results don't depend on where ponder
was started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import sys
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from ponder.extract import extract_code
from ponder.problem import Problem
from ponder.verifiers.base import Verdict

_MAX_FINDINGS_SHOWN = 20


def _score(findings: int, per_finding: float) -> float:
    """1 when clean, falling with each finding (0 at 1/per_finding findings)."""
    return max(0.0, 1.0 - per_finding * findings)


def _feedback(lines: list[str], clean: str, header: str) -> str:
    """`clean` when there is nothing to show, else `header` and the first findings."""
    if not lines:
        return clean
    feedback = header + "\n" + "\n".join(lines[:_MAX_FINDINGS_SHOWN])
    if len(lines) > _MAX_FINDINGS_SHOWN:
        feedback += f"\n... and {len(lines) - _MAX_FINDINGS_SHOWN} more"
    return feedback


@contextlib.contextmanager
def _candidate_file(code: str, tool: str) -> Iterator[tuple[str, str]]:
    """A temporary directory holding the code as candidate.py: (the directory, the file)."""
    with tempfile.TemporaryDirectory(prefix=f"ponder-{tool}-") as tmp:
        path = os.path.join(tmp, "candidate.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(code)
        yield tmp, path


_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _bound() -> asyncio.Semaphore:
    """Linters in flight per event loop: a strategy checking 16 samples must not start 16 mypys."""
    loop = asyncio.get_running_loop()
    if loop not in _semaphores:
        _semaphores[loop] = asyncio.Semaphore(max(1, min(4, os.cpu_count() or 1)))
    return _semaphores[loop]


async def _run_tool(argv: list[str], cwd: str, timeout: float) -> tuple[int, str, str]:
    async with _bound():
        return await _run_tool_now(argv, cwd, timeout)


async def _run_tool_now(argv: list[str], cwd: str, timeout: float) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


class _Linter:
    """A static check of the code in an answer; an answer without code fails it."""

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        code = extract_code(candidate)
        if not code:
            return Verdict(0.0, False, "the answer contains no code")
        return await self.check(code)

    async def check(self, code: str) -> Verdict:
        raise NotImplementedError


DEFAULT_RUFF_RULES = ("E4", "E7", "E9", "F")


class Ruff(_Linter):
    """Lint findings from `ruff check`.

    Default rules: pyflakes and pycodestyle's error classes (ruff's classic defaults), pinned
    because newer ruff releases enable far more (style) rules by default, which would turn a
    correct answer's score into noise.
    """

    def __init__(
        self,
        select: Sequence[str] | None = None,
        ignore: Sequence[str] = (),
        per_finding: float = 0.2,
        timeout: float = 60.0,
        name: str = "ruff",
    ) -> None:
        self.select = list(select) if select else list(DEFAULT_RUFF_RULES)
        self.ignore = list(ignore)
        self.per_finding = per_finding
        self.timeout = timeout
        self.name = name

    async def check(self, code: str) -> Verdict:
        with _candidate_file(code, "ruff") as (tmp, _):
            argv = [
                sys.executable,
                "-m",
                "ruff",
                "check",
                "--isolated",
                "--no-cache",
                "--output-format",
                "json",
            ]
            if self.select:
                argv += ["--select", ",".join(self.select)]
            if self.ignore:
                argv += ["--ignore", ",".join(self.ignore)]
            rc, out, err = await _run_tool([*argv, "candidate.py"], tmp, self.timeout)
        try:
            found: list[dict[str, Any]] = json.loads(out or "[]")
        except ValueError:
            return Verdict(0.0, False, f"ruff failed: {err.strip()[:500]}", {"error": err[-2000:], "rc": rc})
        findings = [
            {
                "line": (d.get("location") or {}).get("row"),
                "col": (d.get("location") or {}).get("column"),
                "code": d.get("code") or "syntax-error",
                "message": d.get("message", ""),
            }
            for d in found
        ]
        lines = [f"line {x['line']}:{x['col']}: {x['code']} {x['message']}" for x in findings]
        feedback = _feedback(lines, "ruff: no findings", "ruff findings:")
        return Verdict(
            _score(len(findings), self.per_finding), not findings, feedback, {"findings": findings}
        )


_MYPY_LINE = re.compile(r"^[^:\n]+:(\d+):(?:(\d+):)? (error|note): (.*?)(?:  \[([\w-]+)\])?$")


class Mypy(_Linter):
    """Type errors from mypy; notes are shown but don't count."""

    def __init__(
        self,
        strict: bool = False,
        args: Sequence[str] = (),
        per_finding: float = 0.2,
        timeout: float = 120.0,
        name: str = "mypy",
    ) -> None:
        self.strict = strict
        self.args = list(args)
        self.per_finding = per_finding
        self.timeout = timeout
        self.name = name

    async def check(self, code: str) -> Verdict:
        # A shared cache keeps repeated runs fast (typeshed is analysed once).
        cache = os.path.join(tempfile.gettempdir(), f"ponder-mypy-cache-{os.getuid()}")
        with _candidate_file(code, "mypy") as (tmp, path):
            # mypy trusts its cache when size and mtime (in whole seconds) match: two
            # same-sized candidates written within a second would share a stale result. A
            # random mtime forces the content-hash check instead.
            stamp = random.randint(10**9, 1_600_000_000)
            os.utime(path, (stamp, stamp))
            argv = [
                sys.executable, "-m", "mypy", "--config-file", os.devnull, "--cache-dir", cache,
                "--no-error-summary", "--show-column-numbers", "--show-error-codes",
                "--ignore-missing-imports", "--no-color-output", "--hide-error-context",
            ]  # fmt: skip
            if self.strict:
                argv.append("--strict")
            rc, out, err = await _run_tool([*argv, *self.args, "candidate.py"], tmp, self.timeout)
        findings: list[dict[str, Any]] = []
        notes: list[dict[str, Any]] = []
        for line in out.splitlines():
            m = _MYPY_LINE.match(line.strip())
            if not m:
                continue
            item = {"line": int(m[1]), "col": int(m[2] or 0), "code": m[5] or "", "message": m[4]}
            (findings if m[3] == "error" else notes).append(item)
        if rc not in (0, 1) or (rc == 1 and not findings):
            return Verdict(
                0.0, False, f"mypy failed: {(err or out).strip()[:500]}", {"rc": rc, "error": err[-2000:]}
            )
        lines = [
            f"line {x['line']}: {x['message']}" + (f" [{x['code']}]" if x["code"] else "") for x in findings
        ]
        feedback = _feedback(lines, "mypy: no type errors", "mypy errors:")
        return Verdict(
            _score(len(findings), self.per_finding),
            not findings,
            feedback,
            {"findings": findings, "notes": notes},
        )
