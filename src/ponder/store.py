"""SQLite persistence for traces: every thought is written as it happens (WAL mode), so a
crash loses nothing already thought and another process can read a trace while it grows."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    id TEXT PRIMARY KEY,
    question TEXT NOT NULL,
    strategy TEXT NOT NULL,
    model TEXT NOT NULL,
    budget TEXT NOT NULL,
    status TEXT NOT NULL,
    answer TEXT,
    stopped_by TEXT,
    usage TEXT,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL REFERENCES traces(id),
    parent_id TEXT,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    answer TEXT,
    score REAL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL,
    meta TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_by_trace ON nodes(trace_id, seq);
"""


class StoreError(RuntimeError):
    """The trace store cannot be opened or written."""


def default_store_path() -> Path:
    home = os.environ.get("PONDER_HOME")
    base = Path(home) if home else Path(user_data_dir("ponder", appauthor=False))
    return base / "traces.sqlite"


@dataclass
class NodeRecord:
    id: str
    trace_id: str
    parent_id: str | None
    seq: int
    kind: str
    text: str
    answer: str | None
    score: float | None
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    meta: dict[str, Any]
    created_at: float


@dataclass
class TraceRecord:
    id: str
    question: str
    strategy: str
    model: str
    budget: dict[str, Any]
    status: str
    answer: str | None
    stopped_by: str | None
    usage: dict[str, Any] | None
    created_at: float
    finished_at: float | None
    nodes: list[NodeRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TraceStore:
    """A SQLite file of traces. Thread-safe: one connection behind a lock."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open trace store {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            with self._lock:
                self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write trace store {self.path}: {exc}") from exc

    def begin_trace(
        self,
        trace_id: str,
        *,
        question: str,
        strategy: str,
        model: str,
        budget: dict[str, Any],
        created_at: float,
    ) -> None:
        self._write(
            "INSERT INTO traces (id, question, strategy, model, budget, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'running', ?)",
            (trace_id, question, strategy, model, json.dumps(budget), created_at),
        )

    def add_node(self, node: NodeRecord) -> None:
        self._write(
            "INSERT INTO nodes (id, trace_id, parent_id, seq, kind, text, answer, score, prompt_tokens,"
            " completion_tokens, seconds, meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                node.id,
                node.trace_id,
                node.parent_id,
                node.seq,
                node.kind,
                node.text,
                node.answer,
                node.score,
                node.prompt_tokens,
                node.completion_tokens,
                node.seconds,
                json.dumps(node.meta),
                node.created_at,
            ),
        )

    def finish_trace(
        self,
        trace_id: str,
        *,
        status: str,
        answer: str | None,
        stopped_by: str | None,
        usage: dict[str, Any],
        finished_at: float,
        model: str | None = None,
    ) -> None:
        """Close a trace; `model` corrects the name when the engine learnt it while running
        (an HTTP engine asks the server)."""
        self._write(
            "UPDATE traces SET status=?, answer=?, stopped_by=?, usage=?, finished_at=?,"
            " model=COALESCE(?, model) WHERE id=?",
            (status, answer, stopped_by, json.dumps(usage), finished_at, model or None, trace_id),
        )

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read trace store {self.path}: {exc}") from exc

    def list_traces(self, limit: int = 50) -> list[TraceRecord]:
        rows = self._query(
            "SELECT id, question, strategy, model, budget, status, answer, stopped_by, usage, created_at,"
            " finished_at FROM traces ORDER BY created_at DESC LIMIT ?",
            (limit,),
        )
        return [_trace(row) for row in rows]

    def get_trace(self, trace_id: str) -> TraceRecord | None:
        """The trace with its nodes; `trace_id` may be a unique prefix."""
        rows = self._query(
            "SELECT id, question, strategy, model, budget, status, answer, stopped_by, usage, created_at,"
            " finished_at FROM traces WHERE id LIKE ? ORDER BY created_at LIMIT 2",
            (trace_id.replace("%", "").replace("_", "") + "%",),
        )
        if len(rows) != 1:
            return None
        trace = _trace(rows[0])
        trace.nodes = [
            NodeRecord(
                id=row[0],
                trace_id=row[1],
                parent_id=row[2],
                seq=row[3],
                kind=row[4],
                text=row[5],
                answer=row[6],
                score=row[7],
                prompt_tokens=row[8],
                completion_tokens=row[9],
                seconds=row[10],
                meta=json.loads(row[11]),
                created_at=row[12],
            )
            for row in self._query(
                "SELECT id, trace_id, parent_id, seq, kind, text, answer, score, prompt_tokens,"
                " completion_tokens, seconds, meta, created_at FROM nodes WHERE trace_id=? ORDER BY seq",
                (trace.id,),
            )
        ]
        return trace


def _trace(row: tuple[Any, ...]) -> TraceRecord:
    return TraceRecord(
        id=row[0],
        question=row[1],
        strategy=row[2],
        model=row[3],
        budget=json.loads(row[4]),
        status=row[5],
        answer=row[6],
        stopped_by=row[7],
        usage=json.loads(row[8]) if row[8] else None,
        created_at=row[9],
        finished_at=row[10],
    )
