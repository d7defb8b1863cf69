"""What a sandbox run is given (Limits) and what it reports (SandboxResult, TestResult)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ISOLATED = "namespaces"
NOT_ISOLATED = "process"
NOT_ISOLATED_WARNING = (
    "NOT ISOLATED (process mode): the candidate could reach the network and read host files; "
    "only limits, a separate uid and cleanup applied"
)


@dataclass(frozen=True)
class Limits:
    """Limits of one run, for the sandbox as a whole where a cgroup allows it.

    memory_mb and max_processes bound every process of the run together (cgroup), and each
    process alone (rlimit) as a backstop; cpu_seconds is summed over all processes when the
    cgroup's CPU accounting is readable, per process otherwise. Disk is the private /tmp
    (which holds the working directory) and /dev/shm, tmpfs_mb each, charged to memory too.
    `isolation`: None follows PONDER_SANDBOX_ISOLATION (default "auto": namespaces or an
    error); "process" opts in to running without namespaces.
    """

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 1024
    max_processes: int = 32
    max_output_bytes: int = 64 * 1024  # kept of stdout and of stderr each
    kill_output_bytes: int = 8 * 1024 * 1024  # read past this and the run is killed
    file_size_mb: int = 16
    tmpfs_mb: int = 64
    per_test_seconds: float | None = None  # SIGALRM per test; None: only the wall limit
    isolation: str | None = None


@dataclass
class TestResult:
    name: str
    passed: bool
    error: str = ""
    seconds: float = 0.0
    skipped: bool = False
    expected: str | None = None  # right side of the failing `==`, as repr
    got: str | None = None  # left side of the failing `==`, as repr


@dataclass
class SandboxResult:
    """What happened in one run; `passed` only when the runner finished, every expected test
    was reported and passed, and the run left nothing behind."""

    tests: list[TestResult] = field(default_factory=list)
    completed: bool = False
    setup_error: str | None = None
    exit_code: int | None = None
    exit_note: str | None = None  # how the test process ended, from the sandbox's init
    timed_out: bool = False
    cpu_exceeded: bool = False
    memory_exceeded: bool = False
    output_exceeded: bool = False
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    cpu_seconds: float | None = None  # whole sandbox, from the cgroup
    memory_peak_mb: float | None = None  # whole sandbox, from the cgroup
    isolation: str = ""
    cgroup: bool = False  # whole-sandbox limits applied
    leftovers: list[str] = field(default_factory=list)  # found after the run (and removed)
    uid: int | None = None  # the run's own uid (random per run), for checks of what it left
    workdir: str = ""  # host directory of the run (removed afterwards)
    missing: list[str] = field(default_factory=list)  # expected tests never reported

    @property
    def isolated(self) -> bool:
        return self.isolation == ISOLATED

    @property
    def n_passed(self) -> int:
        return sum(1 for t in self.tests if t.passed and not t.skipped)

    @property
    def n_counted(self) -> int:
        return sum(1 for t in self.tests if not t.skipped) + len(self.missing)

    @property
    def fraction(self) -> float:
        return self.n_passed / self.n_counted if self.n_counted else 0.0

    @property
    def passed(self) -> bool:
        return (
            self.completed
            and self.setup_error is None
            and not self.leftovers
            and not self.missing
            and not (self.timed_out or self.cpu_exceeded or self.memory_exceeded or self.output_exceeded)
            and self.n_counted > 0
            and self.n_passed == self.n_counted
        )

    def problem(self) -> str | None:
        """Why the run as a whole failed (not a single test), for feedback."""
        if self.leftovers:
            return "the run left things behind (removed): " + "; ".join(self.leftovers)
        if self.timed_out:
            return "time limit exceeded: the run was killed"
        if self.cpu_exceeded:
            return "CPU time limit exceeded: the run was killed"
        if self.memory_exceeded:
            return "memory limit exceeded: the run was killed"
        if self.output_exceeded:
            return "output limit exceeded: the run was killed"
        if self.setup_error:
            return self.setup_error
        if not self.completed:
            why = f"the sandbox exited (code {self.exit_code}) before the tests finished"
            if self.exit_note:
                why += f": {self.exit_note}"
            tail = self.stderr.strip().splitlines()[-3:]
            return why + (" | " + " | ".join(tail) if tail else "")
        if self.missing:
            return "tests never reported (collection tampered with?): " + ", ".join(self.missing)
        if self.n_counted == 0:
            return "no test functions were found"
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(passed=self.passed, n_passed=self.n_passed, n_tests=self.n_counted)
        return d
