"""The tree of hidden thoughts of one request: samples, steps, critiques, revisions,
votes, verdicts and the answer. Append-only; each node goes to the store the moment it is
added and to any listener (progress bars now, server events later)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from ponder.store import NodeRecord, TraceStore

NodeKind = Literal["root", "sample", "step", "critique", "revision", "vote", "verdict", "answer", "note"]
Listener = Callable[[NodeRecord], None]


def new_id() -> str:
    return uuid.uuid4().hex


class Trace:
    """Collects nodes for one trace id and persists them through an optional store."""

    def __init__(self, trace_id: str | None = None, store: TraceStore | None = None) -> None:
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
