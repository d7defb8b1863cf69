"""Following a trace live and saying it as text: the reader every stream shares (chat chunks
and job events), and the rendering of thoughts as `delta.reasoning_content`.

A reader wakes on every new node (the think's pulse) and at least every `poll` seconds
(updates the core writes without a node event: partial sample text, another process's
trace), reads what changed since the version it last saw, and stops once the think is over
and everything it wrote has been read."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ponder.server.thinking import SOLUTION_KINDS, Thinking
from ponder.store import NodeRecord, TraceStore

POLL = 0.25
HEARTBEAT = 15.0


async def follow(
    store: TraceStore,
    trace_id: str,
    live: Thinking | None,
    *,
    after: int = 0,
    stopping: threading.Event | None = None,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[list[NodeRecord]]:
    """Batches of nodes changed after version `after`; an empty batch every HEARTBEAT
    seconds of silence (so a stream can send a keep-alive). Ends when the think does (at
    once for a trace nobody is thinking), when the server is stopping, or when `gone()`
    says the client has left."""
    quiet_since = time.monotonic()
    while True:
        finished = live is None or live.done
        nodes = store.nodes_after(trace_id, after)
        if nodes:
            after = max(n.version for n in nodes)
            quiet_since = time.monotonic()
            yield nodes
        elif time.monotonic() - quiet_since > HEARTBEAT:
            quiet_since = time.monotonic()
            yield []
        if finished or (stopping is not None and stopping.is_set()):
            return
        assert live is not None
        await live.pulse.wait(POLL)
        if gone is not None and await gone():
            return


@dataclass
class Narrator:
    """Turns nodes into reasoning text: a header when a thought appears, then the text it
    adds as it grows, then the answer it reached; one line for votes, verdicts and notes."""

    shown: dict[str, int] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)

    def say(self, nodes: list[NodeRecord]) -> str:
        return "".join(self._one(n) for n in nodes)

    def _one(self, node: NodeRecord) -> str:
        if node.kind in ("root", "answer"):
            return ""
        if node.kind not in (*SOLUTION_KINDS, "critique"):
            if node.id in self.shown:
                return ""
            self.shown[node.id] = len(node.text)
            detail = node.text.strip().replace("\n", " ")[:300]
            extra = f" answer={node.answer}" if node.answer else ""
            extra += f" score={node.score:.3g}" if node.score is not None else ""
            return f"\n[{node.kind}] {detail}{extra}\n"
        out = ""
        before = self.shown.get(node.id)
        if before is None:
            index = node.meta.get("index")
            out += f"\n[{node.kind}{'' if index is None else f' {index + 1}'}]\n"
            before = 0
        out += node.text[before:]
        self.shown[node.id] = max(before, len(node.text))
        if node.answer and node.id not in self.answered:
            self.answered.add(node.id)
            out += f"\n=> {node.answer}\n"
        return out


def node_json(node: NodeRecord) -> dict[str, Any]:
    """A node as a job event carries it (the client replaces a node it has by id)."""
    return {
        "id": node.id,
        "parent_id": node.parent_id,
        "seq": node.seq,
        "version": node.version,
        "kind": node.kind,
        "text": node.text,
        "answer": node.answer,
        "score": node.score,
        "prompt_tokens": node.prompt_tokens,
        "completion_tokens": node.completion_tokens,
        "seconds": node.seconds,
        "meta": node.meta,
        "created_at": node.created_at,
    }
