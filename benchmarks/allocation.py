"""One total token budget for a batch: spent where it is needed, or split evenly?

On the mixed easy/hard sets of `routing.py` (two reasoning-gym families, half single-digit
items, half harder ones), every strategy gets the SAME total of generated tokens for the
whole batch, side by side in one run on one engine:

- `auto` allocated (`think_many(..., total_budget=...)`, `ponder.allocate`): a greedy answer
  for every question, what is left to the questions auto is least sure of;
- `self-consistency:n=16` uniform: each question capped at total / N tokens;
- `direct`: one greedy answer each (it cannot use more; its tokens are shown for scale).

Accuracy with paired 95% intervals (against direct, and allocated auto against the even
split at the same total), tokens spent against the total, and how the tokens split between
easy and hard items, at each total given. Use seeds the router was not fitted on
(routing.json: 101, 102) nor reported on (201, 202).

    PONDER_THREADS=1 python benchmarks/allocation.py --seeds 301 302 --size 8 \\
        --per-question 100 200 400 --out docs/results/allocation
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from early_stop import Item, grade, paired_ci95
from routing import mixed_items

from ponder import Budget
from ponder.batch import Outcome, athink_many
from ponder.engines.llamacpp import LlamaCppEngine

ALLOCATED = "auto allocated"
UNIFORM = "SC-16 even split"
DIRECT = "direct"


async def run(
    label: str, items: list[Item], engine: LlamaCppEngine, total: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Every item under one arm of the comparison; a row per item."""
    problems = [item.problem for item in items]
    options: dict[str, Any] = {
        "engine": engine,
        "store": False,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
    }
    started = time.monotonic()
    if label == ALLOCATED:
        outcomes = await athink_many(problems, strategy="auto", total_budget=Budget(tokens=total), **options)
    elif label == UNIFORM:
        each = Budget(tokens=total // len(problems))
        outcomes = await athink_many(problems, strategy="self-consistency:n=16", budget=each, **options)
    else:
        outcomes = await athink_many(problems, strategy="direct", **options)
    print(f"  {label}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return [row(item, outcome) for item, outcome in zip(items, outcomes, strict=True)]


def row(item: Item, outcome: Outcome) -> dict[str, Any]:
    answer = outcome.answer
    return {
        "id": item.problem.id,
        "level": str(item.problem.id).split("/")[1],
        "answer": answer.answer if answer else None,
        "correct": grade(item, answer.answer if answer else None),
        "tokens": outcome.share.spent if outcome.share else answer.usage.completion_tokens if answer else 0,
        "granted": outcome.share.granted if outcome.share else None,
        "escalated": bool(outcome.share and outcome.share.escalated),
        "seconds": answer.usage.seconds if answer else 0.0,
        "error": outcome.error,
    }


def report(results: dict[str, list[dict[str, Any]]], totals: dict[str, int]) -> str:
    """A row per arm: accuracy (paired 95% intervals against direct and, for allocated auto,
    against the even split at the same total), tokens spent against the total, and how they
    split between easy and hard items."""
    direct = [r["correct"] for r in results[DIRECT]]
    n = len(direct)
    lines = [
        f"{n} questions (half easy, half hard); each arm but direct gets the total shown",
        f"{'arm':<30}{'total':>7}{'accuracy':>9}{'vs direct':>15}{'vs even split':>15}{'spent':>7}"
        f"{'/total':>7}{'tok/easy q':>11}{'tok/hard q':>11}{'acc easy':>9}{'acc hard':>9}{'escalated':>10}",
    ]
    for arm, rows in results.items():
        correct = [r["correct"] for r in rows]
        acc = sum(correct) / n
        spent = sum(r["tokens"] for r in rows)
        total = totals.get(arm)
        by = {level: [r for r in rows if r["level"] == level] for level in ("easy", "hard")}
        tok = {k: sum(r["tokens"] for r in v) / max(1, len(v)) for k, v in by.items()}
        accs = {k: 100 * sum(r["correct"] for r in v) / max(1, len(v)) for k, v in by.items()}
        even = results.get(arm.replace(ALLOCATED, UNIFORM)) if arm.startswith(ALLOCATED) else None
        versus = ""
        if even is not None:
            other = [r["correct"] for r in even]
            versus = f"{100 * (acc - sum(other) / n):+.1f} ±{paired_ci95(other, correct):.1f}"
        lines.append(
            f"{arm:<30}{total or '':>7}{100 * acc:>8.1f}%"
            f"{f'{100 * (acc - sum(direct) / n):+.1f} ±{paired_ci95(direct, correct):.1f}':>15}{versus:>15}"
            f"{spent:>7}{f'{spent / total:.2f}' if total else '':>7}{tok['easy']:>11.0f}{tok['hard']:>11.0f}"
            f"{accs['easy']:>8.0f}%{accs['hard']:>8.0f}%{sum(r['escalated'] for r in rows):>10}"
        )
    errors = sum(bool(r["error"]) for rows in results.values() for r in rows)
    lines.append(f"errors: {errors}; 'escalated': questions allocated auto gave a second phase")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--per-question", type=int, nargs="+", default=[200], help="totals, as tokens per question"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[301, 302])
    parser.add_argument(
        "--size", type=int, default=8, help="items per family and seed (half easy, half hard)"
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    items = [item for _, item in mixed_items(args.seeds, args.size)]
    engine = LlamaCppEngine()
    started = time.time()
    arms = [
        (f"{label} @ {each}/q", label, each * len(items))
        for each in args.per_question
        for label in (ALLOCATED, UNIFORM)
    ]
    results = {DIRECT: asyncio.run(run(DIRECT, items, engine, 0, args))}
    totals: dict[str, int] = {}
    for arm, label, total in arms:
        results[arm] = asyncio.run(run(label, items, engine, total, args))
        totals[arm] = total
    table = report(results, totals)
    command = "PONDER_THREADS=1 python " + " ".join(sys.argv)
    (args.out / "table.txt").write_text(f"{table}\ncommand: {command}\n")
    (args.out / "allocation.json").write_text(
        json.dumps({"seeds": args.seeds, "size": args.size, "totals": totals, "results": results}, indent=2)
    )
    print(table)
    print(f"{time.time() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
