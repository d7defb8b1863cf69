"""`ponder usage` and `ponder.usage.spend`: the numbers are the sums over the store's nodes
(an oracle that reads every node through the store API), grouped and filtered right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ponder.store import TraceStore
from ponder.usage import UsageError, parse_since, spend
from ui_traces import Writer, refine_trace, vote_trace


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "traces.sqlite"
    store = TraceStore(path)
    week_ago = time.time() - 8 * 86400
    vote_trace(store, "old one", ["1", "1"], created_at=week_ago, usd=0.5)
    vote_trace(store, "changed", ["3", "4", "4"], greedy=0, usd=0.25)  # greedy said 3, vote said 4
    vote_trace(store, "same", ["5", "5", "6"], usd=0.125)  # first sample already had it
    refine_trace(store)  # draft "five", final "four": changed
    running = Writer(store, "still thinking", strategy="best-of-n", model="other")
    running.add("sample", "partial", prompt_tokens=9, completion_tokens=4, seconds=1.0, open=True)
    store.close()
    return path


def _oracle(path: Path, since: float | None = None) -> dict[str, float]:
    """Sums over every node of every trace, read back through the store API."""
    store = TraceStore(path, readonly=True)
    traces = [store.get_trace(t.id) for t in store.list_traces(1000)]
    sums = {"traces": 0, "prompt": 0, "completion": 0, "reasoning": 0, "usd": 0.0}
    for t in traces:
        assert t is not None
        if since is not None and t.created_at < since:
            continue
        completion = sum(n.completion_tokens for n in t.nodes)
        sums["traces"] += 1
        sums["prompt"] += sum(n.prompt_tokens for n in t.nodes)
        sums["completion"] += completion
        sums["reasoning"] += t.usage["reasoning_tokens"] if t.usage else completion
        sums["usd"] += (t.usage or {}).get("usd", 0.0)
    store.close()
    return sums


def test_totals_equal_the_sums_over_the_nodes(store_path: Path) -> None:
    total = spend(store_path).total
    oracle = _oracle(store_path)
    assert total.traces == oracle["traces"] == 5
    assert total.prompt_tokens == oracle["prompt"]
    assert total.completion_tokens == oracle["completion"]
    assert total.reasoning_tokens == oracle["reasoning"]
    assert total.answer_tokens == oracle["completion"] - oracle["reasoning"]
    assert total.usd == pytest.approx(oracle["usd"]) == 0.875


def test_since_keeps_only_recent_traces(store_path: Path) -> None:
    since = parse_since("7d")
    assert since is not None
    recent = spend(store_path, since=since).total
    oracle = _oracle(store_path, since)
    assert recent.traces == oracle["traces"] == 4
    assert recent.prompt_tokens == oracle["prompt"]
    assert recent.completion_tokens == oracle["completion"]
    assert recent.usd == pytest.approx(0.375)


def test_reasoning_that_changed_the_answer(store_path: Path) -> None:
    """Changed: the greedy "3" became "4", refine's draft "five" became "four". Not changed:
    "same" (first sample said 5), the old trace, the running one (no answer yet)."""
    result = spend(store_path, by="strategy")
    groups = {g.key: g for g in result.groups}
    assert result.total.changed_traces == 2
    sc = groups["self-consistency"]
    changed_trace_reasoning = (10 + 11 + 12) - 10  # completion of "changed" minus the shown answer
    assert sc.changed_reasoning_tokens == changed_trace_reasoning
    assert sc.changed_share == pytest.approx(changed_trace_reasoning / sc.reasoning_tokens)
    assert groups["refine"].changed_share == 1.0
    assert groups["best-of-n"].changed_traces == 0 and groups["best-of-n"].reasoning_tokens == 4


def test_groups_add_up_to_the_total(store_path: Path) -> None:
    for by in ("strategy", "day", "model"):
        result = spend(store_path, by=by)  # type: ignore[arg-type]
        for field in ("traces", "prompt_tokens", "reasoning_tokens", "answer_tokens", "changed_traces"):
            assert sum(getattr(g, field) for g in result.groups) == getattr(result.total, field), (by, field)
    days = [g.key for g in spend(store_path, by="day").groups]
    assert days == sorted(days) and len(days) == 2
    assert {g.key for g in spend(store_path, by="model").groups} == {"smollm2", "other"}


def test_cli_json_equals_the_oracle(store_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ponder", "usage", "--store", str(store_path), "--json", "--by", "strategy"],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout)
    oracle = _oracle(store_path)
    assert data["total"]["prompt_tokens"] == oracle["prompt"]
    assert data["total"]["completion_tokens"] == oracle["completion"]
    assert data["total"]["reasoning_tokens"] == oracle["reasoning"]
    assert {g["key"] for g in data["groups"]} == {"self-consistency", "refine", "best-of-n"}


def test_cli_table_and_bad_input(store_path: Path, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ponder", "usage", *args],
            capture_output=True,
            text=True,
            env=_env(tmp_path),
        )

    table = run("--store", str(store_path), "--since", "7d", "--by", "model")
    assert table.returncode == 0 and "smollm2" in table.stdout and "total" in table.stdout
    for args, message in [
        (["--store", str(store_path), "--since", "7 parsecs"], "since '7 parsecs'"),
        (["--store", str(store_path), "--by", "week"], "--by must be one of strategy, day, model"),
        (["--store", str(tmp_path / "missing.sqlite")], "no trace store at"),
    ]:
        bad = run(*args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


def test_parse_since() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("1.5d", now=0.0) == -1.5 * 86400
    assert parse_since(None) is None
    with pytest.raises(UsageError):
        parse_since("yesterday")


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PONDER_HOME": str(tmp_path / "home")}
