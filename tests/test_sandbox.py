"""Hostile candidates: each one is contained, gets a clear verdict, and the host is unharmed."""

from __future__ import annotations

import os
import resource
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from ponder.sandbox import Limits, isolation_mode, run_in_sandbox

ADD = "def add(a, b):\n    return a + b\n"
TESTS = (
    "from candidate import add\n\n"
    "def test_add():\n    assert add(1, 2) == 3\n\n"
    "def test_neg():\n    assert add(-1, 1) == 0\n"
)
FAST = Limits(wall_seconds=5, cpu_seconds=4, memory_mb=512, max_processes=16)


async def test_honest_candidate_passes() -> None:
    r = await run_in_sandbox(ADD, TESTS)
    assert r.passed and r.completed and r.n_passed == 2 and r.fraction == 1.0
    assert r.isolation in ("namespaces", "process")


async def test_failing_assertion_reports_message_and_line() -> None:
    tests = TESTS + "\ndef test_wrong():\n    assert add(2, 2) == 5, 'two and two'\n"
    r = await run_in_sandbox(ADD, tests)
    assert not r.passed and r.completed and r.n_passed == 2 and r.n_counted == 3
    (bad,) = [t for t in r.tests if not t.passed]
    assert bad.name == "test_wrong"
    assert "AssertionError: two and two" in bad.error and "assert add(2, 2) == 5" in bad.error


async def test_test_classes_and_async_tests_run() -> None:
    tests = (
        "import asyncio\nfrom candidate import add\n"
        "class TestAdd:\n    def test_one(self):\n        assert add(0, 1) == 1\n"
        "async def test_async():\n    await asyncio.sleep(0)\n    assert add(1, 1) == 2\n"
    )
    r = await run_in_sandbox(ADD, tests)
    assert r.passed and sorted(t.name for t in r.tests) == ["TestAdd.test_one", "test_async"]


async def test_syntax_error_in_candidate_is_a_setup_failure() -> None:
    r = await run_in_sandbox("def add(a, b)\n    return a + b\n", TESTS)
    assert not r.passed and r.setup_error and "SyntaxError" in r.setup_error


async def test_infinite_loop_is_killed_at_the_wall_limit() -> None:
    start = time.monotonic()
    r = await run_in_sandbox("while True:\n    pass\n", TESTS, Limits(wall_seconds=2, cpu_seconds=10))
    assert r.timed_out and not r.passed
    assert time.monotonic() - start < 6
    assert "time limit" in (r.problem() or "")


async def test_cpu_limit_kills_a_busy_loop_even_with_a_long_wall_limit() -> None:
    r = await run_in_sandbox("while True:\n    pass\n", TESTS, Limits(wall_seconds=30, cpu_seconds=1))
    assert not r.passed and not r.timed_out and r.seconds < 10


async def test_per_test_timeout_keeps_later_tests() -> None:
    tests = (
        TESTS
        + "\ndef test_spin():\n    while True:\n        pass\n"
        + "\ndef test_after():\n    assert add(2, 2) == 4\n"
    )
    r = await run_in_sandbox(ADD, tests, Limits(wall_seconds=10, per_test_seconds=0.5))
    assert r.completed and not r.passed
    verdicts = {t.name: t.passed for t in r.tests}
    assert verdicts == {"test_add": True, "test_neg": True, "test_spin": False, "test_after": True}


def _sandbox_procs() -> list[str]:
    """Processes of a sandbox uid (ponder picks them from 1e6..2e9) still on the host."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uid = int(status.split("Uid:")[1].split()[0])
        zombie = status.split("State:")[1].split()[0] in ("Z", "X")
        if 1_000_000 <= uid < 2_000_000_000 and not zombie:
            found.append(pid)
    return found


def _no_sandbox_procs_left() -> bool:
    deadline = time.monotonic() + 3
    while _sandbox_procs() and time.monotonic() < deadline:
        time.sleep(0.1)
    return _sandbox_procs() == []


async def test_fork_bomb_is_capped_and_cleaned_up() -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = await run_in_sandbox(bomb, TESTS, Limits(wall_seconds=3, cpu_seconds=5, max_processes=16))
    assert not r.passed
    assert _no_sandbox_procs_left()


async def test_fork_inside_a_test_cannot_report_twice() -> None:
    tests = "import os\nfrom candidate import add\n\ndef test_forks():\n"
    tests += "    os.fork()\n    assert add(1, 1) == 2\n"
    r = await run_in_sandbox(ADD, tests)
    assert r.passed and len(r.tests) == 1


async def test_allocating_10_gb_fails_without_hurting_the_host() -> None:
    code = "blob = bytearray(10 * 1024**3)\n"
    host_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = await run_in_sandbox(code, TESTS, FAST)
    assert not r.passed and r.setup_error and "MemoryError" in r.setup_error
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < host_rss + 200_000  # KiB


def _canary_dirs(tmp_path: Path) -> list[Path]:
    private = tmp_path / "private"
    private.mkdir()
    dirs = [private]
    if isolation_mode() == "namespaces":  # only a mount namespace protects a world-writable dir
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        tmp_path.chmod(0o755)
        tmp_path.parent.chmod(tmp_path.parent.stat().st_mode | 0o005)
        dirs.append(shared)
    return dirs


async def test_writing_or_deleting_host_files_is_contained(tmp_path: Path) -> None:
    for d in _canary_dirs(tmp_path):
        canary = d / "canary.txt"
        canary.write_text("untouched")
        canary.chmod(0o666 if d.name == "shared" else 0o644)
        code = (
            "import os, shutil\n"
            f"p = {str(canary)!r}\n"
            "for act in (lambda: open(p, 'w').write('owned'), lambda: os.remove(p),\n"
            "            lambda: shutil.rmtree(os.path.dirname(p)),\n"
            "            lambda: open(os.path.join(os.path.dirname(p), 'new.txt'), 'w').write('x')):\n"
            "    try:\n        act()\n    except OSError:\n        pass\n"
        )
        r = await run_in_sandbox(code + ADD, TESTS)
        assert r.completed  # the candidate ran; its writes just did not reach the host
        assert canary.read_text() == "untouched"
        assert sorted(os.listdir(d)) == ["canary.txt"]


async def test_network_connection_to_a_host_listener_receives_nothing() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    got: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            got.append(conn.recv(100) or b"<connected>")
            conn.close()

    t = threading.Thread(target=accept)
    t.start()
    code = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "s.sendall(b'exfiltrated')\n"
    )
    try:
        r = await run_in_sandbox(code + ADD, TESTS, FAST)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
        server.close()
    assert got == []
    assert not r.passed and r.setup_error and ("OSError" in r.setup_error or "Error" in r.setup_error)


async def test_environment_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_TEST_SECRET", "hunter2-s3cr3t")
    tests = (
        "import os\nfrom candidate import add\n\n"
        "def test_no_secret():\n"
        "    assert 'PONDER_TEST_SECRET' not in os.environ\n"
        "    for pid in os.listdir('/proc'):\n"
        "        try:\n"
        "            data = open(f'/proc/{pid}/environ', 'rb').read()\n"
        "        except OSError:\n"
        "            continue\n"
        "        assert b'hunter2' not in data, pid\n"
    )
    r = await run_in_sandbox(ADD + "import os\nprint(dict(os.environ))\n", tests)
    assert r.passed, r.tests
    assert "hunter2" not in r.stdout and "PONDER_TEST_SECRET" not in r.stdout


async def test_printing_1_gb_is_capped() -> None:
    host_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n"
    r = await run_in_sandbox(code + ADD, TESTS, Limits(wall_seconds=20, max_output_bytes=10_000))
    assert not r.passed and r.output_exceeded
    assert len(r.stdout) <= 10_000
    assert "output limit" in (r.problem() or "")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < host_rss + 200_000  # KiB


async def test_killing_the_parent_fails_and_the_host_survives() -> None:
    me = os.getpid()
    code = (
        "import os, signal\n"
        f"for pid in ({me}, os.getppid(), 1):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
        "os.killpg(0, signal.SIGKILL)\n"
    )
    r = await run_in_sandbox(code + ADD, TESTS)
    assert not r.passed and not r.completed
    assert os.getpid() == me  # still here


@pytest.mark.parametrize(
    "exit_call", ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit(0)\n"]
)
async def test_exiting_before_the_tests_is_not_a_pass(exit_call: str) -> None:
    r = await run_in_sandbox(exit_call + ADD, TESTS)
    assert not r.passed
    assert r.n_passed == 0


async def test_exiting_inside_a_test_is_not_a_pass() -> None:
    tests = "import os\nfrom candidate import add\n\n"
    tests += "def test_a():\n    assert add(1, 2) == 3\n\ndef test_b():\n    os._exit(0)\n"
    r = await run_in_sandbox(ADD, tests)
    assert not r.passed and not r.completed and r.n_passed == 1


async def test_forged_records_without_the_nonce_are_ignored() -> None:
    code = (
        "import os\n"
        "for fd in range(3, 20):\n"
        "    try:\n"
        '        os.write(fd, b\'{"kind": "done"}\\n\')\n'
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    )
    r = await run_in_sandbox(code, TESTS)
    assert not r.passed and not r.completed


def _home_entries() -> list[str]:
    """What the host's home holds, less the Python install that the sandbox re-binds."""
    home = Path.home()
    keep = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix)}
    return [e.name for e in home.iterdir() if not any(k == e or e in k.parents for k in keep)]


async def test_runs_as_an_unprivileged_user_without_the_home_dir() -> None:
    assert _home_entries()  # else this test proves nothing
    tests = (
        "import os\nfrom candidate import add\n\n"
        "def test_who():\n"
        f"    if {os.geteuid() == 0}:  # host is root: the tests run under a random high uid\n"
        "        assert os.getuid() >= 1_000_000 and os.geteuid() >= 1_000_000\n"
        f"    secret_entries = {_home_entries()!r}\n"
        "    try:\n"
        f"        visible = set(os.listdir({str(Path.home())!r}))\n"
        "    except OSError:\n"
        "        visible = set()\n"
        "    assert not visible & set(secret_entries), visible\n"
    )
    r = await run_in_sandbox(ADD, tests)
    assert r.passed, r.tests


async def test_temporary_directories_are_removed() -> None:
    import tempfile

    before = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("ponder-sandbox-")}
    await run_in_sandbox(ADD, TESTS)
    after = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("ponder-sandbox-")}
    assert after <= before


async def test_pytest_features_parametrize_raises_skip() -> None:
    tests = (
        "import pytest\nfrom candidate import add\n\n"
        "@pytest.mark.parametrize(('a', 'b', 'total'), [(1, 2, 3), (2, 2, 4), pytest.param(0, 0, 1)])\n"
        "def test_sum(a, b, total):\n    assert add(a, b) == total\n\n"
        "@pytest.mark.parametrize('x', [1, 2])\n"
        "def test_one_name(x):\n    assert add(x, 0) == x\n\n"
        "def test_raises():\n    with pytest.raises(TypeError):\n        add(1, 'a')\n\n"
        "def test_skipped():\n    pytest.skip('not today')\n\n"
        "def test_fixture(tmp_path):\n    pass\n"
    )
    r = await run_in_sandbox(ADD, tests)
    if r.setup_error and "No module named 'pytest'" in r.setup_error:
        pytest.skip("the sandbox's interpreter has no pytest (process isolation uses the system python)")
    verdicts = {t.name: (t.passed, t.skipped) for t in r.tests}
    assert verdicts == {
        "test_sum[0]": (True, False),
        "test_sum[1]": (True, False),
        "test_sum[2]": (False, False),
        "test_one_name[0]": (True, False),
        "test_one_name[1]": (True, False),
        "test_raises": (True, False),
        "test_skipped": (False, True),
        "test_fixture": (False, False),
    }
    assert "fixtures are not supported" in r.tests[-1].error and "tmp_path" in r.tests[-1].error


async def test_cancelling_a_run_kills_it() -> None:
    import asyncio

    task = asyncio.create_task(
        run_in_sandbox("import time\ntime.sleep(60)\n", TESTS, Limits(wall_seconds=60))
    )
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _no_sandbox_procs_left()
