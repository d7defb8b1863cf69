"""Control flow of think(), the trace and the core strategies on a scripted engine."""

import sqlite3
from pathlib import Path

import pytest

from fakes import ScriptedEngine
from ponder import Budget, TraceStore, athink
from ponder.strategies import StrategyError, parse_strategy
from ponder.strategies.self_consistency import SelfConsistency


async def test_self_consistency_votes_and_persists_every_thought(tmp_path: Path) -> None:
    engine = ScriptedEngine(["so 42", "Answer: 41", "it is 42.0", "Answer: 1,000", "42"])
    store = TraceStore(tmp_path / "t.sqlite")
    answer = await athink("q?", strategy="self-consistency:n=5", engine=engine, store=store)
    assert answer.answer == "42"
    assert answer.score == pytest.approx(3 / 5)
    record = store.get_trace(answer.trace_id)
    assert record is not None and record.status == "done" and record.answer == "42"
    kinds = [n.kind for n in record.nodes]
    assert kinds.count("sample") == 5 and kinds.count("vote") == 1 and kinds[-1] == "answer"
    vote = next(n for n in record.nodes if n.kind == "vote")
    assert vote.meta["totals"] == {"42": 3, "41": 1, "1000": 1}
    # usage: every generated token counted, the shown answer's are not reasoning
    assert answer.usage.completion_tokens == sum(n.completion_tokens for n in record.nodes)
    assert answer.usage.reasoning_tokens == answer.usage.completion_tokens - 2  # "so 42" shown
    assert answer.usage.usd > 0


async def test_ties_go_to_the_answer_seen_first() -> None:
    engine = ScriptedEngine(["Answer: 7", "Answer: 9", "Answer: 9", "Answer: 7"])
    answer = await athink("q?", strategy=SelfConsistency(n=4), engine=engine, store=False)
    assert answer.answer == "7"


async def test_samples_budget_caps_generation_and_is_reported() -> None:
    engine = ScriptedEngine(["Answer: 3"])
    answer = await athink(
        "q?", strategy="self-consistency:n=16", budget="5 samples", engine=engine, store=False
    )
    assert sum(r.n for r in engine.calls) == 5
    assert answer.stopped_by == "samples" and answer.answer == "3"


async def test_token_budget_stops_and_returns_best_so_far() -> None:
    engine = ScriptedEngine(["one two three Answer: 5"])  # 5 tokens each
    answer = await athink(
        "q?", strategy="self-consistency:n=10", budget=Budget(tokens=12), engine=engine, store=False
    )
    assert answer.stopped_by == "tokens"
    assert answer.answer == "5"
    assert answer.usage.completion_tokens == 15  # the sample in flight when the limit hit finishes


async def test_crash_keeps_thoughts_already_written(tmp_path: Path) -> None:
    def explode(request, index):
        raise RuntimeError("engine died")

    store = TraceStore(tmp_path / "t.sqlite")
    with pytest.raises(RuntimeError):
        await athink("q?", strategy="direct", engine=ScriptedEngine(explode), store=store)
    rows = sqlite3.connect(tmp_path / "t.sqlite").execute("SELECT status FROM traces").fetchall()
    assert rows == [("error",)]
    assert sqlite3.connect(tmp_path / "t.sqlite").execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_strategy_specs() -> None:
    sc = parse_strategy("self-consistency:n=4,temperature=0.5")
    assert isinstance(sc, SelfConsistency) and sc.n == 4 and sc.temperature == 0.5
    assert sc.spec() == "self-consistency:n=4,temperature=0.5"
    assert parse_strategy("self-consistency", n=3).n == 3  # type: ignore[attr-defined]
    with pytest.raises(StrategyError, match="unknown strategy"):
        parse_strategy("telepathy")
    with pytest.raises(StrategyError, match="no parameter"):
        parse_strategy("self-consistency:width=3")
    with pytest.raises(StrategyError, match="wants int"):
        parse_strategy("self-consistency:n=many")
    with pytest.raises(StrategyError):
        parse_strategy("self-consistency:n=0")
