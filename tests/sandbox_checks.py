"""Independent checks that a sandbox run left the host as it was. They read the kernel's own
tables (/proc, /proc/sysvipc, /proc/self/mountinfo, /sys/fs/cgroup), not ponder's cleanup
code, and look only at what one run could have made (its uid, its directory): other
sandboxes may run on this machine at the same time."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

from ponder.sandbox import SandboxResult


def processes_of(uid: int) -> list[int]:
    """Live processes of `uid` as `ps` sees them (zombies excluded)."""
    out = subprocess.run(["ps", "-eo", "pid=,euid=,ruid=,stat="], capture_output=True, text=True, check=True)
    rows = [line.split() for line in out.stdout.splitlines()]
    mine = [(pid, stat) for pid, euid, ruid, stat in rows if str(uid) in (euid, ruid)]
    return [int(pid) for pid, stat in mine if not stat.startswith("Z")]


def ipc_rows(kind: str) -> list[dict[str, str]]:
    lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
    head = lines[0].split()
    return [dict(zip(head, line.split(), strict=False)) for line in lines[1:]]


def shm_keys() -> set[int]:
    return {int(row["key"]) for row in ipc_rows("shm")}


def files_of(uid: int, dirs: tuple[str, ...] = ("/tmp", "/var/tmp", "/dev/shm")) -> list[str]:
    found = []
    for d in dirs:
        for entry in os.scandir(d):
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    found.append(entry.path)
            except OSError:
                continue
    return found


def cgroup_dirs_named(name: str) -> list[str]:
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(root, d) for d in dirs if d == name]
    return found


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def assert_host_clean(r: SandboxResult, rss_before: int | None = None) -> None:
    """Nothing of run `r` is left: processes, IPC objects, files, mounts, cgroup, and this
    process did not grow by more than 100 MB (its output was capped)."""
    assert r.workdir and not os.path.exists(r.workdir)
    assert r.workdir not in Path("/proc/self/mountinfo").read_text()
    assert cgroup_dirs_named(os.path.basename(r.workdir)) == []
    if r.uid is not None:
        assert processes_of(r.uid) == []
        for kind in ("shm", "sem", "msg"):
            assert [row for row in ipc_rows(kind) if r.uid in (int(row["uid"]), int(row["cuid"]))] == []
        assert files_of(r.uid) == []
    if rss_before is not None:
        assert rss_kib() < rss_before + 100_000
