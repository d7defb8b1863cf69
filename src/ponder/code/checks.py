"""A repository's checks (`pytest -q`, `ruff check .`, `mypy .`) run in the sandbox on a copy.

The copy goes into the sandbox as files under `repo/`; a generated test module runs each
command there with `subprocess` and turns its exit code into one test. The command's output
comes back through the tests' failure messages (the sandbox's one channel the code cannot
forge), cut into a few marked parts so it survives the sandbox's per-message trim: enough
for the failing tests and findings of a small repository, and the head and tail of a big one.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ponder.sandbox import Limits, SandboxResult, run_in_sandbox

#: characters of one part of a check's output (under the sandbox's 2,000-character trim)
PART_CHARS = 1200
#: parts kept per check: the head part and the tail parts of a longer output
PARTS = 5
#: tools given as a bare name that run as `python -m TOOL` (their scripts may not be on PATH)
MODULE_TOOLS = ("pytest", "ruff", "mypy", "pyflakes", "pylint", "black", "flake8")
_MARK = re.compile(r"<<<ponder-out (\d+) (\d+)>>>\n?(.*?)<<<end>>>", re.DOTALL)
_E_PREFIX = re.compile(r"^E {3}(?: {2})?", re.MULTILINE)  # pytest indents a message's later lines by 2


@dataclass(frozen=True)
class CheckRun:
    """One command's result on one version of the repository."""

    command: str
    passed: bool
    output: str
    exit_code: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "command": self.command,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "output": self.output,
        }


def default_limits(seconds: float = 120.0) -> Limits:
    """Checks are whole tool runs (mypy takes seconds even on a small tree): more time and
    memory than a unit test of one function."""
    return Limits(wall_seconds=seconds, cpu_seconds=int(seconds), memory_mb=2048, max_output_bytes=256 * 1024)


def _module(commands: Sequence[str], timeout: float) -> str:
    """The test module that runs each command in `repo/` (standard library only)."""
    return f"""import os, subprocess, sys

COMMANDS = {json.dumps(list(commands))}
TOOLS = {json.dumps(list(MODULE_TOOLS))}
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "repo")
RESULTS = {{}}


def _run(i):
    cmd = COMMANDS[i]
    first = cmd.split(None, 1)
    if first and first[0] in TOOLS:
        cmd = sys.executable + " -m " + cmd
    env = dict(os.environ)
    env.update(PYTHONDONTWRITEBYTECODE="1", RUFF_NO_CACHE="true", MYPY_CACHE_DIR=os.devnull,
               PYTEST_ADDOPTS="-p no:cacheprovider", NO_COLOR="1", PYTHONPATH=REPO)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    try:
        r = subprocess.run(cmd, shell=True, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout={timeout!r})
        code, out = r.returncode, (r.stdout + r.stderr)
    except subprocess.TimeoutExpired as exc:
        code, out = None, "timed out after {timeout:g} s\\n" + str(exc.stdout or "")
    out = out.strip()
    if len(out) > {PART_CHARS * PARTS}:
        out = out[:{PART_CHARS}] + "\\n...\\n" + out[-{PART_CHARS * (PARTS - 1)}:]
    parts = [out[k:k + {PART_CHARS}] for k in range(0, len(out), {PART_CHARS})] or [""]
    RESULTS[i] = (code, parts)
    return code, parts


def _say(i, k, part):
    return "<<<ponder-out %d %d>>>\\n%s<<<end>>>" % (i, k, part)
"""


def _tests(n: int) -> str:
    out = []
    for i in range(n):
        out.append(
            f"\n\ndef test_check_{i}():\n    code, parts = _run({i})\n"
            f"    assert code == 0, _say({i}, 0, parts[0]) + ' exit=%s' % code\n"
        )
        for k in range(1, PARTS + 1):
            out.append(
                f"\n\ndef test_out_{i}_{k}():\n    code, parts = RESULTS.get({i}, (None, []))\n"
                f"    assert len(parts) <= {k}, _say({i}, {k}, parts[{k}] if len(parts) > {k} else '')\n"
            )
    return "".join(out)


def checks_module(commands: Sequence[str], timeout: float) -> str:
    return _module(commands, timeout) + _tests(len(commands))


def _outputs(result: SandboxResult, n: int) -> list[str]:
    parts: dict[tuple[int, int], str] = {}
    for t in result.tests:
        for m in _MARK.finditer(t.error or ""):
            text = m.group(3)
            if "\nE " in t.error or t.error.startswith("E "):  # pytest's report prefixes message lines
                text = _E_PREFIX.sub("", text)
            parts[(int(m.group(1)), int(m.group(2)))] = text
    return ["".join(parts[(i, k)] for k in range(PARTS + 1) if (i, k) in parts).strip() for i in range(n)]


async def run_checks(
    files: dict[str, str], commands: Sequence[str], limits: Limits | None = None
) -> list[CheckRun]:
    """Each command's verdict on the repository `files` (path -> text), in one sandbox run."""
    limits = limits or default_limits()
    timeout = max(1.0, limits.wall_seconds - 5)
    result = await run_in_sandbox(
        "", checks_module(commands, timeout), limits, files={f"repo/{p}": t for p, t in files.items()}
    )
    outputs = _outputs(result, len(commands))
    runs = []
    for i, command in enumerate(commands):
        test = next((t for t in result.tests if re.search(rf"\btest_check_{i}\b", t.name)), None)
        output = outputs[i]
        if test is None:
            output = output or (result.problem() or "the check did not run") + "\n" + result.stderr[-1000:]
        exit_match = re.search(r"exit=(-?\d+|None)", test.error if test else "")
        code = 0 if test is not None and test.passed else None
        if exit_match and exit_match.group(1) not in ("None",):
            code = int(exit_match.group(1))
        runs.append(CheckRun(command, bool(test is not None and test.passed), output.strip(), code))
    return runs


def describe(command: str) -> str:
    """A command as typed, for messages (quoted where needed)."""
    return " ".join(shlex.quote(p) for p in shlex.split(command)) if command.strip() else repr(command)
