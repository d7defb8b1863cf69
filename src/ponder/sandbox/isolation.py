"""Which isolation a run gets, and what the runner needs to build it.

"namespaces": `unshare` gives the run new network, pid, mount, IPC and UTS namespaces, and
the runner pivots into a view holding only what Python and pytest need (see runner.py).
"process": none of that (a plain child process under a separate uid, with rlimits, a
cgroup where possible and cleanup by uid); it isolates nothing and is used only when asked
for (`Limits(isolation="process")` or PONDER_SANDBOX_ISOLATION=process), never as a silent
fallback: "auto" where namespaces do not work raises SandboxUnavailable.

bubblewrap would build a similar view, but is rarely installed and, as root, needs a user
namespace to change uid; `unshare` (util-linux) is on every Linux and the runner does the
mounts itself, so this path works wherever namespaces do.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import subprocess
import sys

from ponder.sandbox.result import ISOLATED, NOT_ISOLATED, Limits
from ponder.settings import settings

_works: bool | None = None


class SandboxUnavailable(RuntimeError):
    """Namespaces are not available here and process mode was not asked for."""


def isolation_setting(limits: Limits) -> str:
    """The requested mode: "auto", "namespaces" or "process" (parameter over environment)."""
    if limits.isolation is not None:
        if limits.isolation not in ("auto", ISOLATED, NOT_ISOLATED):
            raise SandboxUnavailable(
                f"unknown sandbox isolation {limits.isolation!r}: use auto, namespaces or process"
            )
        return limits.isolation
    try:
        return settings().sandbox_isolation or "auto"
    except ValueError as exc:  # PONDER_SANDBOX_ISOLATION holds something else
        raise SandboxUnavailable(str(exc)) from None


def unshare_argv() -> list[str]:
    exe = shutil.which("unshare")
    if exe is None:
        return []
    argv = [exe, "--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        argv.insert(1, "--map-root-user")
    return argv


def namespaces_work() -> bool:
    """Whether `unshare` can make the namespaces here (checked once per process)."""
    global _works
    if _works is None:
        argv = unshare_argv()
        _works = False
        if argv and sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                _works = subprocess.run([*argv, "true"], capture_output=True, timeout=10).returncode == 0
    return _works


def isolation_mode(limits: Limits | None = None) -> str:
    """The mode a run with `limits` gets: "namespaces" or (opted in) "process"."""
    wanted = isolation_setting(limits or Limits())
    if wanted == NOT_ISOLATED:
        return NOT_ISOLATED
    if namespaces_work():
        return ISOLATED
    raise SandboxUnavailable(
        "cannot isolate the sandbox here (no working `unshare` namespaces); to run the tests "
        "without isolation anyway set PONDER_SANDBOX_ISOLATION=process"
    )


@functools.cache
def python_binds() -> list[str]:
    """Host directories the view binds read-only: the Python installation (venv and base)
    and wherever pytest and its dependencies live; outermost only, /usr being there anyway."""
    wanted = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    for mod in ("pytest", "_pytest", "pluggy", "iniconfig", "packaging"):
        spec = importlib.util.find_spec(mod)
        if spec is not None and spec.origin:
            origin = spec.origin
            package = origin.endswith("__init__.py")
            wanted.add(os.path.dirname(os.path.dirname(origin)) if package else os.path.dirname(origin))
    real = sorted({os.path.realpath(p) for p in wanted if p and os.path.isdir(p)})
    keep: list[str] = []
    for p in real:
        if p.startswith("/usr/") or p == "/usr" or any(p.startswith(k + os.sep) for k in keep):
            continue
        keep.append(p)
    return keep
