"""The program inside the sandbox: `python -I -B runner.py FD`, its payload as JSON on stdin.

Standard library only until the test process imports pytest; nothing from ponder.

- Its first process (pid 1 of the new pid namespace, still root) joins the run's cgroup,
  builds the filesystem view (namespace mode) and forks the test process; it never imports
  candidate code. When the test process ends it reports how (exit code or signal) and how
  many other processes were still alive, kills them and exits, which tears the namespaces
  (and with them every SysV IPC object and mount of the run) down.
- The test process drops to the run's unprivileged uid, sets per-process rlimits and runs
  real pytest with `reporter.Reporter`, which writes one JSON record per test to FD, each carrying
  the run's nonce. The host counts only those records.

The view (namespace mode): a fresh tmpfs root holding /usr (and the /bin, /lib links), the
Python installation and its site-packages read-only, a generated /etc, a minimal /dev, a
fresh /proc of the run's own pid namespace, and private tmpfs /tmp (the working directory is
/tmp/sandbox) and /dev/shm. No home, no projects, no host /tmp, no other process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from typing import Any

WORK = "/tmp/sandbox"
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    import ctypes

    enc = [s.encode() if s is not None else None for s in (source, target, fstype, data)]
    if _libc().mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _bind_ro(src: str, dst: str) -> None:
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    _mount(src, dst, None, _MS_BIND | _MS_REC)
    keep = os.statvfs(src).f_flag & (_MS_NOSUID | _MS_NODEV | _MS_NOEXEC | 1024 | 2048)
    _mount(None, dst, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | keep)


def build_root(new: str, binds: list[str], uid: int, tmpfs_mb: int) -> None:
    """Make the view described in the module docstring at `new` and pivot into it."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    _mount("tmpfs", new, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=2m,mode=755")
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        src = "/" + name
        if os.path.islink(src):
            os.symlink(os.readlink(src), new + src)
        elif os.path.isdir(src):
            _bind_ro(src, new + src)
    opts = f"size={tmpfs_mb}m,mode=1777"
    os.makedirs(new + "/tmp")  # before the binds: a venv may live under /tmp (CI's clones do)
    _mount("tmpfs", new + "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, opts)
    for path in binds:
        if not os.path.exists(new + path):
            _bind_ro(path, new + path)
    os.makedirs(new + "/etc")
    for name in ("ld.so.cache", "localtime"):
        if os.path.isfile("/etc/" + name):
            _bind_ro(os.path.realpath("/etc/" + name), f"{new}/etc/{name}")
    etc = {
        "passwd": f"root:x:0:0::/:/bin/sh\nsandbox:x:{uid}:{uid}::{WORK}:/bin/sh\n",
        "group": f"root:x:0:\nsandbox:x:{uid}:\n",
        "hosts": "127.0.0.1 localhost\n",
    }
    for name, text in etc.items():
        with open(f"{new}/etc/{name}", "w") as f:
            f.write(text)
    os.makedirs(new + "/dev")
    _mount("tmpfs", new + "/dev", "tmpfs", _MS_NOSUID, "size=64k,mode=755")
    for dev in ("null", "zero", "full", "random", "urandom"):
        _bind_ro("/dev/" + dev, f"{new}/dev/{dev}")
        _mount(None, f"{new}/dev/{dev}", None, _MS_REMOUNT | _MS_BIND | _MS_NOSUID)  # writable again
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "0"), ("stdout", "1"), ("stderr", "2")):
        os.symlink(target if name == "fd" else f"/proc/self/fd/{target}", f"{new}/dev/{name}")
    os.makedirs(new + "/dev/shm")
    _mount("tmpfs", new + "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, opts)
    os.makedirs(new + "/proc")
    _mount("proc", new + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    os.chdir(new)
    nr = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is not None and _libc().syscall(nr, b".", b".") == 0:
        _libc().umount2(b".", 2)  # MNT_DETACH: the host's tree is gone from this namespace
    else:  # no pivot_root here: move the new root over / (the old tree stays only underneath)
        _mount(new, "/", None, 8192)  # MS_MOVE
        os.chroot(".")
    os.chdir("/")
    _mount(None, "/", None, _MS_REMOUNT | _MS_NOSUID | _MS_NODEV | _MS_RDONLY)


def write_files(directory: str, files: dict[str, str], uid: int | None) -> None:
    """The candidate, the tests and any extra files; the directory belongs to the run's uid."""
    for name, text in files.items():
        path = os.path.normpath(os.path.join(directory, name))
        if not path.startswith(directory + os.sep):
            raise ValueError(f"file name escapes the sandbox: {name}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    if uid is not None:
        for root, dirs, names in os.walk(directory):
            for p in [root, *(os.path.join(root, n) for n in dirs + names)]:
                os.chown(p, uid, uid)


def _emitter(fd: int, nonce: str) -> Any:
    main_pid, write, dumps, getpid, exit_now = os.getpid(), os.write, json.dumps, os.getpid, os._exit

    def emit(rec: dict[str, Any]) -> None:
        if getpid() != main_pid:  # a fork of the test process must not report
            exit_now(0)
        rec["nonce"] = nonce
        data = (dumps(rec) + "\n").encode()
        while data:
            data = data[write(fd, data) :]

    return emit


def main(result_fd: int) -> None:  # pragma: no cover - runs inside the sandbox
    payload = json.loads(sys.stdin.buffer.read())
    for procs in payload["cgroup_procs"]:
        with open(procs, "w") as f:
            f.write("0")
    uid, limits = payload["uid"], payload["limits"]
    isolated = payload["mode"] == "namespaces"
    _load_reporter()  # from the host's tree, which the view no longer holds
    if isolated:
        build_root(payload["workdir"], payload["binds"], uid or 0, int(limits["tmpfs_mb"]))
        work = WORK
        os.mkdir(work, 0o700)
        socket.sethostname("sandbox")  # not the host's name (UTS namespace)
    else:
        work = payload["workdir"]
    write_files(work, payload["files"], uid)
    devnull = os.open(os.devnull, os.O_RDONLY)  # the view's: no descriptor into the host's tree
    os.dup2(devnull, 0)
    os.close(devnull)
    emit = _emitter(result_fd, payload["nonce"])
    _preload_pytest(work if not isolated else None)
    pid = os.fork()
    if pid == 0:
        try:
            _test_process(payload, work, result_fd)
        finally:
            os._exit(70)

    # The host enforces the wall limit; this bound holds even if the host dies first.
    def overdue(*_: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGALRM, overdue)
    signal.alarm(int(float(limits["wall_seconds"])) + 5)
    status = 0
    while True:  # as pid 1 of the namespace, also reap orphans
        try:
            got, st = os.wait()
        except ChildProcessError:
            break
        if got == pid:
            status = st
            break
    signal.alarm(0)
    strays = ipc = 0
    if isolated:  # what would outlive the tests if the namespaces did not end with us
        strays = sum(1 for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid())
        for kind in ("shm", "sem", "msg"):
            with contextlib.suppress(OSError), open(f"/proc/sysvipc/{kind}") as f:
                ipc += max(0, len(f.read().splitlines()) - 1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while True:
                os.wait()
    rec: dict[str, Any] = {"kind": "exit", "strays": strays, "ipc": ipc}
    if os.WIFSIGNALED(status):
        rec["signal"] = os.WTERMSIG(status)
    else:
        rec["code"] = os.waitstatus_to_exitcode(status)
    emit(rec)
    os._exit(0)


# what candidates commonly import, loaded ahead in process mode (see _preload_pytest)
_COMMON_MODULES = [
    *("asyncio", "bisect", "collections", "ctypes", "dataclasses", "datetime", "decimal", "fractions"),
    *("functools", "hashlib", "heapq", "itertools", "json", "math", "multiprocessing", "operator"),
    *("random", "re", "socket", "statistics", "string", "subprocess", "threading", "typing", "unicodedata"),
]


_REPORTER: Any = None


def _load_reporter() -> None:
    """reporter.py, next to this file, by path (`python -I` puts no directory on sys.path)."""
    global _REPORTER
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "ponder_sandbox_reporter", os.path.join(here, "reporter.py")
    )
    assert spec is not None and spec.loader is not None
    _REPORTER = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = _REPORTER
    spec.loader.exec_module(_REPORTER)


def _preload_pytest(warm_up_in: str | None) -> None:
    """Import pytest and its built-in plugins before the fork (once, as root). In process mode
    the run's uid may not be able to read the Python installation (a pyenv under /root), so
    there a collect-only session on an empty directory also loads what pytest imports late;
    the candidate itself then has only the modules loaded so far (README)."""
    import importlib

    import _pytest.config
    import pytest

    for name in _pytest.config.default_plugins:
        with contextlib.suppress(ImportError):
            importlib.import_module(f"_pytest.{name}")
    for name in ("_pytest.assertion.rewrite", "_pytest._io.saferepr", "pdb", "inspect"):
        importlib.import_module(name)
    if warm_up_in is not None:
        for name in _COMMON_MODULES:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        empty = os.path.join(warm_up_in, ".warm-up")
        os.mkdir(empty)
        saved = os.dup(1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        try:
            pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-c", os.devnull, empty])
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.rmdir(empty)


def _test_process(payload: dict[str, Any], work: str, result_fd: int) -> None:  # pragma: no cover
    import resource

    limits, uid = payload["limits"], payload["uid"]
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    with contextlib.suppress(Exception):
        _libc().prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid binary leads back to root
    mem = int(limits["memory_mb"]) * 2**20
    fsize = int(limits["file_size_mb"]) * 2**20
    cpu = int(limits["cpu_seconds"])
    for res, value in (
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_NPROC, (int(limits["max_processes"]),) * 2),
        (resource.RLIMIT_FSIZE, (fsize, fsize)),
        (resource.RLIMIT_NOFILE, (256, 256)),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(res, value)
    if payload["mode"] != "namespaces":
        sys.addaudithook(_no_network)
    os.chdir(work)
    sys.path.insert(0, work)  # `import candidate`; importlib mode does not add the rootdir
    os.set_inheritable(result_fd, False)
    emit = _emitter(result_fd, payload["nonce"])
    import pytest

    test_path = os.path.join(work, "test_candidate.py")
    reporter = _REPORTER.Reporter(emit, test_path, limits.get("per_test_seconds"))
    args = [
        "test_candidate.py",
        "-q",
        "--no-header",
        "--tb=short",
        *("-p", "no:cacheprovider", "-p", "no:doctest", "-p", "no:junitxml", "-p", "no:pastebin"),
        "--import-mode=importlib",
        f"--rootdir={work}",
        "-c",
        os.devnull,
        f"--basetemp={work}/.pytest",
    ]
    code = pytest.main(args, plugins=[reporter])
    emit({"kind": "done", "exit": int(code), "collected": reporter.collected})
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


def _no_network(event: str, args: tuple[Any, ...]) -> None:
    """Process mode only, and easy to get around (ctypes): a speed bump, not isolation."""
    if event == "socket.__new__" and len(args) > 1 and args[1] == socket.AF_UNIX:
        return  # asyncio's self-pipe and multiprocessing need it
    if event in ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo"):
        raise PermissionError("network access is disabled in the sandbox")


if __name__ == "__main__":  # pragma: no cover
    main(int(sys.argv[1]))
