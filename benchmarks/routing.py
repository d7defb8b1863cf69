"""Don't overthink: `auto` against `direct`, `self-consistency:n=16` and `adaptive-consistency`
on mixed sets where the bundled model finds some items easy and others hard.

Two task families (reasoning-gym `products` and `basic_arithmetic`), each half easy items
(single digits) and half hard ones (more digits, more terms), several seeds, every strategy
run live side by side in one process on one engine. Accuracy has a paired 95% interval
against the better of `direct` and `self-consistency:n=16` (the goal: `auto` within 1 point
of it at no more than 40% of self-consistency's tokens).

`--fit` calibrates `auto` instead: it runs `auto:threshold=inf` (always escalate, so every
question yields both the greedy answer with its confidence signals and the escalated vote)
on the fit seeds, replays the policy "answer at once when signal >= t" exactly for every
signal and threshold, and writes the chosen signal and threshold to
src/ponder/strategies/routing.json with the seeds it saw. Report on other seeds.

    python benchmarks/routing.py --fit --seeds 101 102 --size 20 --out docs/results/routing/fit
    python benchmarks/routing.py --seeds 201 202 --size 20 --out docs/results/routing
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from early_stop import Item, grade, load_items, paired_ci95, think_collecting

from ponder.engines.llamacpp import LlamaCppEngine
from ponder.strategies.auto import CALIBRATION

FAMILIES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "products": [
        ("products", {"min_digits": 1, "max_digits": 1}),
        ("products", {"min_digits": 2, "max_digits": 2}),
    ],
    "arithmetic": [
        ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "max_digits": 1, "operators": ("+", "-")}),
        (
            "basic_arithmetic",
            {
                "min_terms": 3,
                "max_terms": 4,
                "max_digits": 2,
                "operators": ("+", "-", "*"),
                "allow_parentheses": False,
            },
        ),
    ],
}
STRATEGIES = ["direct", "auto", "adaptive-consistency", "self-consistency:n=16"]
SIGNALS = ["mean_logprob", "min_prob", "group_confidence"]
MARGIN = 0.05  # --fit: accuracy points a policy may give up for spending nothing more (see choose())


def mixed_items(seeds: list[int], size: int) -> list[tuple[str, Item]]:
    """`size` items per family and seed, half easy and half hard."""
    items = []
    for seed in seeds:
        for family, (easy, hard) in FAMILIES.items():
            for level, (task, config) in (("easy", easy), ("hard", hard)):
                for item in load_items(task, size // 2, seed, config):
                    item.problem.id = f"{family}/{level}/{seed}/{item.problem.id}"
                    items.append((family, item))
    return items


async def run(
    spec: str, items: list[Item], engine: LlamaCppEngine, max_tokens: int, concurrency: int = 4
) -> list[dict[str, Any]]:
    """Each item's answer, correctness, tokens, seconds, and auto's decisions; `concurrency`
    questions at a time (the engine batches them, as a server would)."""
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(item: Item) -> dict[str, Any]:
        nonlocal done
        async with gate:
            answer, nodes = await think_collecting(item.problem, spec, engine, max_tokens)
        fast = next((n for n in nodes if n.kind == "sample"), None)
        decision = next((n for n in nodes if n.kind == "decision"), None)
        done += 1
        print(f"  {spec}: {done}/{len(items)}", end="\r", file=sys.stderr)
        return {
            "id": item.problem.id,
            "answer": answer.answer,
            "correct": grade(item, answer.answer),
            "tokens": answer.usage.completion_tokens,
            "seconds": answer.usage.seconds,
            "greedy_correct": grade(item, fast.answer) if fast else False,
            "greedy_tokens": fast.completion_tokens if fast else 0,
            "signals": decision.meta.get("signals") if decision else None,
            "escalated": bool(decision and decision.meta.get("choice") != "direct"),
        }

    rows = list(await asyncio.gather(*(one(item) for item in items)))
    print(file=sys.stderr)
    return rows


def policy(rows: list[dict[str, Any]], signal: str, threshold: float) -> tuple[list[bool], int]:
    """Replay "answer at once when signal >= threshold" over always-escalated runs."""
    correct, tokens = [], 0
    for r in rows:
        value = (r["signals"] or {}).get(signal)
        fast = value is not None and r["signals"]["answered"] and value >= threshold
        correct.append(r["greedy_correct"] if fast else r["correct"])
        tokens += r["greedy_tokens"] if fast else r["tokens"]
    return correct, tokens


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The signal and threshold that maximise accuracy - MARGIN * (tokens / always-escalate
    tokens): answering at once must not cost more accuracy than the compute it saves is worth."""
    full = sum(r["tokens"] for r in rows) or 1
    best: dict[str, Any] = {"signal": "mean_logprob", "threshold": math.inf, "objective": -math.inf}
    for signal in SIGNALS:
        values = sorted(
            {r["signals"][signal] for r in rows if r["signals"] and r["signals"].get(signal) is not None}
        )
        for threshold in [*values, math.inf]:
            correct, tokens = policy(rows, signal, threshold)
            accuracy = sum(correct) / len(correct)
            objective = accuracy - MARGIN * tokens / full
            if objective > best["objective"] + 1e-12:
                best = {
                    "signal": signal,
                    "threshold": threshold,
                    "objective": objective,
                    "accuracy": accuracy,
                    "token_share": tokens / full,
                }
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[201, 202])
    parser.add_argument(
        "--size", type=int, default=20, help="items per family and seed (half easy, half hard)"
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--fit", action="store_true", help="calibrate auto on these seeds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = mixed_items(args.seeds, args.size)
    items = [item for _, item in pairs]
    families = [family for family, _ in pairs]
    engine = LlamaCppEngine()
    started = time.time()
    if args.fit:
        rows = asyncio.run(run("auto:threshold=inf", items, engine, args.max_tokens))
        chosen = choose(rows)
        chosen["threshold"] = (
            chosen["threshold"] if math.isfinite(chosen["threshold"]) else None
        )  # null: always vote
        calibration = {
            "signal": chosen["signal"],
            "threshold": chosen["threshold"],
            "fitted_on": {"seeds": args.seeds, "size": args.size, "families": list(FAMILIES)},
            "fit": chosen,
            "command": " ".join(sys.argv),
        }
        CALIBRATION.write_text(json.dumps(calibration, indent=2) + "\n")
        (args.out / "fit.json").write_text(json.dumps({"rows": rows, "chosen": chosen}, indent=2))
        print(json.dumps(chosen, indent=2))
        return
    results = {spec: asyncio.run(run(spec, items, engine, args.max_tokens)) for spec in STRATEGIES}
    table = report(results, families)
    (args.out / "table.txt").write_text(table + f"\ncommand: {' '.join(sys.argv)}\n")
    (args.out / "routing.json").write_text(
        json.dumps(
            {"seeds": args.seeds, "size": args.size, "results": results, "families": families}, indent=2
        )
    )
    plot(results, args.out / "accuracy_vs_tokens.png")
    print(table)
    print(f"{time.time() - started:.0f} s", file=sys.stderr)


def report(results: dict[str, list[dict[str, Any]]], families: list[str]) -> str:
    sc = results["self-consistency:n=16"]
    sc_tokens = sum(r["tokens"] for r in sc) or 1
    direct = results["direct"]
    better = (
        "direct"
        if sum(r["correct"] for r in direct) >= sum(r["correct"] for r in sc)
        else "self-consistency:n=16"
    )
    base = [r["correct"] for r in results[better]]
    lines = [
        f"baseline for the interval: {better} (the better of direct and self-consistency:n=16)",
        f"{'strategy':<24}{'accuracy':>9}{'vs base':>16}{'tokens/q':>10}{'x SC-16':>9}{'s/q':>7}  by family",
    ]
    for spec, rows in results.items():
        correct = [r["correct"] for r in rows]
        acc = sum(correct) / len(correct)
        diff = acc - sum(base) / len(base)
        tokens = sum(r["tokens"] for r in rows)
        seconds = sum(r["seconds"] for r in rows) / len(rows)
        fam = {
            f: [r["correct"] for r, g in zip(rows, families, strict=True) if g == f]
            for f in dict.fromkeys(families)
        }
        by_family = " ".join(f"{f} {100 * sum(c) / len(c):.0f}%" for f, c in fam.items())
        lines.append(
            f"{spec:<24}{100 * acc:>8.1f}%{100 * diff:>+8.1f} ±{paired_ci95(base, correct):>4.1f}"
            f"{tokens / len(rows):>10.0f}{tokens / sc_tokens:>9.2f}{seconds:>7.1f}  {by_family}"
        )
    auto = results["auto"]
    escalated = sum(r["escalated"] for r in auto)
    lines.append(f"auto escalated {escalated} of {len(auto)} questions")
    return "\n".join(lines)


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for spec, rows in results.items():
        tokens = sum(r["tokens"] for r in rows) / len(rows)
        acc = 100 * sum(r["correct"] for r in rows) / len(rows)
        ax.scatter([tokens], [acc], s=60)
        ax.annotate(spec, (tokens, acc), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per question (log)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("auto vs fixed strategies, mixed easy/hard sets")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
