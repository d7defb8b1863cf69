"""The sandbox as a test runner: real pytest features, the values a failure shows, the
feedback refine gets, the limits and the isolation mode. Hostile candidates are in
test_sandbox_hostile.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ponder.problem import Problem
from ponder.sandbox import (
    Limits,
    SandboxResult,
    SandboxUnavailable,
    expected_tests,
    host,
    isolation_mode,
    run_in_sandbox,
)
from ponder.sandbox import isolation as isolation_module
from ponder.verifiers.code import UnitTests, feedback_text, verdict_from_result
from sandbox_checks import assert_host_clean

ADD = "def add(a, b):\n    return a + b\n"
TESTS = (
    "from candidate import add\n\n"
    "def test_add():\n    assert add(1, 2) == 3\n\n"
    "def test_neg():\n    assert add(-1, 1) == 0\n"
)
FIZZ = "def fizzbuzz(n):\n    return 'Fizz' if n % 3 == 0 else str(n)\n"


async def test_honest_candidate_passes_namespaced_with_a_cgroup() -> None:
    r = await run_in_sandbox(ADD, TESTS)
    assert r.passed and r.completed and r.n_passed == 2 and r.fraction == 1.0
    assert r.isolation == "namespaces" and r.isolated and r.cgroup
    assert r.cpu_seconds is not None and r.memory_peak_mb is not None and r.memory_peak_mb < 1024
    assert_host_clean(r)


async def test_pytest_features_fixtures_setup_teardown_parametrize_raises_skip_xfail() -> None:
    tests = (
        "import pytest\nfrom candidate import add\n\n"
        "@pytest.fixture\ndef base():\n    yield 10\n\n"
        "def test_fixture(base, tmp_path):\n"
        "    (tmp_path / 'f').write_text('x')\n    assert add(base, 1) == 11\n\n"
        "@pytest.mark.parametrize(('a', 'b', 'total'),\n"
        "                         [(1, 2, 3), (2, 2, 4), pytest.param(0, 0, 1, id='bad')])\n"
        "def test_sum(a, b, total):\n    assert add(a, b) == total\n\n"
        "def test_raises():\n    with pytest.raises(TypeError):\n        add(1, 'a')\n\n"
        "@pytest.mark.skip(reason='not today')\ndef test_skipped():\n    assert False\n\n"
        "@pytest.mark.xfail\ndef test_known_bug():\n    assert add(1, 1) == 3\n\n"
        "class TestWithSetup:\n"
        "    def setup_method(self):\n        self.x = 5\n"
        "    def teardown_method(self):\n        assert self.x == 5\n"
        "    def test_one(self):\n        assert add(self.x, 0) == 5\n\n"
        "async def test_async():\n    assert add(1, 1) == 2\n"
    )
    r = await run_in_sandbox(ADD, tests)
    verdicts = {t.name: (t.passed, t.skipped) for t in r.tests}
    assert verdicts == {
        "test_fixture": (True, False),
        "test_sum[1-2-3]": (True, False),
        "test_sum[2-2-4]": (True, False),
        "test_sum[bad]": (False, False),
        "test_raises": (True, False),
        "test_skipped": (False, True),
        "test_known_bug": (False, True),
        "TestWithSetup::test_one": (True, False),
        "test_async": (True, False),
    }
    assert r.completed and not r.passed and r.missing == []


async def test_a_failing_teardown_fails_its_test() -> None:
    tests = (
        "from candidate import add\n\n"
        "class TestT:\n"
        "    def teardown_method(self):\n        raise RuntimeError('cleanup broke')\n"
        "    def test_one(self):\n        assert add(1, 1) == 2\n"
    )
    r = await run_in_sandbox(ADD, tests)
    assert not r.passed and "cleanup broke" in r.tests[0].error and "teardown" in r.tests[0].error


async def test_assertion_values_reach_the_feedback() -> None:
    tests = "from candidate import fizzbuzz\n\ndef test_fizz():\n    assert fizzbuzz(15) == 'FizzBuzz'\n"
    r = await run_in_sandbox(FIZZ, tests)
    (t,) = r.tests
    assert (t.expected, t.got) == ("'FizzBuzz'", "'Fizz'")
    feedback = feedback_text(r)
    assert "FAILED test_fizz" in feedback
    assert "expected: 'FizzBuzz'" in feedback
    assert "got:      'Fizz'  (where fizzbuzz(15) = 'Fizz')" in feedback
    assert "assert fizzbuzz(15) == 'FizzBuzz'" in feedback


async def test_feedback_is_short_for_many_failures() -> None:
    tests = "from candidate import add\n" + "".join(
        f"\ndef test_{i}():\n    assert add({i}, 0) == {i + 1}, 'x' * 5000\n" for i in range(30)
    )
    r = await run_in_sandbox(ADD, tests)
    feedback = feedback_text(r)
    assert r.n_counted == 30 and r.n_passed == 0
    assert len(feedback) < 3000 and feedback.count("FAILED") == 3 and "also failed (27)" in feedback


async def test_syntax_error_in_candidate_is_a_setup_failure() -> None:
    r = await run_in_sandbox("def add(a, b)\n    return a + b\n", TESTS)
    assert not r.passed and r.setup_error and "SyntaxError" in r.setup_error


async def test_per_test_timeout_keeps_later_tests() -> None:
    tests = (
        TESTS
        + "\ndef test_spin():\n    while True:\n        pass\n"
        + "\ndef test_after():\n    assert add(2, 2) == 4\n"
    )
    r = await run_in_sandbox(ADD, tests, Limits(wall_seconds=15, per_test_seconds=0.5))
    assert r.completed and not r.passed
    assert {t.name: t.passed for t in r.tests} == {
        "test_add": True,
        "test_neg": True,
        "test_spin": False,
        "test_after": True,
    }


def test_expected_tests_are_read_from_the_source() -> None:
    source = (
        "def test_a():\n    pass\n\nasync def test_b():\n    pass\n\ndef helper():\n    pass\n\n"
        "class TestC:\n    def test_d(self):\n        pass\n    def setup_method(self):\n        pass\n"
    )
    assert expected_tests(source) == ["test_a", "test_b", "TestC::test_d"]
    assert expected_tests("def broken(:\n") == []


async def test_cancelling_a_run_kills_it(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []  # this run's uid and directory, to check only what it could leave

    def record(real: Any) -> Any:
        return lambda *a, **k: made.append(real(*a, **k)) or made[-1]

    monkeypatch.setattr(host.random, "randint", record(host.random.randint))
    monkeypatch.setattr(host.tempfile, "mkdtemp", record(host.tempfile.mkdtemp))
    task = asyncio.create_task(
        run_in_sandbox("import time\ntime.sleep(60)\n", TESTS, Limits(wall_seconds=60))
    )
    await asyncio.sleep(1.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    uid, workdir = made
    assert isinstance(uid, int) and isinstance(workdir, str)
    assert_host_clean(SandboxResult(uid=uid, workdir=workdir))


async def test_no_silent_fallback_when_namespaces_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation_module, "_works", False)
    monkeypatch.delenv("PONDER_SANDBOX_ISOLATION", raising=False)
    with pytest.raises(SandboxUnavailable, match="PONDER_SANDBOX_ISOLATION=process"):
        isolation_mode()
    with pytest.raises(SandboxUnavailable):
        await run_in_sandbox(ADD, TESTS)
    verdict = await UnitTests(TESTS).verify(Problem("add", format="code"), ADD)
    assert not verdict.passed and "cannot isolate" in verdict.feedback
    monkeypatch.setenv("PONDER_SANDBOX_ISOLATION", "process")
    assert isolation_mode() == "process"
    with pytest.raises(SandboxUnavailable, match="unknown sandbox isolation"):
        isolation_mode(Limits(isolation="bogus"))


async def test_process_mode_runs_pytest_and_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_SANDBOX_ISOLATION", "process")
    r = await run_in_sandbox(ADD, TESTS)
    assert r.passed and r.isolation == "process"
    verdict = verdict_from_result(r)
    assert verdict.passed and "NOT ISOLATED" in verdict.feedback
    assert_host_clean(r)


def test_ponder_verify_prints_the_isolation_warning(tmp_path: Path) -> None:
    (tmp_path / "c.py").write_text(ADD)
    (tmp_path / "t.py").write_text(TESTS)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PONDER_HOME": str(tmp_path / "home"), "PYTHONPATH": src}
    argv = [sys.executable, "-m", "ponder", "verify", "c.py", "--tests", "t.py"]
    for mode, warned in (("process", True), ("auto", False)):
        env["PONDER_SANDBOX_ISOLATION"] = mode
        out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("PASSED") and ("NOT ISOLATED" in out.stdout) is warned


async def test_without_a_cgroup_the_rlimits_still_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented fallback where no cgroup is writable: per-process limits and the pid
    namespace contain a fork bomb and a big allocation; the result says no cgroup was used."""
    monkeypatch.setattr(host.Cgroup, "create", classmethod(lambda cls, *a: None))
    r = await run_in_sandbox(ADD, TESTS)
    assert r.passed and not r.cgroup and r.cpu_seconds is None
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = await run_in_sandbox(bomb, TESTS, Limits(wall_seconds=3, max_processes=16))
    assert not r.passed
    assert_host_clean(r)
    r = await run_in_sandbox("blob = bytearray(10 * 1024**3)\n" + ADD, TESTS)
    assert not r.passed and "MemoryError" in (r.setup_error or "")
    assert_host_clean(r)
