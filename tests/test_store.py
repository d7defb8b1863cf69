"""The store seams: migrations, growing nodes read live, interrupted writers, filters; and
athink's contract around them (trace ids, chat input, cancel, errors, prices, loops)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakes import ScriptedEngine
from ponder import Budget, BudgetError, Problem, athink, think
from ponder.problem import ProblemError
from ponder.store import SCHEMA_V1, SCHEMA_VERSION, StoreError, TraceStore
from ponder.trace import NodeRecord


def _node(trace_id: str, seq: int, text: str = "") -> NodeRecord:
    return NodeRecord(
        f"n{trace_id}{seq}", trace_id, None, seq, "sample", text, None, None, 0, 0, 0.0, {}, 0.0
    )


def _begin(store: TraceStore, trace_id: str, question: str = "q", strategy: str = "direct") -> None:
    store.begin_trace(
        trace_id, question=question, strategy=strategy, model="m", budget={}, created_at=time.time()
    )


def test_a_first_release_store_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1)
    db.execute(
        "INSERT INTO traces VALUES ('abc', 'q?', 'direct', 'm', '{}', 'done', '4', NULL, '{}', 1.0, 2.0)"
    )
    for seq in range(3):
        db.execute(
            "INSERT INTO nodes VALUES (?, 'abc', NULL, ?, 'sample', 't', NULL, NULL, 1, 2, 0.1, '{}', 1.0)",
            (f"n{seq}", seq),
        )
    db.commit()
    db.close()

    store = TraceStore(path)
    trace = store.get_trace("abc")
    assert trace is not None and trace.answer == "4" and trace.status == "done"
    assert [n.version for n in trace.nodes] == [1, 2, 3]
    assert store.nodes_after("abc", 2)[0].id == "n2"
    store.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_store_from_a_newer_ponder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    TraceStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        TraceStore(path)


def test_live_readers_see_each_add_and_update_once(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.sqlite")
    _begin(store, "t1")
    _begin(store, "t2")
    first, second = _node("t1", 0, "Let"), _node("t1", 1)
    store.add_node(first)
    store.add_node(second)
    store.add_node(_node("t2", 0))  # another trace's writes do not show up in t1's
    seen = store.nodes_after("t1", 0)
    assert [n.id for n in seen] == [first.id, second.id]
    cursor = seen[-1].version

    first.text = "Let me think"
    store.update_node(first)
    reader = TraceStore(tmp_path / "t.sqlite", readonly=True)  # another process's view
    changed = reader.nodes_after("t1", cursor)
    assert [(n.id, n.text) for n in changed] == [(first.id, "Let me think")]
    assert reader.nodes_after("t1", changed[-1].version) == []
    trace = reader.get_trace("t1")
    assert trace is not None and [n.seq for n in trace.nodes] == [0, 1]
    with pytest.raises(StoreError, match="read-only"):
        reader.add_node(_node("t1", 2))


def test_a_trace_whose_writer_died_reads_as_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    script = (
        "import sys, time; from ponder.store import TraceStore; s = TraceStore(sys.argv[1]); s.begin_trace("
        "'dead', question='q', strategy='direct', model='m', budget={}, created_at=time.time())"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    store = TraceStore(path, readonly=True)
    _trace = store.get_trace("dead")
    assert _trace is not None and _trace.status == "interrupted"

    writer = TraceStore(path)  # a writer opening the store marks it for good
    _begin(writer, "alive")
    assert writer.count_traces(status="interrupted") == 1
    alive = writer.get_trace("alive")
    assert alive is not None and alive.status == "running"  # this process is still writing it


def test_list_filters_and_pages(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.sqlite")
    for i in range(5):
        _begin(store, f"{i:x}0", question=f"What is {i} + 1? 100%_sure", strategy="self-consistency:n=4")
    _begin(store, "ff", question="a plain one", strategy="direct")
    store.finish_trace("ff", status="done", answer="yes", stopped_by=None, usage={}, finished_at=time.time())
    assert store.count_traces() == 6
    assert [t.id for t in store.list_traces(2, 1)] == ["40", "30"]
    assert store.count_traces(strategy="self-consistency") == 5
    assert store.count_traces(strategy="self") == 0  # a name, not any prefix
    assert store.count_traces(text="0%_") == 5  # LIKE wildcards are literal
    assert store.count_traces(text="yes") == 1  # answers are searched too
    assert store.count_traces(status="done", strategy="direct") == 1
    assert store.get_trace("f" * 100_000) is None
    assert store.get_trace("'; DROP TABLE traces; --") is None


async def test_athink_names_the_trace_and_keeps_the_chat(tmp_path: Path) -> None:
    engine = ScriptedEngine(["Arr, 4.\nAnswer: 4"])
    store = TraceStore(tmp_path / "t.sqlite")
    messages = [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And 2 + 2?"},
    ]
    answer = await athink(messages, strategy="direct", engine=engine, store=store, trace_id="job1")
    assert answer.trace_id == "job1" and answer.answer == "4"
    sent = engine.calls[0].messages
    assert sent is not None
    assert sent[0]["role"] == "system" and sent[0]["content"].startswith("You are a pirate.")
    assert [m["content"] for m in sent[1:]] == ["What is 1 + 1?", "2", "And 2 + 2?"]
    trace = store.get_trace("job1")
    assert trace is not None and trace.question == "And 2 + 2?" and trace.status == "done"
    assert trace.problem["system"] == "You are a pirate." and len(trace.problem["history"]) == 2


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "user", "content": 3}],
        [{"role": "robot", "content": "x"}],
        [{"role": "assistant", "content": "x"}],
    ],
)
async def test_malformed_chats_are_refused_before_thinking(messages: list[dict[str, object]]) -> None:
    with pytest.raises(ProblemError):
        await athink(messages, engine=ScriptedEngine(["x"]), store=False)


async def test_a_cancelled_think_keeps_its_thoughts(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.sqlite")
    gate = asyncio.Event()

    class Slow(ScriptedEngine):
        async def generate(self, requests, meter=None, on_completion=None, on_delta=None):  # type: ignore[no-untyped-def]
            if self._count:  # the first call answers, the second hangs until cancelled
                gate.set()
                await asyncio.sleep(3600)
            return await super().generate(requests, meter, on_completion, on_delta)

    task = asyncio.create_task(
        athink("2+2?", strategy="refine:max_rounds=1", engine=Slow(["4"]), store=store, trace_id="c1")
    )
    await gate.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    trace = store.get_trace("c1")
    assert trace is not None and trace.status == "cancelled"
    assert any(n.kind == "sample" and n.text == "4" for n in trace.nodes)


async def test_an_engine_error_is_recorded_on_the_trace(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.sqlite")

    class Broken(ScriptedEngine):
        async def generate(self, requests, meter=None, on_completion=None, on_delta=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("model on fire")

    with pytest.raises(RuntimeError):
        await athink("2+2?", strategy="direct", engine=Broken([]), store=store, trace_id="e1")
    trace = store.get_trace("e1")
    assert trace is not None and trace.status == "error" and "model on fire" in (trace.error or "")


async def test_a_dollar_budget_needs_a_price() -> None:
    engine = ScriptedEngine(["4"])
    engine.price = None  # type: ignore[assignment]
    with pytest.raises(BudgetError, match="price"):
        await athink("2+2?", engine=engine, budget="$0.01", store=False)
    assert engine.calls == []  # refused before anything was spent


async def test_think_works_inside_a_running_loop() -> None:
    engine = ScriptedEngine(["Answer: 4"])
    answer = think("2+2?", strategy="direct", engine=engine, store=False)  # as from a Jupyter cell
    assert answer.answer == "4"
    again = think(Problem("3+1?"), strategy="direct", engine=engine, store=False, budget=Budget(samples=1))
    assert again.answer == "4"
