"""What the viewer's JSON says about a trace: a list row, the whole trace, a node. Plain
dicts of the store's records plus what a reader wants at a glance (correct or not, the
token split); the page renders them as text, never as markup."""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any

from ponder.extract import extract_answer
from ponder.trace import NodeRecord, TraceRecord

# Longer answers are not worth math-verify's time (off the main thread it has no timeout).
_MATH_CHECK_LIMIT = 200


@functools.lru_cache(maxsize=4096)
def _equivalent(gold: str, answer: str, answer_format: str) -> bool:
    if extract_answer(gold, answer_format) == answer or gold.strip() == answer.strip():
        return True
    if answer_format in ("text", "choice", "code") or max(len(gold), len(answer)) > _MATH_CHECK_LIMIT:
        return False
    from ponder.verifiers.math import equivalent

    return equivalent(gold, answer)[0]


def correct(problem: dict[str, Any], answer: str | None) -> bool | None:
    """Whether the answer matches the problem's gold answer; None when there is no gold
    answer to compare with, or the format (code) is judged by tests instead."""
    gold = problem.get("gold")
    answer_format = str(problem.get("format") or "auto")
    if gold is None or answer_format == "code":
        return None
    if answer is None:
        return False
    return _equivalent(str(gold), answer, answer_format)


def tokens(trace: TraceRecord) -> dict[str, int] | None:
    """Prompt, reasoning (hidden) and answer (shown) tokens; None while it runs."""
    usage = trace.usage
    if not usage:
        return None
    completion = int(usage.get("completion_tokens", 0))
    reasoning = int(usage.get("reasoning_tokens", 0))
    return {
        "prompt": int(usage.get("prompt_tokens", 0)),
        "reasoning": reasoning,
        "answer": max(0, completion - reasoning),
    }


def state(trace: TraceRecord) -> dict[str, Any]:
    """The parts of a trace that change while it runs (a live page refreshes these)."""
    return {
        "status": trace.status,
        "answer": trace.answer,
        "correct": None if trace.status == "running" else correct(trace.problem, trace.answer),
        "tokens": tokens(trace),
        "usage": trace.usage,
        "stopped_by": trace.stopped_by,
        "error": trace.error,
        "finished_at": trace.finished_at,
    }


def row(trace: TraceRecord) -> dict[str, Any]:
    usage = trace.usage or {}
    return {
        "id": trace.id,
        "question": trace.question,
        "strategy": trace.strategy,
        "model": trace.model,
        "gold": trace.problem.get("gold"),
        "seconds": usage.get("seconds"),
        "usd": usage.get("usd"),
        "created_at": trace.created_at,
        **state(trace),
    }


def node(record: NodeRecord) -> dict[str, Any]:
    return asdict(record)


def detail(trace: TraceRecord) -> dict[str, Any]:
    return {
        **row(trace),
        "budget": trace.budget,
        "problem": trace.problem,
        "prompts": trace.prompts,
        "nodes": [node(n) for n in trace.nodes],
        "version": max((n.version for n in trace.nodes), default=0),
    }
