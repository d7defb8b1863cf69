"""Traces for the viewer's and usage's tests, written through the store's own API (and one
bulk writer for a store of 100,000 traces). Their usage is what think() would record:
tokens are the sums of the nodes, reasoning = generated tokens not shown as the answer."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from ponder.store import TraceStore
from ponder.trace import NodeRecord, new_id

XSS = "<script>alert('x')</script> and <img src=x onerror=alert(1)> done"


class Writer:
    """One trace being written, node by node, the way a think writes it."""

    def __init__(
        self, store: TraceStore, question: str, *, strategy: str = "self-consistency:n=4", **kw: Any
    ):
        self.store = store
        self.id = new_id()
        self.nodes: list[NodeRecord] = []
        self.created_at = kw.pop("created_at", time.time())
        store.begin_trace(
            self.id,
            question=question,
            strategy=strategy,
            model=kw.pop("model", "smollm2"),
            budget=kw.pop("budget", {}),
            created_at=self.created_at,
            problem=kw.pop("problem", {"format": "auto"}),
        )
        self.root = self.add("root", question, parent=None, strategy=strategy)

    def add(self, kind: str, text: str = "", *, parent: str | None = "root", **fields: Any) -> str:
        meta = {k: fields.pop(k) for k in list(fields) if k not in _NODE_FIELDS}
        node = NodeRecord(
            id=new_id(),
            trace_id=self.id,
            parent_id=self.root if parent == "root" else parent,
            seq=len(self.nodes),
            kind=kind,
            text=text,
            answer=fields.get("answer"),
            score=fields.get("score"),
            prompt_tokens=fields.get("prompt_tokens", 0),
            completion_tokens=fields.get("completion_tokens", 0),
            seconds=fields.get("seconds", 0.0),
            meta=meta,
            created_at=fields.get("created_at", self.created_at + 0.1 * len(self.nodes)),
        )
        self.nodes.append(node)
        self.store.add_node(node)
        return node.id

    def grow(self, node_id: str, **fields: Any) -> None:
        node = next(n for n in self.nodes if n.id == node_id)
        for key, value in fields.items():
            setattr(node, key, value)
        self.store.update_node(node)

    def finish(self, answer: str | None, *, shown: int = 0, usd: float = 0.0, status: str = "done") -> None:
        prompt = sum(n.prompt_tokens for n in self.nodes)
        completion = sum(n.completion_tokens for n in self.nodes)
        seconds = (
            max((n.created_at + n.seconds for n in self.nodes), default=self.created_at) - self.created_at
        )
        self.add("answer", answer or "", parent=self.nodes[-1].id, answer=answer)
        usage = {
            "prompt_tokens": prompt,
            "reasoning_tokens": completion - shown,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "seconds": round(seconds, 3),
            "usd": usd,
        }
        self.store.finish_trace(
            self.id,
            status=status,  # type: ignore[arg-type]
            answer=answer,
            stopped_by=None,
            usage=usage,
            finished_at=self.created_at + seconds,
        )


_NODE_FIELDS = {"answer", "score", "prompt_tokens", "completion_tokens", "seconds", "created_at"}


def vote_trace(
    store: TraceStore,
    question: str,
    answers: list[str],
    *,
    gold: str | None = None,
    texts: list[str] | None = None,
    greedy: int | None = None,
    usd: float = 0.0,
    status: str = "done",
    **kw: Any,
) -> Writer:
    """A finished self-consistency trace: samples (one prompt, its tokens on the first),
    a vote whose winner is the most common answer, the answer."""
    problem = {"format": "auto", **({"gold": gold} if gold is not None else {})}
    w = Writer(store, question, problem=problem, budget=kw.pop("budget", {"tokens": 2000}), **kw)
    store.add_prompt(w.id, "p1", {"messages": [{"role": "user", "content": question}], "n": len(answers)})
    totals: dict[str, float] = {}
    for i, answer in enumerate(answers):
        text = texts[i] if texts else f"Let me think step {i}. The answer is {answer}."
        extra = {"greedy": True} if greedy == i else {}
        w.add(
            "sample",
            text,
            answer=answer,
            prompt_tokens=20 if i == 0 else 0,
            completion_tokens=10 + i,
            seconds=0.5 + 0.25 * i,
            prompt="p1",
            finish_reason="stop",
            **extra,
        )
        totals[answer] = totals.get(answer, 0) + 1
    winner = max(totals, key=lambda a: totals[a])
    tally_text = ", ".join(f"{a}: {int(c)}" for a, c in totals.items())
    w.add("vote", tally_text, answer=winner, score=totals[winner] / len(answers), totals=totals)
    w.finish(winner, shown=10, usd=usd, status=status)
    return w


def refine_trace(store: TraceStore, question: str = "Write 2 + 2 in words") -> Writer:
    """A refine trace with a failed verdict and its feedback, a revision, a routing decision."""
    w = Writer(store, question, strategy="refine", budget={"seconds": 60.0}, problem={"format": "text"})
    w.add("decision", "escalate: low confidence", choice="refine", signals={"mean_logprob": -0.9})
    draft = w.add("sample", "two plus two is five", answer="five", prompt_tokens=15, completion_tokens=8)
    w.add("verdict", "the sum is wrong: 2 + 2 = 4", parent=draft, passed=False, verifier="judge", score=0.0)
    w.add("critique", "Check the arithmetic.", parent=draft, prompt_tokens=30, completion_tokens=5)
    fixed = w.add("revision", "two plus two is four", parent=draft, answer="four", completion_tokens=7)
    w.add("verdict", "looks right", parent=fixed, passed=True, verifier="judge", score=1.0)
    w.finish("four", shown=7)
    return w


def bulk_store(path: Path, n: int) -> None:
    """A store of `n` finished traces written in one transaction (the store API would
    commit each one: minutes for 100,000). Trace i is "question i", newest last."""
    TraceStore(path).close()  # the schema, at the current version
    strategies = ["self-consistency:n=8", "best-of-n", "refine", "auto"]
    statuses = ["done", "done", "done", "error"]
    usage = '{"prompt_tokens": 30, "reasoning_tokens": 40, "completion_tokens": 50, "total_tokens": 80,'
    usage += ' "seconds": 1.5, "usd": 0.0001}'
    start = time.time() - n
    rows = (
        (f"bulk{i:06d}", f"question {i}", strategies[i % 4], "m", "{}", statuses[i % 4], str(i % 10), usage,
         start + i, start + i + 1.5, "{}")
        for i in range(n)
    )  # fmt: skip
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO traces (id, question, strategy, model, budget, status, answer, usage, created_at,"
            " finished_at, problem) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()
