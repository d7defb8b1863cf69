"""Don't overthink: `auto` against `direct`, `self-consistency:n=16` and `adaptive-consistency`
on mixed sets where the bundled model finds some items easy and others hard.

Two task families (reasoning-gym `products` and `basic_arithmetic`), each half easy items
(single digits) and half hard ones (more digits, more terms), several seeds, every strategy
run live side by side in one process on one engine. Accuracy has a paired 95% interval
against the better of `direct` and `self-consistency:n=16` (the goal: `auto` within 1 point
of it at no more than 40% of self-consistency's tokens).

`--fit` calibrates `auto` instead. On the fit seeds it runs the greedy answer with its
confidence signals (`auto:max_n=1`) and `self-consistency:n=16` (whose samples, seeds 0, 1,
..., are the ones auto's vote would draw), then replays auto exactly for every policy in a
grid: which signal and threshold answer at once, and how the vote stops (rule, threshold,
giving up on scattered answers). It keeps the policy with the best accuracy - MARGIN x
(tokens / SC-16's tokens) among those spending at most CAP of SC-16's tokens, prints a
two-fold cross-check (fit on one seed, score on the other: what the fit is worth on
questions it did not see), and writes the policy to src/ponder/strategies/routing.json with
the seeds it saw. `--refit FIT.json` re-chooses from a saved fit run without the model.
Report on other seeds.

    python benchmarks/routing.py --fit --seeds 101 102 --size 24 --out docs/results/routing/fit
    python benchmarks/routing.py --seeds 203 204 --size 28 --out docs/results/routing/seeds-203-204
    python benchmarks/routing.py --pool docs/results/routing/seeds-* --out docs/results/routing
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
from early_stop import Item, grade, in_sample_order, load_items, paired_ci95, think_collecting, voted

from ponder.engines.llamacpp import LlamaCppEngine
from ponder.stopping import StopRule
from ponder.strategies.adaptive_consistency import AdaptiveConsistency
from ponder.strategies.auto import CALIBRATION
from ponder.vote import tally

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
            "greedy_answer": fast.answer if fast and voted(fast) else None,
            "signals": decision.meta.get("signals") if decision else None,
            "escalated": bool(decision and decision.meta.get("choice") != "direct"),
        }

    rows = list(await asyncio.gather(*(one(item) for item in items)))
    print(file=sys.stderr)
    return rows


VOTES: list[tuple[StopRule, float]] = [
    ("gain", 0.9),
    ("gain", 0.93),
    ("gain", 0.96),
    ("gain", 0.98),
    ("beta", 0.8),
    ("beta", 0.9),
    ("beta", 0.95),
    ("predictive", 0.8),
    ("predictive", 0.9),
    ("predictive", 0.95),
]
GIVE_UP = [0, 3, 5, 7]
CAP = 0.35  # --fit: most of SC-16's tokens a policy may spend (the goal allows 0.40)


async def record(items: list[Item], engine: LlamaCppEngine, max_tokens: int) -> list[dict[str, Any]]:
    """Per question: the greedy answer with its signals, and SC-16's samples in drawing order
    (answer - None when the sample does not vote - and tokens): all a replay of auto needs."""
    fast = await run("auto:max_n=1,threshold=inf", items, engine, max_tokens)
    gate = asyncio.Semaphore(4)

    async def samples(item: Item) -> list[tuple[str | None, int]]:
        async with gate:
            _, nodes = await think_collecting(item.problem, "self-consistency:n=16", engine, max_tokens)
        return [(n.answer if voted(n) else None, n.completion_tokens) for n in in_sample_order(nodes)]

    drawn = await asyncio.gather(*(samples(item) for item in items))
    return [{**row, "samples": s} for row, s in zip(fast, drawn, strict=True)]


def replay(row: dict[str, Any], item: Item, policy: dict[str, Any]) -> tuple[bool, int]:
    """Auto under `policy` on one recorded question, step for step as Auto.run draws:
    (correct, generated tokens)."""
    seen = row["signals"] or {}
    value = seen.get(policy["signal"])
    if value is not None and seen.get("answered") and value >= policy["threshold"]:
        return row["greedy_correct"], row["greedy_tokens"]
    vote = AdaptiveConsistency(
        rule=policy["rule"], threshold=policy["stop_threshold"], give_up=policy["give_up"]
    )
    used = [(row["greedy_answer"], row["greedy_tokens"]), *row["samples"]][: vote.max_n]
    n = 1
    while n < len(used):
        n = min(n + vote.batch, len(used))
        if vote.settled(tally(a for a, _ in used[:n]), vote.max_n - n)[0]:
            break
    return grade(item, tally(a for a, _ in used[:n]).winner), sum(t for _, t in used[:n])


def policies(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grid: each signal at every 5th percentile of its fitted values (plus never and
    always answering at once) x each way the vote stops."""
    grid = []
    for signal in SIGNALS:
        values = sorted(
            r["signals"][signal] for r in rows if r["signals"] and r["signals"].get(signal) is not None
        )
        cuts = sorted({values[int(q * (len(values) - 1) / 20)] for q in range(21)} if values else set())
        for threshold in [-math.inf, *cuts, math.inf]:
            for rule, stop in VOTES:
                for give_up in GIVE_UP:
                    grid.append(
                        {
                            "signal": signal,
                            "threshold": threshold,
                            "rule": rule,
                            "stop_threshold": stop,
                            "give_up": give_up,
                        }
                    )
    return grid


def score(rows: list[dict[str, Any]], items: list[Item], policy: dict[str, Any]) -> dict[str, Any]:
    outcomes = [replay(r, i, policy) for r, i in zip(rows, items, strict=True)]
    sc = sum(sum(t for _, t in r["samples"]) for r in rows) or 1
    return {
        **policy,
        "accuracy": sum(c for c, _ in outcomes) / len(outcomes),
        "token_share": sum(t for _, t in outcomes) / sc,
    }


def choose(rows: list[dict[str, Any]], items: list[Item]) -> dict[str, Any]:
    """The policy with the best accuracy - MARGIN x token share among those within CAP (ties:
    fewer tokens): answering at once must not cost more accuracy than the compute it saves is
    worth."""
    scored = [score(rows, items, p) for p in policies(rows)]
    within = [s for s in scored if s["token_share"] <= CAP] or scored
    return max(within, key=lambda s: (s["accuracy"] - MARGIN * s["token_share"], -s["token_share"]))


def sc16(rows: list[dict[str, Any]], items: list[Item]) -> float:
    return sum(
        grade(i, tally(a for a, _ in r["samples"]).winner) for r, i in zip(rows, items, strict=True)
    ) / len(rows)


def fit(rows: list[dict[str, Any]], items: list[Item], seeds: list[int]) -> dict[str, Any]:
    """Choose on all fit seeds; cross-check by fitting on each seed and scoring on the others."""
    chosen = choose(rows, items)
    folds = []
    for seed in seeds:
        inside = [k for k, r in enumerate(rows) if f"/{seed}/" in r["id"]]
        outside = [k for k in range(len(rows)) if k not in inside]
        if not inside or not outside:
            continue
        picked = choose([rows[k] for k in inside], [items[k] for k in inside])
        held = [rows[k] for k in outside], [items[k] for k in outside]
        folds.append(
            {
                "fitted_on": seed,
                "held_out": _finite(
                    score(
                        *held,
                        {k: picked[k] for k in ("signal", "threshold", "rule", "stop_threshold", "give_up")},
                    )
                ),
                "direct": sum(r["greedy_correct"] for r in held[0]) / len(held[0]),
                "self-consistency:n=16": sc16(*held),
            }
        )
    return {
        "chosen": chosen,
        "direct": sum(r["greedy_correct"] for r in rows) / len(rows),
        "self-consistency:n=16": sc16(rows, items),
        "cross_check": folds,
    }


def write_calibration(result: dict[str, Any], seeds: list[int], size: int, command: str) -> None:
    chosen = result["chosen"]
    threshold = chosen["threshold"]
    calibration = {
        "signal": chosen["signal"],
        # null: always vote; -1e9: always answer at once
        "threshold": None if threshold == math.inf else max(threshold, -1e9),
        "rule": chosen["rule"],
        "stop_threshold": chosen["stop_threshold"],
        "give_up": chosen["give_up"],
        "fitted_on": {"seeds": seeds, "size": size, "families": list(FAMILIES)},
        "fit": {k: v for k, v in result.items() if k != "chosen"} | {"chosen": _finite(chosen)},
        "command": command,
    }
    CALIBRATION.write_text(json.dumps(calibration, indent=2) + "\n")


def _finite(policy: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe: an infinite threshold as the text "inf" or "-inf"."""
    return {k: (str(v) if isinstance(v, float) and math.isinf(v) else v) for k, v in policy.items()}


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
    parser.add_argument(
        "--pool", type=Path, nargs="+", help="report runs' out dirs: one table and plot over all (no model)"
    )
    parser.add_argument("--refit", type=Path, help="re-choose the policy from a saved fit.json (no model)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/routing"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = mixed_items(args.seeds, args.size)
    items = [item for _, item in pairs]
    families = [family for family, _ in pairs]
    started = time.time()
    if args.pool:
        results, families, seeds = pool(args.pool)
        table = report(results, families)
        (args.out / "table.txt").write_text(table + f"\ncommand: {' '.join(sys.argv)} (seeds {seeds})\n")
        plot(results, args.out / "accuracy_vs_tokens.png")
        print(table)
        return
    if args.refit:
        saved = json.loads(args.refit.read_text())
        args.seeds, args.size = saved["seeds"], saved["size"]
        items = [item for _, item in mixed_items(args.seeds, args.size)]
        result = fit(saved["rows"], items, args.seeds)
        write_calibration(
            result, args.seeds, args.size, saved["command"] + f" (re-chosen: --refit {args.refit})"
        )
        print(json.dumps(_finite(result["chosen"]), indent=2), json.dumps(result["cross_check"], indent=2))
        return
    engine = LlamaCppEngine()
    if args.fit:
        rows = asyncio.run(record(items, engine, args.max_tokens))
        result = fit(rows, items, args.seeds)
        command = " ".join(sys.argv)
        write_calibration(result, args.seeds, args.size, command)
        (args.out / "fit.json").write_text(
            json.dumps({"seeds": args.seeds, "size": args.size, "command": command, "rows": rows}, indent=2)
        )
        print(json.dumps(_finite(result["chosen"]), indent=2), json.dumps(result["cross_check"], indent=2))
        print(f"{time.time() - started:.0f} s", file=sys.stderr)
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
    gap = 100 * (sum(r["correct"] for r in auto) - sum(base)) / len(base)
    share = sum(r["tokens"] for r in auto) / sc_tokens
    met = gap >= -1.0 and share <= 0.40
    lines.append(
        f"goal (auto within 1 point of {better}, at most 0.40x SC-16's tokens): "
        f"{'met' if met else 'NOT met'}: {gap:+.1f} points at {share:.2f}x"
    )
    return "\n".join(lines)


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Accuracy (with its 95% interval) against tokens per question, one point per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for spec, rows in results.items():
        n = len(rows)
        tokens = sum(r["tokens"] for r in rows) / n
        acc = sum(r["correct"] for r in rows) / n
        half = 100 * 1.96 * (acc * (1 - acc) / n) ** 0.5
        ax.errorbar([tokens], [100 * acc], yerr=[half], fmt="o", ms=7, capsize=4)
        ax.annotate(spec, (tokens, 100 * acc), textcoords="offset points", xytext=(7, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("generated tokens per question (log)")
    ax.set_ylabel("accuracy (%), 95% interval")
    n = len(next(iter(results.values())))
    ax.set_title(f"auto vs fixed strategies: {n} mixed easy/hard questions", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def pool(dirs: list[Path]) -> tuple[dict[str, list[dict[str, Any]]], list[str], list[int]]:
    """Several report runs' routing.json as one: their questions one after another."""
    runs = [json.loads((d / "routing.json").read_text()) for d in dirs]
    results = {spec: [row for run in runs for row in run["results"][spec]] for spec in STRATEGIES}
    return results, [f for run in runs for f in run["families"]], [s for run in runs for s in run["seeds"]]


if __name__ == "__main__":
    main()
