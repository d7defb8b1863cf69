"""A `Store` kept in memory and replayed into another: a Ray worker thinks into one and
returns it with the result, and the driver writes it into its own store, so a cluster's
traces land in one database written by one process (SQLite wants one writer) and a worker
that dies mid-problem leaves no half trace behind."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ponder.trace import NodeRecord, Store, TraceRecord, TraceStatus


@dataclass
class _Recorded:
    begin: dict[str, Any]
    nodes: dict[str, NodeRecord] = field(default_factory=dict)  # by id, in the order added
    prompts: dict[str, dict[str, Any]] = field(default_factory=dict)
    finish: dict[str, Any] | None = None
    status: str = "running"  # until finished: "queued" while a job waits


class Recorder:
    """Every write to a trace, kept in order; `replay(store)` repeats them (each node once,
    in its final state). Picklable: plain records only."""

    def __init__(self) -> None:
        self.traces: dict[str, _Recorded] = {}

    # the Store protocol's keyword arguments, kept as given (replay passes them back)
    def begin_trace(self, trace_id: str, **fields: Any) -> None:
        queued = fields.get("job") is not None
        self.traces[trace_id] = _Recorded(fields, status="queued" if queued else "running")

    def dequeue(self, trace_id: str, status: TraceStatus, error: str | None = None) -> bool:
        rec = self.traces.get(trace_id)
        if rec is None or rec.status != "queued":
            return False
        rec.status = status
        if status != "running":
            rec.finish = {"status": status, "error": error}
        return True

    def adopt_queued(self) -> list[TraceRecord]:
        return []  # one process's memory: no other owner to take jobs over from

    def add_node(self, node: NodeRecord) -> None:
        self.traces[node.trace_id].nodes[node.id] = dataclasses.replace(node, meta=dict(node.meta))

    def update_node(self, node: NodeRecord) -> None:
        self.add_node(node)

    def add_prompt(self, trace_id: str, key: str, payload: dict[str, Any]) -> None:
        self.traces[trace_id].prompts.setdefault(key, payload)

    def finish_trace(self, trace_id: str, **fields: Any) -> None:
        self.traces[trace_id].finish = fields

    def get_trace(self, trace_id: str) -> TraceRecord | None:
        rec = self.traces.get(trace_id)
        if rec is None:
            return None
        begin, finish = rec.begin, rec.finish or {"status": rec.status}
        return TraceRecord(
            id=trace_id,
            question=begin["question"],
            strategy=begin["strategy"],
            model=finish.get("model") or begin["model"],
            budget=begin["budget"],
            status=finish["status"],
            answer=finish.get("answer"),
            stopped_by=finish.get("stopped_by"),
            usage=finish.get("usage"),
            created_at=begin["created_at"],
            finished_at=finish.get("finished_at"),
            nodes=list(rec.nodes.values()),
            problem=begin.get("problem") or {},
            error=finish.get("error"),
            prompts=dict(rec.prompts),
            job=begin.get("job"),
        )

    def list_traces(
        self,
        limit: int = 50,
        offset: int = 0,
        *,
        status: str | None = None,
        strategy: str | None = None,
        text: str | None = None,
    ) -> list[TraceRecord]:
        found = [
            t
            for t in map(self.get_trace, reversed(self.traces))
            if t is not None
            and (status is None or t.status == status)
            and (strategy is None or t.strategy == strategy or t.strategy.startswith(strategy + ":"))
            and (text is None or text in t.question or text in (t.answer or ""))
        ]
        return found[offset : offset + limit]

    def nodes_after(self, trace_id: str, version: int = 0) -> list[NodeRecord]:
        rec = self.traces.get(trace_id)
        return list(rec.nodes.values())[version:] if rec else []

    def close(self) -> None:
        pass

    def replay(self, store: Store) -> None:
        """Write every recorded trace into `store`, as if it had been thought there."""
        for trace_id, rec in self.traces.items():
            store.begin_trace(trace_id, **rec.begin)
            for node in rec.nodes.values():
                store.add_node(node)
            for key, payload in rec.prompts.items():
                store.add_prompt(trace_id, key, payload)
            if rec.finish is not None:
                store.finish_trace(trace_id, **rec.finish)
