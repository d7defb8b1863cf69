"""The tree of hidden thoughts of one request: samples, steps, critiques, revisions,
votes, verdicts and the answer. Each node goes to the store the moment it is added and to
any listener (progress bars, server events, the viewer).

A node is added once and may then grow: a sample being written is a node whose text is
updated as tokens arrive and closed when it finishes. Every write gives the node a new
`version`, increasing within the trace, so a live reader asks `nodes_after(trace, version)`
and sees each change exactly once.

`Store` is the interface the core owns; `ponder.store.TraceStore` (SQLite) is its default
adapter, and a server or a cluster may bring another.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

NodeKind = Literal[
    "root", "sample", "step", "critique", "revision", "vote", "verdict", "answer", "note", "decision"
]
TraceStatus = Literal["queued", "running", "done", "error", "cancelled", "interrupted"]


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
    version: int = 0


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
    problem: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    prompts: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] | None = None  # a server job's request, kept to run it after a restart

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Store(Protocol):
    """Where traces live. Writes come from the process that thinks; reads from anyone
    (CLI, server, viewer), also while the trace grows."""

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
        """Begin "running", or "queued" with the `job` to run later (see `dequeue`)."""

    def dequeue(self, trace_id: str, status: TraceStatus, error: str | None = None) -> bool:
        """Move a queued trace to `status` ("running": this process thinks it now); True
        only for the one caller that moved it."""

    def adopt_queued(self) -> list[TraceRecord]:
        """Take over the queued traces whose owning process is gone, oldest first."""

    def add_node(self, node: NodeRecord) -> None: ...

    def update_node(self, node: NodeRecord) -> None: ...

    def add_prompt(self, trace_id: str, key: str, payload: dict[str, Any]) -> None: ...

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
    ) -> None: ...

    def get_trace(self, trace_id: str) -> TraceRecord | None: ...

    def list_traces(
        self,
        limit: int = 50,
        offset: int = 0,
        *,
        status: str | None = None,
        strategy: str | None = None,
        text: str | None = None,
    ) -> list[TraceRecord]: ...

    def nodes_after(self, trace_id: str, version: int = 0) -> list[NodeRecord]: ...

    def close(self) -> None: ...


Listener = Callable[[NodeRecord], None]

#: the node fields `Trace.update` may change (the rest name the node and where it sits)
_GROWING = frozenset({"text", "answer", "score", "prompt_tokens", "completion_tokens", "seconds"})


def collect(nodes: list[NodeRecord]) -> Listener:
    """A listener that keeps each node once, in the order they were added. Listeners hear
    every update of a node too; the record kept is the live one, so it ends final."""
    seen: set[str] = set()

    def hear(node: NodeRecord) -> None:
        if node.id not in seen:
            seen.add(node.id)
            nodes.append(node)

    return hear


def new_id() -> str:
    return uuid.uuid4().hex


def prompt_key(payload: dict[str, Any]) -> str:
    """A short, stable name for a prompt as sent: the same request gets the same key."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Trace:
    """Collects nodes for one trace id and persists them through an optional store.

    Listeners hear every change in memory (each add, each update, a growing sample's every
    delta), given the live record (it keeps changing: copy what must not); the store hears
    adds and final writes at once, and a growing node at most every
    `write_every` seconds (`throttle=True`), so a sample streaming tokens does not turn
    into a write per token, and a kill loses at most that much of its text.
    """

    def __init__(
        self, trace_id: str | None = None, store: Store | None = None, *, write_every: float = 0.25
    ) -> None:
        self.id = trace_id or new_id()
        self.store = store
        self.nodes: list[NodeRecord] = []
        self.listeners: list[Listener] = []
        self.prompts: dict[str, dict[str, Any]] = {}
        self.write_every = write_every
        self._by_id: dict[str, NodeRecord] = {}
        self._written: dict[str, float] = {}  # node -> when the store last heard of it
        self._pending: set[str] = set()  # nodes changed since their last write

    def add(
        self,
        kind: NodeKind,
        text: str = "",
        *,
        parent: str | None = None,
        answer: str | None = None,
        score: float | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        seconds: float = 0.0,
        **meta: Any,
    ) -> str:
        node = NodeRecord(
            id=new_id(),
            trace_id=self.id,
            parent_id=parent,
            seq=len(self.nodes),
            kind=kind,
            text=text,
            answer=answer,
            score=score,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            seconds=seconds,
            meta=meta,
            created_at=time.time(),
        )
        self.nodes.append(node)
        self._by_id[node.id] = node
        if self.store is not None:
            self.store.add_node(node)
            self._written[node.id] = time.monotonic()
        self._tell(node)
        return node.id

    def get(self, node_id: str) -> NodeRecord:
        return self._by_id[node_id]

    def update(
        self, node_id: str, *, meta: dict[str, Any] | None = None, throttle: bool = False, **fields: Any
    ) -> NodeRecord:
        """Change a node that grew (text, answer, score, tokens, seconds; `meta` is merged).
        With `throttle` the store hears of it only if its last write is `write_every` old;
        `flush` writes what is left."""
        unknown = set(fields) - _GROWING
        if unknown:
            raise TypeError(f"Trace.update cannot change {', '.join(sorted(unknown))}")
        node = self._by_id[node_id]
        for name, value in fields.items():
            setattr(node, name, value)
        if meta:
            node.meta = {**node.meta, **meta}
        if self.store is not None:
            due = time.monotonic() - self._written.get(node_id, -math.inf) >= self.write_every
            if throttle and not due:
                self._pending.add(node_id)
            else:
                self._write(node)
        self._tell(node)
        return node

    def flush(self, node_ids: Iterable[str] | None = None) -> None:
        """Write the throttled changes still pending (of `node_ids`, or all)."""
        for node_id in list(self._pending if node_ids is None else self._pending.intersection(node_ids)):
            self._write(self._by_id[node_id])

    def add_prompt(self, payload: dict[str, Any]) -> str:
        """Keep a prompt as sent, once per trace; returns the key nodes name it by."""
        key = prompt_key(payload)
        if key not in self.prompts:
            self.prompts[key] = payload
            if self.store is not None:
                self.store.add_prompt(self.id, key, payload)
        return key

    def _write(self, node: NodeRecord) -> None:
        assert self.store is not None
        self._pending.discard(node.id)
        self.store.update_node(node)
        self._written[node.id] = time.monotonic()

    def _tell(self, node: NodeRecord) -> None:
        for listener in self.listeners:
            listener(node)
