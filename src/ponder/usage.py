"""Where the tokens went: spend over a trace store, grouped by strategy, day or model.

Tokens are the sums of the traces' node tokens (every token a request spends is on one of
its nodes), so the totals hold for traces still running or cut off by a crash. Reasoning
tokens are the generated tokens not shown as the answer (the trace's usage says how many
were shown; a trace that never answered showed none). Seconds and dollars are per trace.

"Reasoning that changed the answer": a trace whose final answer differs from its baseline,
the greedy sample's answer if it drew one, else its first sample's. Its reasoning tokens
bought a different answer; a trace that ends where its first sample began could have
stopped there. The share is of reasoning tokens, not of traces.

One SQL pass over the SQLite store (read-only, its own connection), so a store of
100,000 traces is summed without loading a trace at a time.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

__all__ = ["Group", "Spend", "UsageError", "parse_since", "spend"]

By = Literal["strategy", "day", "model"]
BY: tuple[By, ...] = ("strategy", "day", "model")
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# One row per trace: its node sums and its baseline answer (greedy sample first, else the
# sample written first). Window functions and json_extract are in every SQLite >= 3.25.
_PER_TRACE = """
WITH t AS (
    SELECT id, strategy, model, created_at, finished_at, usage, answer FROM traces WHERE created_at >= ?
),
sums AS (
    SELECT trace_id, SUM(prompt_tokens) AS p, SUM(completion_tokens) AS c,
           MAX(created_at + seconds) AS last
    FROM nodes WHERE trace_id IN (SELECT id FROM t) GROUP BY trace_id
),
base AS (
    SELECT trace_id, answer FROM (
        SELECT trace_id, answer, ROW_NUMBER() OVER (
            PARTITION BY trace_id ORDER BY COALESCE(json_extract(meta, '$.greedy'), 0) DESC, seq
        ) AS rank
        FROM nodes WHERE kind = 'sample' AND trace_id IN (SELECT id FROM t)
    ) WHERE rank = 1
)
SELECT t.strategy, t.model, t.created_at, t.finished_at, t.usage, t.answer,
       COALESCE(sums.p, 0), COALESCE(sums.c, 0), sums.last, base.answer
FROM t LEFT JOIN sums ON sums.trace_id = t.id LEFT JOIN base ON base.trace_id = t.id
"""


class UsageError(ValueError):
    """Bad input to a usage query (a since or by that cannot be read)."""


@dataclass
class Group:
    """Spend of a set of traces. `answer_tokens` = generated tokens shown as answers."""

    key: str
    traces: int = 0
    prompt_tokens: int = 0
    reasoning_tokens: int = 0
    answer_tokens: int = 0
    seconds: float = 0.0
    usd: float = 0.0
    changed_traces: int = 0
    changed_reasoning_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return self.reasoning_tokens + self.answer_tokens

    @property
    def changed_share(self) -> float | None:
        """Share of reasoning tokens spent in traces whose answer moved off the baseline."""
        return self.changed_reasoning_tokens / self.reasoning_tokens if self.reasoning_tokens else None

    def add(self, other: Group) -> None:
        for f in fields(self):
            if f.name != "key":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seconds": round(self.seconds, 3),
            "usd": round(self.usd, 8),
            "completion_tokens": self.completion_tokens,
            "changed_share": self.changed_share,
        }


@dataclass
class Spend:
    since: float | None
    by: By | None
    total: Group
    groups: list[Group] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "by": self.by,
            "total": self.total.to_dict(),
            "groups": [g.to_dict() for g in self.groups],
        }


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """ "7d", "12h", "30m", "2w" -> the epoch second that long ago; None or "" -> all time."""
    if not text:
        return None
    found = _SINCE.match(text)
    if not found:
        raise UsageError(f"since {text!r}: give a number and a unit, e.g. 30m, 12h, 7d or 2w")
    seconds = float(found.group(1)) * _UNIT_SECONDS[found.group(2).lower()]
    return (time.time() if now is None else now) - seconds


def spend(path: str | Path, *, since: float | None = None, by: By | None = None) -> Spend:
    """The spend of the traces created at or after `since` (epoch seconds), in total and,
    with `by`, per strategy name, local day or model (largest spend first, days in order)."""
    if by is not None and by not in BY:
        raise UsageError(f"by {by!r}: choose one of {', '.join(BY)}")
    rows = _rows(Path(path), since)
    total = Group("total")
    groups: dict[str, Group] = {}
    for row in rows:
        one = _trace_spend(row)
        total.add(one)
        if by is not None:
            key = _key(by, row)
            groups.setdefault(key, Group(key)).add(one)
    order = sorted(groups.values(), key=lambda g: g.key if by == "day" else (-g.completion_tokens, g.key))
    return Spend(since=since, by=by, total=total, groups=order)


def _rows(path: Path, since: float | None) -> Iterable[tuple[Any, ...]]:
    if not path.is_file():
        raise UsageError(f"no trace store at {path}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise UsageError(f"cannot open trace store {path}: {exc}") from exc
    try:
        return db.execute(_PER_TRACE, (since if since is not None else float("-inf"),)).fetchall()
    except sqlite3.Error as exc:
        raise UsageError(f"cannot read trace store {path}: {exc}") from exc
    finally:
        db.close()


def _trace_spend(row: tuple[Any, ...]) -> Group:
    _, _, created, finished, usage_json, answer, prompt, completion, last, baseline = row
    usage = json.loads(usage_json) if usage_json else {}
    # Tokens shown as the answer, from the trace's own usage; never more than were generated.
    shown = usage.get("completion_tokens", 0) - usage.get("reasoning_tokens", 0) if usage else 0
    answer_tokens = min(max(0, shown), completion)
    reasoning = completion - answer_tokens
    if "seconds" in usage:
        seconds = float(usage["seconds"])
    else:  # running or cut off: as far as its thoughts got
        seconds = max(0.0, (finished or last or created) - created)
    changed = baseline is not None and answer is not None and baseline.strip() != answer.strip()
    return Group(
        key="",
        traces=1,
        prompt_tokens=prompt,
        reasoning_tokens=reasoning,
        answer_tokens=answer_tokens,
        seconds=seconds,
        usd=float(usage.get("usd") or 0.0),
        changed_traces=int(changed),
        changed_reasoning_tokens=reasoning if changed else 0,
    )


def _key(by: By, row: tuple[Any, ...]) -> str:
    if by == "strategy":
        return str(row[0]).split(":", 1)[0]
    if by == "model":
        return str(row[1])
    return datetime.fromtimestamp(row[2]).strftime("%Y-%m-%d")
