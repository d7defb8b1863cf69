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

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

NodeKind = Literal[
    "root", "sample", "step", "critique", "revision", "vote", "verdict", "answer", "note", "decision"
]
TraceStatus = Literal["running", "done", "error", "cancelled", "interrupted"]


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
    ) -> None: ...

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


def new_id() -> str:
    return uuid.uuid4().hex


class Trace:
    """Collects nodes for one trace id and persists them through an optional store."""

    def __init__(self, trace_id: str | None = None, store: Store | None = None) -> None:
        self.id = trace_id or new_id()
        self.store = store
        self.nodes: list[NodeRecord] = []
        self.listeners: list[Listener] = []

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
        if self.store is not None:
            self.store.add_node(node)
        for listener in self.listeners:
            listener(node)
        return node.id
