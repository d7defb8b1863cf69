"""Run untrusted candidate code against its pytest tests, contained.

- `host`: starts the run, enforces the wall / CPU / output limits, reads the results,
  tears down and checks that nothing is left (`leftovers`).
- `runner`: the program inside (stdlib, then real pytest); builds the filesystem view.
- `isolation`: namespaces (the default, required) or the opt-in, non-isolating process mode.
- `cgroup`: memory, process and CPU limits for the run as a whole.
- `result`: `Limits`, `SandboxResult`, `TestResult`.

What this does not stop: see the README's sandbox section.
"""

from ponder.sandbox.host import expected_tests, run_in_sandbox, set_max_concurrency
from ponder.sandbox.isolation import SandboxUnavailable, isolation_mode
from ponder.sandbox.result import NOT_ISOLATED_WARNING, Limits, SandboxResult, TestResult

__all__ = [
    "NOT_ISOLATED_WARNING",
    "Limits",
    "SandboxResult",
    "SandboxUnavailable",
    "TestResult",
    "expected_tests",
    "isolation_mode",
    "run_in_sandbox",
    "set_max_concurrency",
]
