"""The pytest plugin inside the sandbox: one JSON record per test through `emit`.

Loaded by runner.py by path before the sandbox's view is built; imports only pytest and the
standard library.
"""

from __future__ import annotations

import signal
from typing import Any

_TRIM = 2000


def _trim(text: str, limit: int = _TRIM) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n...\n" + text[-half:]


class Reporter:
    """pytest plugin: one record per test (at its teardown), with the failing `==`'s two
    sides. Guards: a test must come from the tests file, a skip raised while the test body
    runs counts as a failure (the candidate can raise pytest's skip exception), and the
    functions pytest runs tests through must be the ones it started with."""

    def __init__(self, emit: Any, test_path: str, per_test: float | None) -> None:
        self.emit = emit
        self.test_path = test_path
        self.per_test = per_test
        self.collected = 0
        self.current: dict[str, Any] = {}
        self.compare: tuple[str, str] | None = None
        self.guarded: dict[str, tuple[Any, Any]] = {}

    def _guard_targets(self) -> dict[str, Any]:
        import inspect

        import _pytest.python
        import _pytest.reports
        import _pytest.runner

        return {
            "runtest": _pytest.python.Function.runtest,
            "pyfunc_call": _pytest.python.pytest_pyfunc_call,
            "call_and_report": _pytest.runner.call_and_report,
            "from_call": _pytest.runner.CallInfo.from_call,
            "from_item_and_call": _pytest.reports.TestReport.from_item_and_call,
            "isfunction": inspect.isfunction,
            "logreport": Reporter.pytest_runtest_logreport,
            "emit": self.emit,
        }

    def _guards(self) -> dict[str, tuple[Any, Any]]:
        """Each guarded function and its code object (classmethods unwrapped)."""
        out = {}
        for key, fn in self._guard_targets().items():
            fn = getattr(fn, "__func__", fn)
            out[key] = (fn, getattr(fn, "__code__", None))
        return out

    def _tampered(self) -> list[str]:
        now = self._guards()
        return [k for k, (fn, code) in self.guarded.items() if now[k][0] is not fn or now[k][1] is not code]

    def pytest_configure(self, config: Any) -> None:
        self.guarded = self._guards()
        if self.per_test:

            def on_alarm(signum: int, frame: Any) -> None:
                raise TimeoutError(f"test exceeded {self.per_test} s")

            signal.signal(signal.SIGALRM, on_alarm)

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.emit(
                {"kind": "setup", "error": _trim(f"collecting the tests failed:\n{report.longreprtext}")}
            )

    def pytest_internalerror(self, excrepr: Any, excinfo: Any) -> None:
        """E.g. `sys.exit()` while pytest imports the tests: say what, and where (the end)."""
        tail = "\n".join(str(excrepr).splitlines()[-6:])
        self.emit({"kind": "setup", "error": _trim(f"pytest stopped by an internal error:\n{tail}")})

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        self.collected = len(items)
        for item in items:
            fn = getattr(item, "function", None)
            where = getattr(getattr(fn, "__code__", None), "co_filename", None)
            if where != self.test_path:
                self.emit({"kind": "tampered", "error": f"{item.nodeid} does not come from the tests file"})

    def pytest_assertrepr_compare(self, config: Any, op: str, left: Any, right: Any) -> None:
        if op == "==":
            from _pytest._io.saferepr import saferepr

            self.compare = (saferepr(left, maxsize=300), saferepr(right, maxsize=300))

    def pytest_pyfunc_call(self, pyfuncitem: Any) -> bool | None:
        """Run `async def` tests with asyncio (no pytest-asyncio in here)."""
        import inspect

        if not inspect.iscoroutinefunction(pyfuncitem.obj):
            return None
        import asyncio

        argnames = pyfuncitem._fixtureinfo.argnames
        asyncio.run(pyfuncitem.obj(**{a: pyfuncitem.funcargs[a] for a in argnames}))
        return True

    def pytest_runtest_call(self, item: Any) -> None:
        if self.per_test:
            signal.setitimer(signal.ITIMER_REAL, float(self.per_test))

    def pytest_runtest_logreport(self, report: Any) -> None:
        if self.per_test and report.when == "call":
            signal.setitimer(signal.ITIMER_REAL, 0)
        name = report.nodeid.split("::", 1)[-1]
        rec = self.current
        if report.when == "setup":
            rec.clear()
            self.compare = None
            rec.update(kind="test", name=name, passed=False, skipped=False, error="", seconds=0.0)
        rec["seconds"] = round(rec.get("seconds", 0.0) + report.duration, 4)
        if report.when == "setup" and report.skipped:
            rec["skipped"] = True
            rec["error"] = _trim(str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else ""))
        elif report.when == "call":
            if report.passed:
                rec["passed"] = True
            elif report.skipped and not hasattr(report, "wasxfail"):
                rec["error"] = "the test was skipped while running: counted as failed"
            elif report.skipped:
                rec["skipped"] = True  # an expected failure (xfail mark)
        if report.failed:
            rec["passed"] = False
            where = "" if report.when == "call" else f"error in {report.when}: "
            text = where + report.longreprtext
            out = report.capstdout.strip()
            if out:
                text += "\n--- captured stdout ---\n" + _trim(out, 500)
            rec["error"] = _trim((rec["error"] + "\n" + text).strip())
            if report.when == "call" and self.compare:
                rec["got"], rec["expected"] = self.compare
        if report.when == "teardown":
            tampered = self._tampered()
            if tampered:
                rec["passed"] = False
                rec["error"] = "the test runner was tampered with: " + ", ".join(tampered)
                self.emit({"kind": "tampered", "error": rec["error"]})
            self.emit(dict(rec))
