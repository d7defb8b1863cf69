"""SQLite persistence for traces, the default `ponder.trace.Store`: every thought is written
as it happens (WAL mode), so a crash loses nothing already thought and another process can
read a trace while it grows.

The schema is versioned (`PRAGMA user_version`) and upgraded in place by `MIGRATIONS`, so a
store written by an older ponder opens with a newer one; a newer store is refused rather
than misread. A trace records which process writes it (`owner`): one left "running" by a
process that is gone reads as "interrupted".

A server's job may wait for a slot: its trace is begun "queued" with the `job` it will run
(the request as JSON), so a queued job outlives its process too. `dequeue` moves it on
atomically (only one caller wins: two servers on one store run it once) and
`adopt_queued` hands a new server the queued jobs of owners that are gone.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir

from ponder.settings import settings
from ponder.trace import NodeRecord, Store, TraceRecord, TraceStatus

__all__ = ["NodeRecord", "Store", "StoreError", "TraceRecord", "TraceStore", "default_store_path"]

# Version 1: the first release's tables. Each later entry upgrades version i+1 -> i+2.
SCHEMA_V1 = """
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
MIGRATIONS = [
    # 1 -> 2: nodes grow (version), the problem, error and owner of a trace, prompts sent.
    """
    ALTER TABLE nodes ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    UPDATE nodes SET version = seq + 1;
    CREATE INDEX nodes_by_version ON nodes(trace_id, version);
    ALTER TABLE traces ADD COLUMN problem TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE traces ADD COLUMN error TEXT;
    ALTER TABLE traces ADD COLUMN owner TEXT;
    CREATE INDEX traces_by_created ON traces(created_at);
    CREATE TABLE prompts (
        trace_id TEXT NOT NULL,
        key TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (trace_id, key)
    );
    """,
    # 2 -> 3: a queued job's request, to run it after a restart.
    """
    ALTER TABLE traces ADD COLUMN job TEXT;
    CREATE INDEX traces_by_status ON traces(status, created_at);
    """,
]
SCHEMA_VERSION = 1 + len(MIGRATIONS)

_TRACE_COLUMNS = (
    "id, question, strategy, model, budget, status, answer, stopped_by, usage, created_at, finished_at,"
    " problem, error, owner, job"
)
_NODE_COLUMNS = (
    "id, trace_id, parent_id, seq, kind, text, answer, score, prompt_tokens, completion_tokens, seconds,"
    " meta, created_at, version"
)
_NODE_NAMES = tuple(name.strip() for name in _NODE_COLUMNS.split(","))  # read once, not per row
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class StoreError(RuntimeError):
    """The trace store cannot be opened, read or written."""


def default_store_path() -> Path:
    """`$PONDER_HOME/traces.sqlite`, else the platform's user data directory."""
    home = settings().home
    return (home or Path(user_data_dir("ponder", appauthor=False))) / "traces.sqlite"


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process (jiffies since boot), so a recycled pid is not
    mistaken for the writer; None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid()) or ''}"


def owner_alive(owner: str | None) -> bool:
    """Whether the process that wrote a trace may still be writing it. Another host's
    process cannot be checked from here and counts as alive."""
    if not owner:
        return False  # written before owners were recorded: nobody is writing it now
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return True
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if start:
        return _process_start(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TraceStore:
    """A SQLite file of traces. Thread-safe: one connection behind a lock. Open one per
    process and share it; `readonly=True` opens an existing file without writing to it
    (a viewer), and reads a dead writer's trace as "interrupted" without marking it."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, readonly: bool = False) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.readonly = readonly
        self._lock = threading.Lock()
        try:
            if readonly:
                if not self.path.exists():
                    raise StoreError(f"no trace store at {self.path}")
                uri = f"file:{self.path}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version != SCHEMA_VERSION:
                    raise StoreError(
                        f"trace store {self.path} has schema version {version}, this ponder reads"
                        f" {SCHEMA_VERSION}: open it once with `ponder traces list` to upgrade it"
                    )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
                self.sweep_interrupted()
            self._db.execute("PRAGMA busy_timeout=5000")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open trace store {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:  # a new file, or one from before versions were recorded
            self._db.executescript(SCHEMA_V1)
            version = 1
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"trace store {self.path} has schema version {version}, newer than this ponder's"
                f" {SCHEMA_VERSION}: upgrade ponder to read it"
            )
        for target, script in enumerate(MIGRATIONS[version - 1 :], start=version + 1):
            self._db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one write; returns how many rows it changed."""
        if self.readonly:
            raise StoreError(f"trace store {self.path} is open read-only")
        try:
            with self._lock:
                return self._db.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write trace store {self.path}: {exc}") from exc

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read trace store {self.path}: {exc}") from exc

    def begin_trace(
        self,
        trace_id: str,
        *,
        question: str,
        strategy: str,
        model: str,
        budget: dict[str, Any],
        created_at: float,
        problem: dict[str, Any] | None = None,
        job: dict[str, Any] | None = None,
    ) -> None:
        """Begin a trace "running", or "queued" with the `job` to run later. A queued trace
        this process has dequeued (running, no nodes yet) is begun in place: it keeps its
        id and creation time. Any other trace with that id is an error."""
        changed = self._write(
            "INSERT INTO traces (id, question, strategy, model, budget, status, created_at, problem, owner,"
            " job) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET question=excluded.question, strategy=excluded.strategy,"
            " model=excluded.model, budget=excluded.budget, problem=excluded.problem"
            " WHERE excluded.status = 'running' AND traces.status = 'running'"
            " AND traces.owner = excluded.owner"
            " AND NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.trace_id = traces.id)",
            (
                trace_id,
                question,
                strategy,
                model,
                json.dumps(budget),
                "running" if job is None else "queued",
                created_at,
                json.dumps(problem or {}),
                this_process(),
                None if job is None else json.dumps(job),
            ),
        )
        if changed != 1:
            raise StoreError(f"cannot begin trace {trace_id}: a trace with that id exists")

    def dequeue(self, trace_id: str, status: TraceStatus, error: str | None = None) -> bool:
        """Move a queued trace on: to "running" when this process will think it now (it
        becomes the owner), or to an end ("cancelled", "error"). Atomic: True only for the
        one caller that moved it, False when it was no longer queued."""
        ending = status != "running"
        return (
            self._write(
                "UPDATE traces SET status=?, owner=CASE WHEN ? THEN owner ELSE ? END,"
                " finished_at=CASE WHEN ? THEN ? END, error=? WHERE id=? AND status='queued'",
                (status, ending, this_process(), ending, time.time(), error, trace_id),
            )
            == 1
        )

    def adopt_queued(self) -> list[TraceRecord]:
        """The queued traces whose owner is gone, now owned by this process, oldest first:
        a server starting up runs the jobs a dead one had accepted. Each is taken with one
        conditional write, so of two servers starting at once only one adopts a job."""
        me = this_process()
        adopted = [
            trace_id
            for trace_id, owner in self._query(
                "SELECT id, owner FROM traces WHERE status='queued' ORDER BY created_at, rowid"
            )
            if not owner_alive(owner)
            and self._write(
                "UPDATE traces SET owner=? WHERE id=? AND status='queued' AND owner IS ?",
                (me, trace_id, owner),
            )
            == 1
        ]
        return [trace for trace in map(self.get_trace, adopted) if trace is not None]

    def add_node(self, node: NodeRecord) -> None:
        self._write(
            f"INSERT INTO nodes ({_NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " (SELECT COALESCE(MAX(version), 0) + 1 FROM nodes WHERE trace_id = ?))",
            (*_node_values(node), node.trace_id),
        )

    def update_node(self, node: NodeRecord) -> None:
        """Rewrite a node that grew (a sample's text as tokens arrive, then its final
        counts); it gets the trace's next version."""
        self._write(
            "UPDATE nodes SET text=?, answer=?, score=?, prompt_tokens=?, completion_tokens=?, seconds=?,"
            " meta=?, version=(SELECT COALESCE(MAX(version), 0) + 1 FROM nodes WHERE trace_id = ?)"
            " WHERE id=?",
            (*_grown_values(node), node.trace_id, node.id),
        )

    def add_prompt(self, trace_id: str, key: str, payload: dict[str, Any]) -> None:
        """A prompt as sent (messages or rendered text, and the sampling settings), stored
        once per trace and named by `key` in the nodes that used it."""
        self._write(
            "INSERT OR IGNORE INTO prompts (trace_id, key, payload) VALUES (?, ?, ?)",
            (trace_id, key, json.dumps(payload)),
        )

    def finish_trace(
        self,
        trace_id: str,
        *,
        status: TraceStatus,
        answer: str | None,
        stopped_by: str | None,
        usage: dict[str, Any],
        finished_at: float,
        model: str | None = None,
        error: str | None = None,
    ) -> None:
        """Close a trace; `model` corrects the name when the engine learnt it while running
        (an HTTP engine asks the server)."""
        self._write(
            "UPDATE traces SET status=?, answer=?, stopped_by=?, usage=?, finished_at=?,"
            " model=COALESCE(?, model), error=? WHERE id=?",
            (status, answer, stopped_by, json.dumps(usage), finished_at, model or None, error, trace_id),
        )

    def sweep_interrupted(self) -> int:
        """Mark "interrupted" the running traces whose writer on this host is gone; returns
        how many (a server calls it at start-up, every writer when it opens the store)."""
        dead = [
            (trace_id,)
            for trace_id, owner in self._query("SELECT id, owner FROM traces WHERE status='running'")
            if not owner_alive(owner)
        ]
        if dead:
            try:
                with self._lock:
                    self._db.executemany(
                        "UPDATE traces SET status='interrupted' WHERE id=? AND status='running'", dead
                    )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write trace store {self.path}: {exc}") from exc
        return len(dead)

    def list_traces(
        self,
        limit: int = 50,
        offset: int = 0,
        *,
        status: str | None = None,
        strategy: str | None = None,
        text: str | None = None,
    ) -> list[TraceRecord]:
        """Newest first, filtered by status, strategy (name or spec prefix) and text in the
        question or answer."""
        where, params = self._filters(status, strategy, text)
        rows = self._query(
            f"SELECT {_TRACE_COLUMNS} FROM traces{where}"
            " ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (*params, max(0, limit), max(0, offset)),
        )
        return [_trace(row) for row in rows]

    def count_traces(
        self, *, status: str | None = None, strategy: str | None = None, text: str | None = None
    ) -> int:
        where, params = self._filters(status, strategy, text)
        return int(self._query(f"SELECT COUNT(*) FROM traces{where}", params)[0][0])

    @staticmethod
    def _filters(status: str | None, strategy: str | None, text: str | None) -> tuple[str, tuple[Any, ...]]:
        clauses: list[str] = []
        params: list[Any] = []
        if status:
            clauses.append("status = ?")
            params.append(status)
        if strategy:
            clauses.append("(strategy = ? OR strategy LIKE ? ESCAPE '\\')")
            params += [strategy, _like_prefix(strategy) + ":%"]
        if text:
            clauses.append("(question LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\')")
            params += ["%" + _like_prefix(text) + "%"] * 2
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)

    def get_trace(self, trace_id: str) -> TraceRecord | None:
        """The trace with its nodes and prompts; `trace_id` may be a unique prefix."""
        if not _ID.match(trace_id):
            return None
        rows = self._query(f"SELECT {_TRACE_COLUMNS} FROM traces WHERE id = ?", (trace_id,)) or self._query(
            f"SELECT {_TRACE_COLUMNS} FROM traces WHERE id LIKE ? ESCAPE '\\' ORDER BY created_at LIMIT 2",
            (_like_prefix(trace_id) + "%",),
        )
        if len(rows) != 1:
            return None
        trace = _trace(rows[0])
        trace.nodes = self.nodes_after(trace.id, 0)
        trace.nodes.sort(key=lambda n: n.seq)
        trace.prompts = {
            key: json.loads(payload)
            for key, payload in self._query("SELECT key, payload FROM prompts WHERE trace_id=?", (trace.id,))
        }
        return trace

    def nodes_after(self, trace_id: str, version: int = 0) -> list[NodeRecord]:
        """Nodes added or changed since `version`, in the order they were written: a live
        reader keeps the largest version it saw and asks again."""
        rows = self._query(
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE trace_id=? AND version>? ORDER BY version",
            (trace_id, version),
        )
        return [_node(row) for row in rows]


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _grown_values(node: NodeRecord) -> tuple[Any, ...]:
    """The columns a node may change as it grows, in `_NODE_COLUMNS` order."""
    return (
        node.text,
        node.answer,
        node.score,
        node.prompt_tokens,
        node.completion_tokens,
        node.seconds,
        json.dumps(node.meta),
    )


def _node_values(node: NodeRecord) -> tuple[Any, ...]:
    identity = (node.id, node.trace_id, node.parent_id, node.seq, node.kind)
    return (*identity, *_grown_values(node), node.created_at)


def _node(row: tuple[Any, ...]) -> NodeRecord:
    fields = dict(zip(_NODE_NAMES, row, strict=True))
    fields["meta"] = json.loads(fields["meta"])
    return NodeRecord(**fields)


def _trace(row: tuple[Any, ...]) -> TraceRecord:
    status = row[5]
    if status == "running" and not owner_alive(row[13]):
        status = "interrupted"
    return TraceRecord(
        id=row[0],
        question=row[1],
        strategy=row[2],
        model=row[3],
        budget=json.loads(row[4]),
        status=status,
        answer=row[6],
        stopped_by=row[7],
        usage=json.loads(row[8]) if row[8] else None,
        created_at=row[9],
        finished_at=row[10],
        problem=json.loads(row[11] or "{}"),
        error=row[12],
        job=json.loads(row[14]) if row[14] else None,
    )
