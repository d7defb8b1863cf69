"""Run untrusted candidate code and its pytest-style tests in a contained child process.

Why this shape:
- Limits must hold when the host runs as root (RLIMIT_NPROC is not enforced for root), so
  the tests always run under a fresh, random, unprivileged uid: NPROC applies, file
  permissions apply, and the code cannot signal host processes.
- Where `unshare` works (this machine, as root or with user namespaces) the run gets its own
  network namespace (no interfaces up: no network), pid namespace (when its init exits the
  kernel kills every process left, even ones that called setsid), and mount namespace with
  fresh tmpfs over /tmp, /var/tmp, /dev/shm, /run/lock and the home directory (hiding the
  host's temp files and secrets; the Python install is re-bound if it lives in the home).
  Elsewhere it falls back to a plain process: an audit hook blocks socket creation and
  every process of the sandbox uid is killed afterwards.
- Only a result record carrying a per-run nonce, written by the in-sandbox runner after the
  tests ran, counts: `sys.exit(0)` / `os._exit(0)` before or during the tests is no pass.
  (Code that deliberately digs the nonce out of the runner's memory can forge results; the
  sandbox contains harm, it does not make cheating impossible.)

This file is also the in-sandbox runner (`python -I sandbox.py FD`, payload as JSON on
stdin); that part uses only the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Limits",
    "SandboxResult",
    "TestResult",
    "isolation_mode",
    "run_in_sandbox",
    "set_max_concurrency",
]

_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox run (wall and CPU seconds, memory, processes, output)."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 1024
    max_processes: int = 32
    max_output_bytes: int = 64 * 1024  # kept of stdout and of stderr each
    kill_output_bytes: int = 8 * 1024 * 1024  # read past this and the run is killed
    file_size_mb: int = 16
    tmpfs_mb: int = 64
    per_test_seconds: float | None = None  # SIGALRM per test; None: only the wall limit


@dataclass
class TestResult:
    name: str
    passed: bool
    error: str = ""
    seconds: float = 0.0
    skipped: bool = False


@dataclass
class SandboxResult:
    """What happened in one run; `passed` only when the runner finished and every test passed."""

    tests: list[TestResult] = field(default_factory=list)
    completed: bool = False
    setup_error: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    output_exceeded: bool = False
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    isolation: str = ""

    @property
    def n_passed(self) -> int:
        return sum(1 for t in self.tests if t.passed and not t.skipped)

    @property
    def n_counted(self) -> int:
        return sum(1 for t in self.tests if not t.skipped)

    @property
    def fraction(self) -> float:
        return self.n_passed / self.n_counted if self.n_counted else 0.0

    @property
    def passed(self) -> bool:
        return (
            self.completed
            and self.setup_error is None
            and self.n_counted > 0
            and self.n_passed == self.n_counted
        )

    def problem(self) -> str | None:
        """Why the run as a whole failed (not a single test), for feedback."""
        if self.timed_out:
            return "time limit exceeded: the run was killed"
        if self.output_exceeded:
            return "output limit exceeded: the run was killed"
        if self.setup_error:
            return self.setup_error
        if not self.completed:
            tail = self.stderr.strip().splitlines()[-3:]
            why = f"the sandbox exited (code {self.exit_code}) before the tests finished"
            return why + (": " + " | ".join(tail) if tail else "")
        if self.n_counted == 0:
            return "no test functions were found"
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(passed=self.passed, n_passed=self.n_passed, n_tests=self.n_counted)
        return d


# ---------------------------------------------------------------- host side

_max_concurrency = max(1, min(4, os.cpu_count() or 1))
_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)
_isolation: str | None = None


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


def _unshare_argv() -> list[str]:
    exe = shutil.which("unshare")
    if exe is None:
        return []
    argv = [exe, "--net", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc"]
    if os.geteuid() != 0:
        argv.insert(1, "--map-root-user")
    return argv


def isolation_mode() -> str:
    """Either "namespaces" (a fresh net/pid/mount namespace can be made here) or "process".

    PONDER_SANDBOX_ISOLATION=process forces the fallback (to test it, or where namespaces
    misbehave).
    """
    global _isolation
    if os.environ.get("PONDER_SANDBOX_ISOLATION") == "process":
        return "process"
    if _isolation is None:
        argv = _unshare_argv()
        ok = False
        if argv and sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                ok = subprocess.run([*argv, "true"], capture_output=True, timeout=10).returncode == 0
        _isolation = "namespaces" if ok else "process"
    return _isolation


def _world_reachable(path: str) -> bool:
    """Whether a stranger uid can reach and execute/read `path` (every parent searchable)."""
    p = Path(path).resolve()
    try:
        for parent in p.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        return bool(p.stat().st_mode & (stat.S_IXOTH | stat.S_IROTH))
    except OSError:
        return False


def _interpreter(mode: str, drop_uid: bool) -> str:
    if mode == "namespaces" or not drop_uid or _world_reachable(sys.executable):
        return sys.executable
    for cand in (f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}", "/usr/bin/python3"):
        if os.path.exists(cand) and _world_reachable(cand):
            return cand
    return sys.executable


async def _read_capped(
    stream: asyncio.StreamReader | None, keep: int, kill_at: int, over: asyncio.Event
) -> bytes:
    """Keep the first `keep` bytes, drain the rest; past `kill_at` in total set `over`.

    Draining goes on to EOF: a stream left unread pauses its transport, which then never
    sees the pipe close, and `Process.wait()` would wait forever.
    """
    if stream is None:
        return b""
    kept = bytearray()
    total = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        total += len(chunk)
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
        if total > kill_at:
            over.set()
    return bytes(kept)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _kill_uid(uid: int) -> None:
    """Kill every process of `uid` (those that left the process group), from a helper child."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


async def run_in_sandbox(
    code: str,
    tests: str,
    limits: Limits | None = None,
    *,
    files: dict[str, str] | None = None,
) -> SandboxResult:
    """Run `tests` (a module importing `candidate`) against `code` (module `candidate`).

    Every `test_*` function (and `Test*` class method) is run separately and reported.
    """
    limits = limits or Limits()
    async with _semaphore():
        return await _run(code, tests, limits, files or {})


async def _run(code: str, tests: str, limits: Limits, files: dict[str, str]) -> SandboxResult:
    mode = isolation_mode()
    is_root = os.geteuid() == 0
    uid = random.randint(1_000_000, 1_999_999_999) if is_root else None
    nonce = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="ponder-sandbox-")
    runner = os.path.join(workdir, "_ponder_runner.py")
    shutil.copyfile(__file__, runner)
    payload = {
        "code": code,
        "tests": tests,
        "files": files,
        "nonce": nonce,
        "uid": uid,
        "mode": mode,
        "workdir": workdir,
        "limits": asdict(limits),
    }
    if mode == "process":
        _write_files(workdir, payload)
        if uid is not None:
            for p in [workdir, *(os.path.join(workdir, n) for n in os.listdir(workdir))]:
                os.chown(p, uid, uid)
    os.chmod(runner, 0o644)
    argv = [*(_unshare_argv() if mode == "namespaces" else []), _interpreter(mode, uid is not None)]
    argv += ["-I", "-B", runner]
    env = {
        "PATH": _SAFE_PATH,
        "HOME": "/tmp/sandbox" if mode == "namespaces" else workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp",
    }
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    result = SandboxResult(isolation=mode)
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
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    os.close(write_fd)
    loop = asyncio.get_running_loop()
    results_reader = asyncio.StreamReader(limit=2**24)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(results_reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    over = asyncio.Event()
    out_task = asyncio.create_task(
        _read_capped(proc.stdout, limits.max_output_bytes, limits.kill_output_bytes, over)
    )
    err_task = asyncio.create_task(
        _read_capped(proc.stderr, limits.max_output_bytes, limits.kill_output_bytes, over)
    )
    res_task = asyncio.create_task(_read_capped(results_reader, 2**23, 2**23, asyncio.Event()))
    try:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(json.dumps(payload).encode())
            await proc.stdin.drain()
            proc.stdin.close()
        wait_task = asyncio.create_task(proc.wait())
        over_task = asyncio.create_task(over.wait())
        done, _ = await asyncio.wait(
            {wait_task, over_task}, timeout=limits.wall_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        if wait_task not in done:
            result.output_exceeded = over.is_set()
            result.timed_out = not result.output_exceeded
            _kill_group(proc.pid)
        over_task.cancel()
        # wait() also waits for stdout/stderr to close; a stray process that left the group
        # (only possible without namespaces) could hold them open, so bound that wait.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(wait_task), timeout=10.0)
        wait_task.cancel()
        _kill_group(proc.pid)
        if uid is not None and mode == "process":
            _kill_uid(uid)
        result.exit_code = proc.returncode
        # Everything holding the pipes is dead now (namespace gone, uid killed); a stray
        # non-root process that left the group could still hold them, so bound the wait.
        for task in (out_task, err_task, res_task):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=2.0)
    finally:
        for task in (out_task, err_task, res_task):
            task.cancel()
        transport.close()
        # Also on cancellation (a caller's deadline): nothing of the run may outlive it.
        _kill_group(proc.pid)
        # Close the subprocess transport while its loop runs: left to the garbage
        # collector it would try to close its pipes on a loop that may be gone.
        subprocess_transport = getattr(proc, "_transport", None)
        if subprocess_transport is not None:
            subprocess_transport.close()
        if uid is not None and mode == "process":
            _kill_uid(uid)
        shutil.rmtree(workdir, ignore_errors=True)
    result.seconds = time.monotonic() - start
    result.stdout = (
        out_task.result().decode(errors="replace") if out_task.done() and not out_task.cancelled() else ""
    )
    result.stderr = (
        err_task.result().decode(errors="replace") if err_task.done() and not err_task.cancelled() else ""
    )
    raw = res_task.result() if res_task.done() and not res_task.cancelled() else b""
    _parse_records(raw, nonce, result)
    return result


def _parse_records(raw: bytes, nonce: str, result: SandboxResult) -> None:
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
                )
            )
        elif kind == "setup":
            result.setup_error = str(rec.get("error", ""))[:_ERROR_CHARS]
        elif kind == "done":
            result.completed = True


# ---------------------------------------------------------------- sandbox side (stdlib only)


def _write_files(directory: str, payload: dict[str, Any]) -> None:
    named = {
        **payload.get("files", {}),
        "candidate.py": payload["code"],
        "test_candidate.py": payload["tests"],
    }
    for name, text in named.items():
        path = os.path.normpath(os.path.join(directory, name))
        if not path.startswith(directory + os.sep):
            raise ValueError(f"file name escapes the sandbox: {name}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _mount(libc: Any, source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    import ctypes

    rc = libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _setup_mounts(limits: dict[str, Any]) -> str:
    """Fresh tmpfs over the writable shared dirs and the home; returns the work directory.

    The interpreter and its packages may live under a masked dir (a venv in /tmp, pyenv in
    the home): those are opened before masking and bound back afterwards, so the sandbox
    sees the same Python, pytest included, wherever the project is installed."""
    ms_nosuid, ms_nodev, ms_bind, ms_rec = 2, 4, 4096, 16384
    libc = _libc()
    tmpfs_opts = f"size={int(limits['tmpfs_mb'])}m,mode=1777"
    home = os.path.realpath(os.path.expanduser("~root" if os.geteuid() == 0 else "~"))
    masked = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"]
    if home not in ("/", "/tmp") and os.path.isdir(home):
        masked.append(home)
    masked = [d for d in masked if os.path.isdir(d) and not os.path.islink(d)]
    wanted = {sys.base_prefix, sys.prefix, os.path.dirname(os.path.abspath(__file__))}
    wanted |= {p for p in sys.path if p and os.path.isdir(p)}
    real = {os.path.realpath(p) for p in wanted}
    inside = sorted(p for p in real if any(p.startswith(d + os.sep) for d in masked))
    keep: list[str] = []
    for p in inside:  # keep only the outermost ones
        if not any(p.startswith(k + os.sep) for k in keep):
            keep.append(p)
    held = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in keep]
    for d in masked:
        size = "size=1m,mode=755" if d == home else tmpfs_opts
        with contextlib.suppress(OSError):
            _mount(libc, "tmpfs", d, "tmpfs", ms_nosuid | ms_nodev, size)
    for p, fd in held:
        os.makedirs(p, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fd}", p, None, ms_bind | ms_rec, None)
        os.close(fd)
    work = "/tmp/sandbox"
    os.mkdir(work, 0o755)
    return work


def _trim(text: str, limit: int = _ERROR_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n...\n" + text[-half:]


def _parametrized(name: str, fn: Any) -> list[tuple[str, dict[str, Any]]]:
    """The cases of `@pytest.mark.parametrize` marks (read from `pytestmark`, so pytest
    itself is not needed), as (test id, keyword arguments); one plain case otherwise."""
    cases: list[tuple[str, dict[str, Any]]] = [("", {})]
    for mark in reversed(getattr(fn, "pytestmark", [])):
        if getattr(mark, "name", "") != "parametrize" or len(mark.args) < 2:
            continue
        argnames, argvalues = mark.args[0], mark.args[1]
        names = [n.strip() for n in argnames.split(",")] if isinstance(argnames, str) else list(argnames)
        expanded = []
        for i, value in enumerate(argvalues):
            if type(value).__name__ == "ParameterSet":  # pytest.param(...): values is a tuple
                values = tuple(value.values)
            else:
                values = tuple(value) if len(names) > 1 else (value,)
            for suffix, kwargs in cases:
                expanded.append(
                    (
                        f"{suffix}-{i}" if suffix else str(i),
                        {**kwargs, **dict(zip(names, values, strict=False))},
                    )
                )
        cases = expanded
    return [(f"{name}[{suffix}]" if suffix else name, kwargs) for suffix, kwargs in cases]


def _runner_main(result_fd: int) -> None:  # pragma: no cover - runs inside the sandbox
    payload = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    limits = payload["limits"]
    if payload["mode"] == "namespaces":
        work = _setup_mounts(limits)
        _write_files(work, payload)
    else:
        work = payload["workdir"]
    uid = payload["uid"]
    if uid is not None:
        for p in [work, *(os.path.join(work, n) for n in os.listdir(work))]:
            os.chown(p, uid, uid)
    os.environ["HOME"] = work
    pid = os.fork()
    if pid == 0:
        try:
            _child(payload, work, result_fd)
        finally:
            os._exit(70)
    os.close(result_fd)
    status = 0
    while True:  # as pid 1 of the namespace also reap orphans; leftovers die with us
        try:
            got, st = os.wait()
        except ChildProcessError:
            break
        if got == pid:
            status = os.waitstatus_to_exitcode(st)
            break
    os._exit(status if status >= 0 else 128 - status)


def _child(payload: dict[str, Any], work: str, result_fd: int) -> None:  # pragma: no cover
    import importlib
    import inspect
    import resource
    import traceback

    limits = payload["limits"]
    nonce = payload["nonce"]
    uid = payload["uid"]
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    with contextlib.suppress(Exception):
        _libc().prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid binaries back to root
    mem = int(limits["memory_mb"]) * 1024 * 1024
    cpu = int(limits["cpu_seconds"])
    fsize = int(limits["file_size_mb"]) * 1024 * 1024
    for res, value in (
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_NPROC, (int(limits["max_processes"]),) * 2),
        (resource.RLIMIT_FSIZE, (fsize, fsize)),
        (resource.RLIMIT_NOFILE, (256, 256)),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(res, value)
    if payload["mode"] == "process":
        import socket

        def no_network(event: str, args: tuple[Any, ...]) -> None:
            # AF_UNIX stays allowed: asyncio's self-pipe and multiprocessing need it.
            if event == "socket.__new__" and len(args) > 1 and args[1] == socket.AF_UNIX:
                return
            if event in ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo"):
                raise PermissionError("network access is disabled in the sandbox")

        sys.addaudithook(no_network)
    os.chdir(work)
    sys.path.insert(0, work)
    os.set_inheritable(result_fd, False)
    main_pid = os.getpid()
    write, dumps, getpid, exit_now = os.write, json.dumps, os.getpid, os._exit
    here = os.path.abspath(__file__)

    def emit(rec: dict[str, Any]) -> None:
        if getpid() != main_pid:  # a fork of the test process must not report
            exit_now(0)
        rec["nonce"] = nonce
        data = (dumps(rec) + "\n").encode()
        while data:
            data = data[write(result_fd, data) :]

    def describe(exc: BaseException) -> str:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) != here]
        # the error first: it is what a reader (or a revising model) needs, the frames say where
        lines = [*traceback.format_exception_only(type(exc), exc), *traceback.format_list(frames[-6:])]
        return _trim("".join(lines).rstrip())

    for module in ("candidate", "test_candidate"):
        try:
            importlib.import_module(module)
        except BaseException as exc:
            emit({"kind": "setup", "error": f"importing {module} failed:\n{describe(exc)}"})
            emit({"kind": "done"})
            exit_now(0)
    tests_mod = sys.modules["test_candidate"]
    collected: list[tuple[str, Any]] = []
    for name, obj in list(vars(tests_mod).items()):
        if getattr(obj, "__module__", None) != "test_candidate":
            continue
        if name.startswith("test") and inspect.isfunction(obj):
            collected += [(case, (obj, None, kw)) for case, kw in _parametrized(name, obj)]
        elif name.startswith("Test") and inspect.isclass(obj):
            for mname, meth in vars(obj).items():
                if mname.startswith("test") and inspect.isfunction(meth):
                    cases = _parametrized(f"{name}.{mname}", meth)
                    collected += [(case, (obj, mname, kw)) for case, kw in cases]

    class TestTimeout(Exception):
        pass

    def on_alarm(signum: int, frame: Any) -> None:
        raise TestTimeout(f"test exceeded {limits['per_test_seconds']} s")

    per_test = limits.get("per_test_seconds")
    if per_test:
        signal.signal(signal.SIGALRM, on_alarm)
    for name, target in collected:
        start = time.monotonic()
        rec: dict[str, Any] = {"kind": "test", "name": name, "passed": False}
        try:
            if per_test:
                signal.setitimer(signal.ITIMER_REAL, float(per_test))
            owner, method, kwargs = target
            fn = getattr(owner(), method) if method else owner
            required = [
                p.name
                for p in inspect.signature(fn).parameters.values()
                if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.name not in kwargs
            ]
            if required:
                raise TypeError(f"fixtures are not supported by the sandbox runner: {', '.join(required)}")
            out = fn(**kwargs)
            if inspect.iscoroutine(out):
                import asyncio as _asyncio

                _asyncio.run(out)
            rec["passed"] = True
        except BaseException as exc:
            if getpid() != main_pid:
                exit_now(0)
            if type(exc).__name__ == "Skipped":
                rec.update(passed=False, skipped=True, error=str(exc))
            else:
                rec["error"] = describe(exc)
        finally:
            if per_test:
                signal.setitimer(signal.ITIMER_REAL, 0)
        rec["seconds"] = round(time.monotonic() - start, 4)
        emit(rec)
    emit({"kind": "done"})
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    exit_now(0)


if __name__ == "__main__":  # pragma: no cover
    _runner_main(int(sys.argv[1]))
