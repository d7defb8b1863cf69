"""Hostile candidates (from the sandbox review, issue 15, and earlier ones): each gets a
failing verdict, or is contained without harm, and the host is unchanged afterwards
(sandbox_checks reads the kernel's tables for what this run alone could have left)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ponder.sandbox import Limits, SandboxResult, run_in_sandbox
from ponder.verifiers.code import verdict_from_result
from sandbox_checks import assert_host_clean, cgroup_dirs_named, processes_of, rss_kib, shm_keys

ADD = "def add(a, b):\n    return a + b\n"
TESTS = (
    "from candidate import add\n\n"
    "def test_add():\n    assert add(1, 2) == 3\n\n"
    "def test_neg():\n    assert add(-1, 1) == 0\n"
)
WRONG_TESTS = "from candidate import add\n\ndef test_wrong():\n    assert add(2, 2) == 5\n"
FAST = Limits(wall_seconds=10, cpu_seconds=5, memory_mb=512, max_processes=16)
PROCESS = Limits(wall_seconds=10, cpu_seconds=5, memory_mb=512, max_processes=16, isolation="process")
SHM = (
    "import ctypes\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.shmat.restype = ctypes.c_void_p\n"
    "def segment(key, size):\n"
    "    ident = libc.shmget(key, size, 0o1000 | 0o666)  # IPC_CREAT, readable by anyone\n"
    "    assert ident >= 0, ctypes.get_errno()\n"
    "    addr = libc.shmat(ident, None, 0)\n"
    "    ctypes.memset(addr, 1, size)\n"
    "    libc.shmdt(ctypes.c_void_p(addr))\n"
)


async def run(code: str, tests: str = TESTS, limits: Limits = FAST) -> SandboxResult:
    """One run, then the host checks every hostile case shares: nothing of it is left and this
    process did not take in its output or memory."""
    rss_before = rss_kib()
    r = await run_in_sandbox(code, tests, limits)
    assert_host_clean(r, rss_before)
    return r


# ---------------------------------------------------------------- IPC and memory


@pytest.mark.parametrize("limits", [FAST, PROCESS], ids=["namespaces", "process"])
async def test_sysv_shared_memory_does_not_outlive_the_run(limits: Limits) -> None:
    key = random.randint(10**8, 2 * 10**9)
    code = SHM + f"for i in range(3):\n    segment({key} + i, 20 * 2**20)\n" + ADD
    r = await run(code, limits=limits)
    assert not r.passed and "SysV IPC" in (r.problem() or "")
    assert not {key, key + 1, key + 2} & shm_keys()
    if limits is FAST:  # and a later run cannot find them
        probe = f"import ctypes\nassert ctypes.CDLL(None).shmget({key}, 0, 0) == -1\n" + ADD
        assert (await run(probe)).passed


async def test_shared_memory_in_a_loop_counts_against_the_memory_limit() -> None:
    code = SHM + "for i in range(40):\n    segment(0, 64 * 2**20)  # 2.5 GB in all, never removed\n" + ADD
    r = await run(code, limits=Limits(wall_seconds=20, memory_mb=256))
    assert not r.passed and r.memory_exceeded
    assert r.memory_peak_mb is not None and r.memory_peak_mb <= 256 * 1.05


async def test_children_share_one_memory_limit() -> None:
    code = (
        "import os\n"
        "pids = []\n"
        "for _ in range(4):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        blob = b'x' * (180 * 2**20)\n"
        "        import time; time.sleep(3)\n"
        "        os._exit(0)\n"
        "    pids.append(pid)\n"
        "for pid in pids:\n"
        "    os.waitpid(pid, 0)\n" + ADD
    )
    r = await run(code, limits=Limits(wall_seconds=20, memory_mb=400, max_processes=16))
    assert not r.passed and r.memory_exceeded
    assert r.memory_peak_mb is not None and r.memory_peak_mb <= 400 * 1.05


async def test_allocating_10_gb_fails() -> None:
    r = await run("blob = bytearray(10 * 1024**3)\n" + ADD)
    assert not r.passed and "MemoryError" in (r.setup_error or "")


# ---------------------------------------------------------------- faked passes


async def test_an_own_exception_named_skipped_is_a_failure() -> None:
    code = "class Skipped(Exception):\n    pass\n\ndef add(a, b):\n    raise Skipped('not today')\n"
    r = await run(code, WRONG_TESTS)
    assert not r.passed and r.n_passed == 0 and not r.tests[0].skipped


async def test_pytests_own_skip_raised_by_the_candidate_is_a_failure() -> None:
    code = "import pytest\n\ndef add(a, b):\n    pytest.skip('nothing to see')\n"
    r = await run(code, WRONG_TESTS)
    assert not r.passed and "skipped while running" in r.tests[0].error


@pytest.mark.parametrize(
    "trick",
    [
        "import pytest\npytest.skip('whole module', allow_module_level=True)\n",
        "import pytest\npytest.exit('bye', 0)\n",
    ],
    ids=["module-skip", "pytest-exit"],
)
async def test_stopping_pytest_from_the_candidate_is_not_a_pass(trick: str) -> None:
    r = await run(trick + ADD, WRONG_TESTS)
    assert not r.passed and r.missing == ["test_wrong"]


async def test_a_fake_test_module_in_sys_modules_is_not_collected() -> None:
    code = (
        "import sys, types\n"
        "fake = types.ModuleType('test_candidate')\n"
        "exec('def test_wrong():\\n    pass\\n', fake.__dict__)\n"
        "sys.modules['test_candidate'] = fake\n" + ADD
    )
    r = await run(code, WRONG_TESTS)
    assert not r.passed and [t.name for t in r.tests] == ["test_wrong"]
    assert r.tests[0].got == "4" and r.tests[0].expected == "5"


async def test_patching_inspect_isfunction_is_not_a_pass() -> None:
    code = "import inspect\ninspect.isfunction = lambda obj: False\n" + ADD
    r = await run(code, WRONG_TESTS)
    assert not r.passed


async def test_patching_pytests_test_call_is_detected() -> None:
    code = "import _pytest.python\n_pytest.python.Function.runtest = lambda self: None\n" + ADD
    r = await run(code, WRONG_TESTS)
    assert not r.passed and "tampered" in (r.problem() or "")


@pytest.mark.parametrize(
    "exit_call", ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit(0)\n"]
)
async def test_exiting_before_the_tests_is_not_a_pass(exit_call: str) -> None:
    r = await run(exit_call + ADD)
    assert not r.passed and r.n_passed == 0


async def test_exiting_inside_a_test_is_not_a_pass() -> None:
    tests = TESTS + "\ndef test_exit():\n    import os\n    os._exit(0)\n"
    r = await run(ADD, tests)
    assert not r.passed and not r.completed and r.n_passed == 2


async def test_records_without_the_nonce_are_ignored() -> None:
    forged = '{"kind": "test", "name": "test_wrong", "passed": true}\\n{"kind": "done", "exit": 0}\\n'
    code = "import os\nfor fd in range(3, 40):\n    try:\n"
    code += f"        os.write(fd, b'{forged}')\n    except OSError:\n        pass\n"
    r = await run(code + "os._exit(0)\n", WRONG_TESTS)
    assert not r.passed and not r.completed and r.tests == []


# ---------------------------------------------------------------- processes


@pytest.mark.parametrize("limits", [FAST, PROCESS], ids=["namespaces", "process"])
async def test_a_double_forked_daemon_fails_the_run_and_is_killed(limits: Limits) -> None:
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(300)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n" + ADD
    )
    r = await run(code, limits=limits)
    assert not r.passed and "still running" in (r.problem() or "")


async def test_fork_bomb_is_capped_and_cleaned_up() -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = await run(bomb, limits=Limits(wall_seconds=3, cpu_seconds=5, max_processes=16))
    assert not r.passed


async def test_an_infinite_loop_is_killed_at_the_wall_limit() -> None:
    r = await run("import time\nwhile True:\n    time.sleep(0.01)\n", limits=Limits(wall_seconds=2))
    assert r.timed_out and not r.passed and "time limit" in (r.problem() or "")


async def test_cpu_time_is_summed_over_all_processes() -> None:
    spin = "import os, time\nos.fork()\nos.fork()\n"
    spin += "end = time.monotonic() + 30\nwhile time.monotonic() < end:\n    pass\n"
    r = await run(spin + ADD, limits=Limits(wall_seconds=30, cpu_seconds=2))
    assert not r.passed and r.cpu_exceeded and not r.timed_out


async def test_killing_the_parent_reaches_nothing_outside() -> None:
    """The host's pid is not in the sandbox's pid namespace, and its init is root's."""
    me = os.getpid()
    code = (
        "import os, signal\n"
        f"for pid in ({me}, os.getppid(), 1, -1):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n" + ADD
    )
    r = await run(code)
    assert r.passed, r.problem()  # nothing was killed, so the correct `add` passes
    assert os.getpid() == me
    r = await run(code.replace("-1)", "-1, os.getpid())"))  # killing itself instead
    assert not r.passed and not r.completed and "SIGKILL" in (r.problem() or "")


async def test_host_processes_are_invisible() -> None:
    marker = f"ponder-secret-{random.randint(0, 10**9)}"
    host = subprocess.Popen(["sleep", "60", marker])
    try:
        tests = (
            "import os\nfrom candidate import add\n\n"
            "def test_proc():\n"
            "    pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
            "    assert len(pids) < 10, pids\n"
            "    for p in pids:\n"
            "        try:\n"
            "            assert b'ponder-secret' not in open(f'/proc/{p}/cmdline', 'rb').read()\n"
            "        except FileNotFoundError:\n"
            "            pass\n"
        )
        r = await run(ADD, tests)
    finally:
        host.kill()
        host.wait()
    assert r.passed, r.tests


# ---------------------------------------------------------------- output, files, disk


async def test_printing_1_gb_is_capped() -> None:
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n" + ADD
    r = await run(code, limits=Limits(wall_seconds=20, max_output_bytes=10_000))
    assert not r.passed and len(r.stdout) <= 10_000
    assert "limit" in (r.problem() or "")


async def test_filling_the_disk_stops_at_the_tmpfs_size() -> None:
    code = (
        "with open('/tmp/big', 'wb') as f:\n    for _ in range(200):\n        f.write(b'x' * 2**20)\n" + ADD
    )
    r = await run(code, limits=Limits(tmpfs_mb=32, file_size_mb=512, memory_mb=512))
    assert not r.passed and ("No space left" in (r.setup_error or "") or r.memory_exceeded)


@pytest.fixture
def host_canary(tmp_path: Path) -> Iterator[Path]:
    canary = tmp_path / "canary.txt"
    canary.write_text("untouched")
    canary.chmod(0o666)
    tmp_path.chmod(0o777)
    yield canary


def _tmp_top(checkout: Path) -> str:
    """The folder under /tmp that leads to a checkout there (CI clones into /tmp): its venv
    is bound into the view read-only, so the path to it shows."""
    parts = checkout.parts
    return parts[2] if parts[:2] == ("/", "tmp") and len(parts) > 2 else ""


async def test_the_view_holds_no_host_files(host_canary: Path) -> None:
    """Not /tmp, not the home, not the projects (their checkouts and .git/config)."""
    checkout = Path(__file__).resolve().parents[1]
    tests = (
        "import os\nfrom candidate import add\n\n"
        "def test_view():\n"
        f"    hidden = ({str(host_canary)!r}, {str(checkout / '.git')!r}, {str(checkout / 'README.md')!r})\n"
        "    for p in (*hidden, '/home', '/work/wt'):\n"
        "        assert not os.path.exists(p), p\n"
        # a venv inside the checkout (CI's .venv) is bound read-only; nothing else of it shows
        f"    if os.path.exists({str(checkout)!r}):\n"
        f"        assert set(os.listdir({str(checkout)!r})) <= {{'.venv'}}\n"
        f"    assert set(os.listdir('/tmp')) - {{{_tmp_top(checkout)!r}}} == {{'sandbox'}}\n"
        "    assert os.listdir('/root') in ([], ['.pyenv'])\n"
        "    points = [line.split()[4] for line in open('/proc/self/mountinfo')]\n"
        f"    assert {str(checkout)!r} not in points\n"
        "    for p in ('/usr/bin/x', '/tmp/x', '/etc/passwd'):\n"
        "        try:\n"
        "            open(p, 'a').write('x')\n"
        "        except OSError:\n"
        "            continue\n"
        "        assert p == '/tmp/x', p\n"
    )
    r = await run(
        ADD + f"import os\ntry:\n    os.remove({str(host_canary)!r})\nexcept OSError:\n    pass\n", tests
    )
    assert r.passed, r.tests
    assert host_canary.read_text() == "untouched"


async def test_environment_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_TEST_SECRET", "hunter2-s3cr3t")
    tests = (
        "import os\nfrom candidate import add\n\n"
        "def test_no_secret():\n"
        "    assert 'PONDER_TEST_SECRET' not in os.environ\n"
        "    for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "        try:\n"
        "            assert b'hunter2' not in open(f'/proc/{pid}/environ', 'rb').read(), pid\n"
        "        except OSError:\n"
        "            continue\n"
    )
    r = await run(ADD + "import os\nprint(dict(os.environ))\n", tests)
    assert r.passed, r.tests
    assert "hunter2" not in r.stdout


# ---------------------------------------------------------------- network


def _listener() -> tuple[socket.socket, list[bytes], threading.Event, threading.Thread]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
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

    thread = threading.Thread(target=accept)
    thread.start()
    return server, got, stop, thread


NETWORK_TRIES = (
    "import ctypes, socket, struct, subprocess\n"
    "def tries(port):\n"
    "    ok = []\n"
    "    try:\n"
    "        socket.create_connection(('127.0.0.1', port), timeout=2).sendall(b'python')\n"
    "        ok.append('python')\n"
    "    except OSError:\n"
    "        pass\n"
    "    cmd = f'exec 3<>/dev/tcp/127.0.0.1/{port} && echo bash >&3'\n"
    "    if subprocess.run(['bash', '-c', cmd], capture_output=True).returncode == 0:\n"
    "        ok.append('bash')\n"
    "    libc = ctypes.CDLL(None)\n"
    "    fd = libc.socket(2, 1, 0)\n"
    "    addr = struct.pack('<HH4s8x', 2, socket.htons(port), bytes([127, 0, 0, 1]))\n"
    "    if fd >= 0 and libc.connect(fd, addr, len(addr)) == 0:\n"
    "        libc.write(fd, b'ctypes', 6)\n"
    "        ok.append('ctypes')\n"
    "    return ok\n"
)


async def test_no_network_by_any_route() -> None:
    server, got, stop, thread = _listener()
    port = server.getsockname()[1]
    tests = f"from candidate import tries\n\ndef test_offline():\n    assert tries({port}) == []\n"
    try:
        r = await run(NETWORK_TRIES, tests)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert got == []
    assert r.passed, r.tests


async def test_process_mode_says_it_is_not_isolated_in_every_verdict() -> None:
    for code in (ADD, "def add(a, b):\n    return 0\n"):
        r = await run(code, limits=PROCESS)
        verdict = verdict_from_result(r)
        assert r.isolation == "process" and not r.isolated
        assert "NOT ISOLATED" in verdict.feedback and verdict.details["isolated"] is False
    assert processes_of(r.uid or -1) == []


async def test_a_killed_host_leaves_no_run_behind() -> None:
    """The sandbox's init bounds the run by its wall limit (+5 s) even when nobody is left to
    kill it, and the candidate writes nothing that would fail on the closed pipes."""
    script = (
        "import asyncio, sys\n"
        "from ponder.sandbox import Limits, host, run_in_sandbox\n"
        "real = host.random.randint\n"
        "def randint(a, b):\n"
        "    uid = real(a, b)\n"
        "    print(uid, flush=True)\n"
        "    return uid\n"
        "host.random.randint = randint\n"
        "made = host.tempfile.mkdtemp\n"
        "host.tempfile.mkdtemp = lambda **kw: print(d := made(**kw), flush=True) or d\n"
        "quiet = 'import os, time\\nfor fd in (1, 2):\\n'\n"
        "quiet += '    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)\\n'\n"
        "asyncio.run(run_in_sandbox(quiet + 'time.sleep(120)\\n', 'import candidate\\n',\n"
        "                           Limits(wall_seconds=2)))\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": src}
    )
    assert proc.stdout is not None
    uid = int(proc.stdout.readline())
    workdir = proc.stdout.readline().decode().strip()
    deadline = time.monotonic() + 30
    while not processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(uid)  # the test process runs as the uid
    proc.kill()
    proc.wait()
    while processes_of(uid) and time.monotonic() < deadline + 30:
        time.sleep(0.2)
    assert processes_of(uid) == []
    # what a host killed mid-run cannot remove itself: its empty directory and cgroups
    for d in [workdir, *cgroup_dirs_named(os.path.basename(workdir))]:
        while True:  # a cgroup is busy for a moment after its last process exits
            try:
                os.rmdir(d)
                break
            except OSError:
                assert time.monotonic() < deadline + 40
                time.sleep(0.1)


async def test_no_open_descriptor_leads_out_of_the_view() -> None:
    """An inherited directory descriptor would let the candidate walk the host's tree."""
    tests = (
        "import os, stat\nimport candidate\n\n"
        "def test_fds():\n"
        "    for fd in map(int, os.listdir('/proc/self/fd')):\n"
        "        try:\n"
        "            st, target = os.fstat(fd), os.readlink(f'/proc/self/fd/{fd}')\n"
        "        except OSError:\n"
        "            continue\n"
        "        assert not stat.S_ISDIR(st.st_mode) or target.startswith('/proc'), (fd, target)\n"
        "        inside = ('pipe:', 'anon_inode:', '/dev/', '/tmp/', '/proc/')\n"
        "        assert target.startswith(inside), (fd, target)\n"
    )
    r = await run(ADD, tests)
    assert r.passed, r.tests
