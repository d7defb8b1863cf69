"""Whole-sandbox limits with a cgroup: memory and processes of every process in the run
together, CPU time summed over them, and a reliable "kill everything" at the end.

One directory per run under the host process's own cgroup (so a limit set on ponder by its
container still holds), cgroup v2 where its memory and pids controllers are enabled, else
the v1 hierarchies (memory, pids, cpuacct, freezer). Where neither is writable (not root,
no delegation) `Cgroup.create` returns None and the run keeps only per-process rlimits; the
result says so (`SandboxResult.cgroup`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    """Controller name (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            for name in names.split(",") if names else [""]:
                out[name] = path
    return out


def _v1_mounts() -> dict[str, Path]:
    out: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[2] == "cgroup":
                for opt in parts[3].split(","):
                    if opt in ("memory", "pids", "cpuacct", "freezer"):
                        out[opt] = Path(parts[1])
    return out


def _v2_mount() -> Path | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "cgroup2":
                return Path(parts[1])
    return None


def _read_int(path: Path, key: str | None = None) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    if key is None:
        return int(text.split()[0]) if text.split() and text.split()[0].isdigit() else None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return None


class Cgroup:
    """The cgroup(s) of one run. `procs_files` are what the runner writes "0" into to join."""

    def __init__(self, dirs: dict[str, Path], v2: bool) -> None:
        self.dirs = dirs  # controller -> directory ("unified" for v2)
        self.v2 = v2

    @classmethod
    def create(cls, name: str, memory_mb: int, max_processes: int) -> Cgroup | None:
        """Make and configure the run's cgroup, or None where memory and pids limits cannot
        both be set here."""
        own = _own_paths()
        v2root = _v2_mount()
        if v2root is not None and "" in own:
            base = v2root / own[""].lstrip("/")
            controllers = (base / "cgroup.subtree_control").read_text().split() if base.exists() else []
            if {"memory", "pids"} <= set(controllers):
                d = base / name
                try:
                    d.mkdir()
                    (d / "memory.max").write_text(str(memory_mb * 2**20))
                    with contextlib.suppress(OSError):
                        (d / "memory.swap.max").write_text("0")
                    (d / "pids.max").write_text(str(max_processes))
                    return cls({"unified": d}, v2=True)
                except OSError:
                    with contextlib.suppress(OSError):
                        d.rmdir()
        mounts = _v1_mounts()
        if "memory" not in mounts or "pids" not in mounts:
            return None
        dirs: dict[str, Path] = {}
        group = cls(dirs, v2=False)
        try:
            for ctl, mount in mounts.items():
                d = mount / own.get(ctl, "/").lstrip("/") / name
                d.mkdir()
                dirs[ctl] = d
            mem = dirs["memory"]
            (mem / "memory.limit_in_bytes").write_text(str(memory_mb * 2**20))
            with contextlib.suppress(OSError):  # no swap accounting: nothing to limit
                (mem / "memory.memsw.limit_in_bytes").write_text(str(memory_mb * 2**20))
            (dirs["pids"] / "pids.max").write_text(str(max_processes))
        except OSError:
            group.remove()
            return None
        return group

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs.values():
            with contextlib.suppress(OSError):
                found |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
        return found

    def cpu_seconds(self) -> float | None:
        if self.v2:
            usec = _read_int(self.dirs["unified"] / "cpu.stat", "usage_usec")
            return None if usec is None else usec / 1e6
        if "cpuacct" not in self.dirs:
            return None
        ns = _read_int(self.dirs["cpuacct"] / "cpuacct.usage")
        return None if ns is None else ns / 1e9

    def memory_peak_mb(self) -> float | None:
        if self.v2:
            peak = _read_int(self.dirs["unified"] / "memory.peak")
        else:
            peak = _read_int(self.dirs["memory"] / "memory.max_usage_in_bytes")
        return None if peak is None else round(peak / 2**20, 1)

    def memory_exceeded(self) -> bool:
        if self.v2:
            return bool(_read_int(self.dirs["unified"] / "memory.events", "oom_kill"))
        mem = self.dirs["memory"]
        kills = _read_int(mem / "memory.oom_control", "oom_kill")
        return bool(kills) if kills is not None else bool(_read_int(mem / "memory.failcnt"))

    def kill_all(self, patience: float = 5.0) -> set[int]:
        """SIGKILL every process in the run (frozen first, so a fork bomb cannot outrun it);
        returns the ones still there after `patience` seconds."""
        if self.v2:
            with contextlib.suppress(OSError):
                (self.dirs["unified"] / "cgroup.kill").write_text("1")
        freezer = self.dirs.get("freezer")
        deadline = time.monotonic() + patience
        while True:
            left = self.pids()
            if not left or time.monotonic() > deadline:
                break
            if freezer is not None:
                with contextlib.suppress(OSError):
                    (freezer / "freezer.state").write_text("FROZEN")
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if freezer is not None:
                with contextlib.suppress(OSError):
                    (freezer / "freezer.state").write_text("THAWED")  # killed tasks exit when thawed
            time.sleep(0.02)
        return self.pids()

    def remove(self, patience: float = 5.0) -> list[str]:
        """Delete the run's cgroup directories (busy for a moment after the last process
        exits); the ones still there after `patience` seconds are named."""
        stuck = []
        deadline = time.monotonic() + patience
        for d in self.dirs.values():
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        stuck.append(str(d))
                        break
                    time.sleep(0.02)
        return stuck
