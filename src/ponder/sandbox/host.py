"""The host side of a run: start the runner in its namespaces and cgroup, feed it, enforce the
wall, CPU and output limits, read its records, then tear everything down and check that
nothing of the run is left (see leftovers.py).

Only records carrying the run's nonce count, and a run passes only when pytest finished,
every test function named in the tests file (read here with `ast`, not in the sandbox) was
reported, every reported test passed and nothing was left behind. `sys.exit(0)` or
`os._exit(0)` before or during the tests is therefore no pass.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
import weakref
from dataclasses import asdict

from ponder.sandbox import leftovers
from ponder.sandbox.cgroup import Cgroup
from ponder.sandbox.isolation import isolation_mode, python_binds, unshare_argv
from ponder.sandbox.result import ISOLATED, Limits, SandboxResult, TestResult

log = logging.getLogger(__name__)

_RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_ERROR_CHARS = 2000
_SIGNAL_HINTS = {
    signal.SIGXCPU: "the CPU time limit",
    signal.SIGXFSZ: "the file size limit",
    signal.SIGKILL: "killed (memory limit, or the run was stopped)",
    signal.SIGSEGV: "a crash",
}

_max_concurrency = max(1, min(4, os.cpu_count() or 1))
_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def set_max_concurrency(n: int) -> None:
    """Bound on sandboxes running at once (per event loop)."""
    global _max_concurrency
    _max_concurrency = max(1, n)
    _semaphores.clear()


def _semaphore() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    sem = _semaphores.get(loop)
    if sem is None:
        sem = _semaphores[loop] = asyncio.Semaphore(_max_concurrency)
    return sem


def expected_tests(tests: str) -> list[str]:
    """Test functions and `Test*` methods the tests file defines, as pytest names them
    (parametrized cases share the base name); empty if it does not parse."""
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError):
        return []
    names = []
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, funcs) and node.name.startswith("test"):
            names.append(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names += [
                f"{node.name}::{m.name}"
                for m in node.body
                if isinstance(m, funcs) and m.name.startswith("test")
            ]
    return names


async def run_in_sandbox(
    code: str,
    tests: str,
    limits: Limits | None = None,
    *,
    files: dict[str, str] | None = None,
) -> SandboxResult:
    """Run pytest on `tests` (a module importing `candidate`) against `code` (module `candidate`).

    Raises SandboxUnavailable when the run cannot be isolated and process mode was not asked for.
    """
    limits = limits or Limits()
    mode = isolation_mode(limits)
    async with _semaphore():
        return await _run(code, tests, limits, files or {}, mode)


async def _read_capped(
    stream: asyncio.StreamReader | None, keep: int, kill_at: int, over: asyncio.Event
) -> bytes:
    """Keep the first `keep` bytes, drain the rest to EOF (a stream left unread would stall
    the pipe and `Process.wait()`); past `kill_at` in total set `over`."""
    if stream is None:
        return b""
    kept = bytearray()
    total = 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
        if total > kill_at:
            over.set()
    return bytes(kept)


async def _watch_cpu(group: Cgroup, seconds: float, over: asyncio.Event) -> None:
    while not over.is_set():
        used = group.cpu_seconds()
        if used is None:
            return
        if used > seconds:
            over.set()
            return
        await asyncio.sleep(0.1)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _task_bytes(task: asyncio.Task[bytes]) -> bytes:
    return task.result() if task.done() and not task.cancelled() and task.exception() is None else b""


async def _run(code: str, tests: str, limits: Limits, files: dict[str, str], mode: str) -> SandboxResult:
    is_root = os.geteuid() == 0
    uid = random.randint(1_000_000, 1_999_999_999) if is_root else None
    nonce = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="ponder-sandbox-")
    group = (
        Cgroup.create(os.path.basename(workdir), limits.memory_mb, limits.max_processes) if is_root else None
    )
    result = SandboxResult(isolation=mode, cgroup=group is not None, uid=uid, workdir=workdir)
    payload = {
        "files": {**files, "candidate.py": code, "test_candidate.py": tests},
        "nonce": nonce,
        "uid": uid,
        "mode": mode,
        "workdir": workdir,
        "limits": asdict(limits),
        "binds": python_binds() if mode == ISOLATED else [],
        "cgroup_procs": group.procs_files if group else [],
    }
    if mode != ISOLATED and uid is not None:
        os.chown(workdir, uid, uid)
    argv = [*(unshare_argv() if mode == ISOLATED else []), sys.executable, "-I", "-B", _RUNNER]
    home = "/tmp/sandbox" if mode == ISOLATED else workdir
    env = {
        "PATH": _SAFE_PATH,
        "HOME": home,
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp" if mode == ISOLATED else workdir,
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            str(write_fd),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            pass_fds=(write_fd,),
        )
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        _teardown(group, uid, workdir, result)
        raise
    os.close(write_fd)
    loop = asyncio.get_running_loop()
    results_reader = asyncio.StreamReader(limit=2**24)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(results_reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    over, cpu_over = asyncio.Event(), asyncio.Event()
    out_task = asyncio.create_task(
        _read_capped(proc.stdout, limits.max_output_bytes, limits.kill_output_bytes, over)
    )
    err_task = asyncio.create_task(
        _read_capped(proc.stderr, limits.max_output_bytes, limits.kill_output_bytes, over)
    )
    res_task = asyncio.create_task(_read_capped(results_reader, 2**23, 2**23, asyncio.Event()))
    cpu_task = asyncio.create_task(_watch_cpu(group, limits.cpu_seconds, cpu_over)) if group else None
    try:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(json.dumps(payload).encode())
            await proc.stdin.drain()
            proc.stdin.close()
        wait_task = asyncio.create_task(proc.wait())
        stops = {asyncio.create_task(over.wait()), asyncio.create_task(cpu_over.wait())}
        done, _ = await asyncio.wait(
            {wait_task, *stops}, timeout=limits.wall_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for stop in stops:
            stop.cancel()
        if wait_task not in done:
            result.output_exceeded = over.is_set()
            result.cpu_exceeded = cpu_over.is_set() and not result.output_exceeded
            result.timed_out = not (result.output_exceeded or result.cpu_exceeded)
            _kill_group(proc.pid)
        # In process mode a stray that left the group may hold the pipes open: bound the wait.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(wait_task), timeout=10.0)
        wait_task.cancel()
        result.exit_code = proc.returncode
        if mode != ISOLATED:  # the runner is gone: anything of the run still alive outlived it
            alive = (group.pids() if group else set()) | set(leftovers.uid_processes(uid) if uid else [])
            if alive:
                result.leftovers.append(f"{len(alive)} process(es) still running after the tests ended")
        _kill_group(proc.pid)
        if group:
            group.kill_all()
        elif uid is not None:  # strays of the uid may hold the pipes open
            leftovers.kill_uid(uid)
        for reader in (out_task, err_task, res_task):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), timeout=2.0)
    finally:
        for pending in (out_task, err_task, res_task, *([cpu_task] if cpu_task else [])):
            pending.cancel()
        transport.close()
        _kill_group(proc.pid)  # also on cancellation: nothing of the run may outlive it
        # Close the subprocess transport while its loop runs, not later from the collector.
        subprocess_transport = getattr(proc, "_transport", None)
        if subprocess_transport is not None:
            subprocess_transport.close()
        _teardown(group, uid, workdir, result)
    result.seconds = time.monotonic() - start
    result.stdout = _task_bytes(out_task).decode(errors="replace")
    result.stderr = _task_bytes(err_task).decode(errors="replace")
    _parse_records(_task_bytes(res_task), nonce, result)
    reported = {t.name.split("[", 1)[0] for t in result.tests}
    result.missing = [name for name in expected_tests(tests) if name not in reported]
    if result.leftovers:
        log.warning("sandbox run left things behind (removed): %s", "; ".join(result.leftovers))
    return result


def _teardown(group: Cgroup | None, uid: int | None, workdir: str, result: SandboxResult) -> None:
    """Kill, remove and check: what survives or had to be removed goes to `result.leftovers`."""
    found = result.leftovers
    if group is not None:
        result.cpu_seconds = group.cpu_seconds()
        result.memory_peak_mb = group.memory_peak_mb()
        result.memory_exceeded = group.memory_exceeded()
        if survivors := group.kill_all():
            found.append(f"{len(survivors)} process(es) survived the kill")
        if stuck := group.remove():
            found.append(f"cgroup could not be removed: {', '.join(stuck)}")
    if uid is not None:
        if stragglers := leftovers.kill_uid(uid):
            found.append(f"{len(stragglers)} process(es) of the sandbox uid survived the kill")
        if ipc := leftovers.ipc_objects(uid):
            leftovers.remove_ipc(ipc)
            found.append("SysV IPC objects: " + ", ".join(f"{k} {i}" for k, i in ipc))
        if paths := [p for p in leftovers.uid_files(uid) if p != workdir]:
            for p in paths:
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(p)
            found.append("files outside the working directory: " + ", ".join(paths))
    if mounts := leftovers.mounts_under(workdir):
        found.append("mounts: " + ", ".join(mounts))
    shutil.rmtree(workdir, ignore_errors=True)
    if os.path.exists(workdir):
        found.append(f"working directory could not be removed: {workdir}")


def _parse_records(raw: bytes, nonce: str, result: SandboxResult) -> None:
    collected = None
    for line in raw.decode(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict) or rec.get("nonce") != nonce:
            continue
        kind = rec.get("kind")
        if kind == "test":
            result.tests.append(
                TestResult(
                    name=str(rec.get("name")),
                    passed=bool(rec.get("passed")),
                    error=str(rec.get("error", ""))[:_ERROR_CHARS],
                    seconds=float(rec.get("seconds", 0.0)),
                    skipped=bool(rec.get("skipped")),
                    expected=rec.get("expected"),
                    got=rec.get("got"),
                )
            )
        elif kind in ("setup", "tampered"):
            text = str(rec.get("error", ""))[:_ERROR_CHARS]
            result.setup_error = f"{result.setup_error}\n{text}" if result.setup_error else text
        elif kind == "done":
            result.completed = True
            collected = rec.get("collected")
            if rec.get("exit") not in (0, 1, 5) and not result.setup_error:
                result.setup_error = f"pytest stopped early (exit code {rec.get('exit')})"
        elif kind == "exit":
            if rec.get("strays"):
                result.leftovers.append(f"{rec['strays']} process(es) still running after the tests ended")
            if rec.get("ipc"):
                result.leftovers.append(f"{rec['ipc']} SysV IPC object(s) at the end of the run")
            if "signal" in rec:
                sig = int(rec["signal"])
                name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
                result.exit_note = f"the test process was killed by {name}" + (
                    f" ({_SIGNAL_HINTS[signal.Signals(sig)]})" if sig in _SIGNAL_HINTS else ""
                )
                result.cpu_exceeded = result.cpu_exceeded or sig == signal.SIGXCPU
            elif rec.get("code") not in (0, None) and not result.completed:
                result.exit_note = f"the test process exited with code {rec.get('code')}"
    if result.completed and isinstance(collected, int) and len(result.tests) < collected:
        result.setup_error = result.setup_error or f"only {len(result.tests)} of {collected} tests reported"
