"""After every run: find what it left on the host, remove it, and name it.

Looks only at what its own run could have made: processes in the run's cgroup or of its
uid (a fresh random uid per run), SysV IPC objects and files of that uid, mounts naming
its working directory. Other sandboxes running at the same time are not touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path

_IPC_RMID = 0
_SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue")


def uid_processes(uid: int) -> list[int]:
    """Live (not zombie) processes whose real or effective uid is `uid`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uids = status.split("Uid:")[1].split()[:2]
        state = status.split("State:")[1].split()[0]
        if str(uid) in uids and state not in ("Z", "X"):
            found.append(int(pid))
    return found


def kill_uid(uid: int, patience: float = 5.0) -> list[int]:
    """SIGKILL every process of `uid` (repeatedly: a fork bomb respawns); returns survivors."""
    deadline = time.monotonic() + patience
    while (left := uid_processes(uid)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    return uid_processes(uid)


def ipc_objects(uid: int) -> list[tuple[str, int]]:
    """(kind, id) of SysV shared memory, semaphores and message queues `uid` owns or made."""
    found = []
    for kind in ("shm", "sem", "msg"):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        except OSError:
            continue
        head = lines[0].split() if lines else []
        for line in lines[1:]:
            row = dict(zip(head, line.split(), strict=False))
            if str(uid) in (row.get("uid"), row.get("cuid")):
                found.append((kind, int(row["shmid" if kind == "shm" else kind + "id"])))
    return found


def remove_ipc(objects: list[tuple[str, int]]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for kind, ident in objects:
        fn = {"shm": libc.shmctl, "sem": libc.semctl, "msg": libc.msgctl}[kind]
        if kind == "sem":
            fn(ident, 0, _IPC_RMID)
        else:
            fn(ident, _IPC_RMID, None)


def uid_files(uid: int) -> list[str]:
    """Entries `uid` owns at the top of the host's shared writable directories."""
    found = []
    for d in _SHARED_DIRS:
        with contextlib.suppress(OSError), os.scandir(d) as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid == uid:
                        found.append(entry.path)
    return found


def mounts_under(path: str) -> list[str]:
    with contextlib.suppress(OSError):
        return [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(path)
        ]
    return []
