"""`ponder fix` control flow on the seeded-defect repositories in tests/fixtures/repos, with a
scripted engine proposing known patches; the checks really run (pytest, ruff, mypy in the
sandbox). The real-model run over every fixture is benchmarks/fix_fixtures.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import ScriptedEngine
from ponder.code.fix import afix, fix_request, write_patch
from ponder.code.patch import PatchError, apply_patch, make_diff
from ponder.code.reply import extract_diff
from ponder.code.repo import read_repo, relevant_files
from ponder.store import TraceStore

REPOS = Path(__file__).parent / "fixtures" / "repos"
NAMES = sorted(p.stem for p in REPOS.glob("*.json"))


def fixture(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((REPOS / f"{name}.json").read_text())
    return data


def materialize(name: str, dest: Path, *, git: bool = False) -> Path:
    """The fixture repository `name` written out under `dest` (a clean git tree with `git`)."""
    root = dest / name
    files = fixture(name)["files"]
    assert isinstance(files, dict)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    if git:
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
        for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "seed"]):
            subprocess.run(["git", "-C", str(root), *argv], check=True, env=env, capture_output=True)
    return root


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def fenced(diff: str) -> str:
    return f"Here is the fix.\n```diff\n{diff}```\n"


# ---------------------------------------------------------------- patches


def test_at_least_twelve_fixtures_with_the_defect_kinds_the_issue_asks_for() -> None:
    assert len(NAMES) >= 12
    checks = {c for n in NAMES for c in fixture(n)["checks"]}  # type: ignore[attr-defined]
    assert {"pytest -q", "ruff check .", "mypy ."} <= checks
    assert "two-files-deep" in NAMES and "package-bug" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_each_known_patch_applies_and_round_trips(name: str) -> None:
    """make_diff and apply_patch are inverses on every fixture (the oracle: the fixed files)."""
    data = fixture(name)
    files, patch = data["files"], data["patch"]
    assert isinstance(files, dict) and isinstance(patch, str)
    fixed = apply_patch(files, patch)
    assert fixed != files
    assert make_diff(files, fixed) == patch
    assert apply_patch(files, make_diff(files, fixed)) == fixed


def test_hunks_are_placed_by_content_when_line_numbers_are_wrong() -> None:
    files = {"m.py": "a = 1\n\n\ndef f():\n    return 1   \n"}
    diff = "--- a/m.py\n+++ b/m.py\n@@ -40,2 +40,2 @@\n def f():\n-    return 1\n+    return 2\n"
    assert apply_patch(files, diff)["m.py"] == "a = 1\n\n\ndef f():\n    return 2\n"
    assert files["m.py"].endswith("return 1   \n")  # the input is left as it was


@pytest.mark.parametrize(
    ("diff", "says"),
    [
        ("--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-nothing like this\n+x\n", "does not match"),
        ("--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "outside the repository"),
        ("--- a/missing.py\n+++ b/missing.py\n@@ -1 +1 @@\n-a\n+b\n", "does not exist"),
        ("just words, no diff", "no unified diff"),
    ],
)
def test_a_patch_that_cannot_apply_says_why(diff: str, says: str) -> None:
    with pytest.raises(PatchError, match=says):
        apply_patch({"m.py": "a = 1\n"}, diff)


def test_extract_diff_takes_the_fenced_block() -> None:
    text = fenced("--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n")
    assert extract_diff(text) == "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n"
    assert extract_diff("no diff here") is None


def test_the_prompt_holds_the_file_two_imports_deep_within_the_limit(tmp_path: Path) -> None:
    files = read_repo(materialize("two-files-deep", tmp_path))
    files.update({f"big_{i}.py": "x = 1\n" * 1200 for i in range(5)})  # each over PROMPT_CHARS
    output = (
        'test_report.py:6: in test_summary\n    assert summary([1, 2, 3]) == "mean=2.0"\n'
        "report.py:5: in summary"
    )
    chosen = relevant_files(files, output, limit=1000)
    assert chosen[:3] == ["test_report.py", "report.py", "stats.py"]
    assert sum(len(files[p]) for p in chosen) <= 1000
    request = fix_request(files, [], None, chat=True, max_tokens=10)
    assert request.messages is not None and "big_0.py" not in request.messages[-1]["content"]


# ---------------------------------------------------------------- the loop, scripted


async def test_a_known_patch_fixes_each_fixture_and_the_original_is_untouched(tmp_path: Path) -> None:
    fixed = []
    for name in NAMES:
        data = fixture(name)
        root = materialize(name, tmp_path)
        before = tree_hash(root)
        engine = ScriptedEngine([fenced(str(data["patch"]))])
        report = await afix(root, data["checks"], engine=engine, max_attempts=2, store=None)  # type: ignore[arg-type]
        assert all(not r.passed for r in report.baseline), (name, report.baseline)
        assert tree_hash(root) == before, name  # checks ran on a sandboxed copy
        if not report.still_failing:
            fixed.append(name)
        assert report.fixed == [r.command for r in report.baseline], (name, report.final)
        assert len(report.attempts) == 1 and report.attempts[0].adopted
    assert fixed == NAMES


async def test_iterates_past_a_reply_without_a_diff_and_a_hunk_that_does_not_match(tmp_path: Path) -> None:
    data = fixture("failing-test")
    root = materialize("failing-test", tmp_path)
    header = "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n"
    bad_hunk = header + " def add(x, y):\n-    return x - y\n+    return x + y\n"
    engine = ScriptedEngine(["I think the bug is in add.", fenced(bad_hunk), fenced(str(data["patch"]))])
    store = TraceStore(tmp_path / "traces.sqlite")
    report = await afix(root, ["pytest -q"], engine=engine, max_attempts=4, store=store)
    assert [a.error is None for a in report.attempts] == [False, False, True]
    assert "no unified diff" in str(report.attempts[0].error)
    assert "does not match" in str(report.attempts[1].error)
    assert report.fixed == ["pytest -q"] and not report.still_failing
    # the second and third prompts told the model why its previous patch was not used
    asks = [c.messages[-1]["content"] for c in engine.calls if c.messages]
    assert "no unified diff" in asks[1] and "does not match" in asks[2]
    assert "assert -1 == 5" in asks[0]  # the failing check's output, with the values
    trace = store.get_trace(report.trace_id)
    assert trace is not None
    revisions = [n for n in trace.nodes if n.kind == "revision"]
    verdicts = [n for n in trace.nodes if n.kind == "verdict"]
    assert len(revisions) == 3
    assert any("assert -1 == 5" in v.text for v in verdicts)  # the baseline's check output
    assert any("[pass]" in v.text for v in verdicts)  # the attempt that fixed it


async def test_a_patch_that_breaks_a_passing_check_is_never_reported_as_a_fix(tmp_path: Path) -> None:
    root = materialize("failing-test", tmp_path)
    breaks_lint = (
        "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,4 @@\n"
        "+import os\n+\n def add(a, b):\n-    return a - b\n+    return a + b\n"
    )
    engine = ScriptedEngine([fenced(breaks_lint)])
    report = await afix(root, ["pytest -q", "ruff check ."], engine=engine, max_attempts=1)
    assert [r.passed for r in report.baseline] == [False, True]
    (attempt,) = report.attempts
    assert attempt.fixed == ["pytest -q"] and attempt.broken == ["ruff check ."] and not attempt.adopted
    assert report.patch == "" and report.fixed == [] and report.broken == []
    assert report.still_failing == ["pytest -q"]


async def test_a_patch_that_edits_the_tests_is_refused(tmp_path: Path) -> None:
    root = materialize("failing-test", tmp_path)
    cheat = (
        "--- a/test_calc.py\n+++ b/test_calc.py\n@@ -4,2 +4,2 @@\n"
        " def test_add():\n-    assert add(2, 3) == 5\n+    assert add(2, 3) == -1\n"
    )
    report = await afix(root, ["pytest -q"], engine=ScriptedEngine([fenced(cheat)]), max_attempts=1)
    assert "edits tests" in str(report.attempts[0].error)
    assert report.patch == "" and report.still_failing == ["pytest -q"]


async def test_nothing_to_fix_asks_the_model_nothing(tmp_path: Path) -> None:
    root = materialize("failing-test", tmp_path)
    engine = ScriptedEngine(["unused"])
    report = await afix(root, ["python -c 'print(1)'"], engine=engine)
    assert report.attempts == [] and engine.calls == [] and report.patch == ""


async def test_the_budget_stops_the_attempts(tmp_path: Path) -> None:
    from ponder.budget import Budget

    root = materialize("failing-test", tmp_path)
    engine = ScriptedEngine(["no diff " * 30])
    report = await afix(root, ["pytest -q"], engine=engine, max_attempts=10, budget=Budget.parse("40tok"))
    assert 1 <= len(report.attempts) < 10 and report.usage["stopped_by"] == "tokens"


# ---------------------------------------------------------------- writing and the CLI


def test_write_patch_writes_only_the_changed_files_and_refuses_a_file_changed_meanwhile(
    tmp_path: Path,
) -> None:
    data = fixture("two-files-deep")
    root = materialize("two-files-deep", tmp_path)
    before = read_repo(root)
    after = apply_patch(before, str(data["patch"]))
    assert write_patch(root, before, after) == ["stats.py"]
    assert read_repo(root) == after
    (root / "stats.py").write_text("changed by the user\n")
    with pytest.raises(PatchError, match="changed on disk"):
        write_patch(root, after, before)
    assert (root / "stats.py").read_text() == "changed by the user\n"


def ponder(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PONDER_HOME": str(home), "PONDER_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ponder", *args], capture_output=True, text=True, env=env, timeout=300,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_cli_apply_refuses_a_dirty_tree_and_a_directory_outside_git(tmp_path: Path) -> None:
    root = materialize("failing-test", tmp_path, git=True)
    (root / "calc.py").write_text("def add(a, b):\n    return a + b  # my own edit\n")
    before = tree_hash(root)
    done = ponder("fix", str(root), "--check", "pytest -q", "--apply", home=tmp_path)
    assert done.returncode == 2 and "uncommitted changes" in done.stderr and "Traceback" not in done.stderr
    assert tree_hash(root) == before
    plain = materialize("off-by-one", tmp_path / "plain")
    done = ponder("fix", str(plain), "--check", "pytest -q", "--apply", home=tmp_path)
    assert done.returncode == 2 and "not in a git work tree" in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["fix", "/no/such/dir", "--check", "pytest -q"], "not a directory"),
        (["fix", "{root}", "--check", "  "], "--check needs a command"),
        (["fix", "{root}", "--check", "pytest -q", "--attempts", "0"], "--attempts must be at least 1"),
        (["fix", "{root}", "--check", "pytest -q", "--ask", "poem"], "--ask takes code or diff"),
        (["fix", "{root}"], "--check"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    root = materialize("failing-test", tmp_path)
    done = ponder(*(a.format(root=root) for a in args), home=tmp_path)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr


@pytest.mark.model
def test_cli_runs_the_bundled_model_and_leaves_the_repository_alone(tmp_path: Path) -> None:
    root = materialize("failing-test", tmp_path, git=True)
    before = tree_hash(root)
    args = ["--check", "pytest -q", "--attempts", "1", "--max-tokens", "128", "--json"]
    done = ponder("fix", str(root), *args, home=tmp_path)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert len(report["attempts"]) == 1 and report["baseline"][0]["passed"] is False
    assert report["applied"] == [] and tree_hash(root) == before
