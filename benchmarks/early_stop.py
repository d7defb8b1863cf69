"""Early stopping of votes: adaptive-consistency and deepconf against fixed self-consistency.

On a seeded reasoning-gym task where voting helps the bundled model (single-digit
`products`), run side by side in one process, on one engine:

- `direct` (greedy) and `self-consistency:n=16` (the baseline to match),
- `adaptive-consistency` at its defaults (the greedy answer as first vote, gain rule,
  threshold 0.96, rounds of 2),
- `deepconf` online at its defaults (warmup 4, eta 90, gain rule at 0.96, rounds of 2)
  and as in the paper (weighted-share consensus 0.95, rounds of 4),

and report accuracy and generated tokens, plus the accuracy-versus-tokens curves:
self-consistency at n = 1, 2, 4, 8, 16 and adaptive-consistency (gain, predictive and Beta
rules, rounds of 1, 2, 4, several thresholds) are replayed from the self-consistency run's own
samples (adaptive-consistency draws seeds seed, seed+1, ... so its samples are a prefix of
self-consistency's; its greedy first vote is the `direct` run's answer; the replay is exact up
to batched-decoding noise), the other points are live runs. Every row has the paired 95%
interval of its difference from SC-16 (for replays, the noise of the question sample
alone). Saves the table, a PNG plot (matplotlib Agg) and a JSON of every number (each live
run's samples included, so `--replay` can redraw the curves without the model, and pool
several seeds' runs into one table).

    python benchmarks/early_stop.py --size 200 --out /tmp/early_stop
    python benchmarks/early_stop.py --replay /tmp/early_stop/early_stop.json --out /tmp/again
    python benchmarks/early_stop.py --replay seed7/early_stop.json seed13/early_stop.json --out /tmp/pooled
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import reasoning_gym

from ponder import Answer, athink
from ponder.engines.llamacpp import LlamaCppEngine
from ponder.problem import Problem
from ponder.stopping import StopRule
from ponder.store import NodeRecord
from ponder.strategies.adaptive_consistency import AdaptiveConsistency
from ponder.trace import collect
from ponder.vote import tally

SC = "self-consistency:n=16"
LIVE = [
    "direct",
    SC,
    "adaptive-consistency",  # max_n=16, batch=2, rule=gain, threshold=0.96
    "deepconf",  # online: n=16, warmup=4, batch=2, eta=90, stop=gain, consensus=0.96
    "deepconf:batch=4,consensus=0.95,stop=share",  # the paper's online setting
]
REPLAY_N = [1, 2, 4, 8, 16]
REPLAY_THRESHOLDS: dict[StopRule, list[float]] = {
    "gain": [0.9, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99],
    "predictive": [0.6, 0.7, 0.8, 0.9, 0.95, 0.99],
    "beta": [0.6, 0.7, 0.8, 0.9, 0.95, 0.99],
}
REPLAY_BATCHES = [1, 2, 4]


@dataclass
class Item:
    problem: Problem
    entry: dict[str, Any]
    data: Any  # the reasoning-gym dataset: its scorer grades this item


@dataclass
class Outcome:
    answer: str | None
    correct: bool
    tokens: int
    prompt_tokens: int
    seconds: float
    samples: list[tuple[int, str | None, int]] = field(default_factory=list)  # (index, answer, tokens)


def load_items(task: str, size: int, seed: int, config: dict[str, Any]) -> list[Item]:
    data = reasoning_gym.create_dataset(task, size=size, seed=seed, **config)
    return [
        Item(Problem(e["question"], format="number", gold=str(e["answer"]), id=f"{seed}/{i}"), e, data)
        for i, e in enumerate(data)
    ]


def grade(item: Item, answer: str | None) -> bool:
    if answer is None:
        return False
    try:
        return float(item.data.score_answer(answer, item.entry)) >= 1.0
    except Exception:  # a scorer choking on model output is a wrong answer
        return False


async def think_collecting(
    problem: Problem, spec: str, engine: LlamaCppEngine, max_tokens: int, seed: int = 0
) -> tuple[Answer, list[NodeRecord]]:
    """One unstored run and every node it wrote, each once (the benchmarks read samples and
    decisions off the nodes)."""
    nodes: list[NodeRecord] = []
    answer = await athink(
        problem,
        strategy=spec,
        engine=engine,
        store=False,
        on_node=collect(nodes),
        seed=seed,
        max_tokens=max_tokens,
    )
    return answer, nodes


async def run_live(
    spec: str, items: list[Item], engine: LlamaCppEngine, args: argparse.Namespace
) -> list[Outcome]:
    gate = asyncio.Semaphore(args.concurrency)

    async def one(item: Item) -> Outcome:
        async with gate:
            answer, nodes = await think_collecting(item.problem, spec, engine, args.max_tokens, args.seed)
            samples = [
                (n.meta["index"], n.answer if voted(n) else None, n.completion_tokens)
                for n in in_sample_order(nodes)
            ]
            return Outcome(
                answer.answer,
                grade(item, answer.answer),
                answer.usage.completion_tokens,
                answer.usage.prompt_tokens,
                answer.usage.seconds,
                samples,
            )

    return list(await asyncio.gather(*(one(item) for item in items)))


def in_sample_order(nodes: list[NodeRecord]) -> list[NodeRecord]:
    """Sample nodes in the order the strategy drew them (by round, then sample index), not in
    the order they finished: short samples finish first, and a prefix of the finishing order
    would be a prefix of the shortest."""
    rounds: dict[str | None, int] = {}
    samples = [n for n in nodes if n.kind == "sample"]
    for n in samples:
        rounds.setdefault(n.parent_id, len(rounds))
    return sorted(samples, key=lambda n: (rounds[n.parent_id], n.meta["index"]))


def voted(node: NodeRecord) -> bool:
    """Whether a sample's answer counts in a vote (the budget did not cut it short)."""
    return node.meta.get("finish_reason") in ("stop", "length")


Pool = list[list[tuple[int, str | None, int]]]  # per question: (index, answer, tokens) per sample


def replay_sc(pool: Pool, items: list[Item], n: int) -> tuple[list[bool], float]:
    """Self-consistency with the first n of the recorded 16 samples: (correct per question,
    tokens/question)."""
    correct, tokens = [], 0
    for item, samples in zip(items, pool, strict=True):
        used = samples[:n]
        correct.append(grade(item, tally(a for _, a, _ in used).winner))
        tokens += sum(t for _, _, t in used)
    return correct, tokens / len(items)


def replay_ac(
    pool: Pool, items: list[Item], strategy: AdaptiveConsistency, greedy: Pool | None = None
) -> tuple[list[bool], float, float]:
    """Adaptive-consistency's stopping rule over the recorded samples (after the `direct`
    run's greedy answer, when the strategy votes it first): (correct per question,
    tokens/question, samples/question)."""
    if strategy.greedy and greedy is None:
        raise ValueError("a greedy-first replay needs the live `direct` run")
    correct, tokens, drawn = [], 0, 0
    for q, (item, samples) in enumerate(zip(items, pool, strict=True)):
        if greedy is not None and strategy.greedy:
            samples = (greedy[q] + samples)[: strategy.max_n]
        used = samples[: strategy.batch]
        while len(used) < len(samples):
            stop, _ = strategy.settled(tally(a for _, a, _ in used), strategy.max_n - len(used))
            if stop:
                break
            used = samples[: len(used) + strategy.batch]
        correct.append(grade(item, tally(a for _, a, _ in used).winner))
        tokens += sum(t for _, _, t in used)
        drawn += len(used)
    n = len(items)
    return correct, tokens / n, drawn / n


def paired_ci95(base: list[bool], other: list[bool]) -> float:
    """Half-width, in points, of the 95% interval of the accuracy difference between two
    strategies on the same questions (paired: only questions where one is right and the other
    wrong count). Replays share their samples, so this is the noise of the question sample
    alone; live samples also differ from run to run (batched decoding is not bit-exact), so
    even two live runs of one strategy differ by about a live row's interval."""
    n = len(base)
    diffs = [int(o) - int(b) for b, o in zip(base, other, strict=True)]
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / max(1, n - 1)
    return 100 * 1.96 * (var / n) ** 0.5


def load_runs(
    paths: list[Path],
) -> tuple[dict[str, Any], list[Item], dict[str, list[Outcome]], dict[str, float]]:
    """Earlier runs' JSON, pooled: one task and config, their questions (each run's seeds)
    one after another; the live strategies all runs have."""
    runs = [json.loads(p.read_text()) for p in paths]
    head = runs[0]
    if any(
        (r["task"], r["config"], r["max_tokens"]) != (head["task"], head["config"], head["max_tokens"])
        for r in runs
    ):
        raise SystemExit("--replay: the runs must share task, config and max_tokens")
    parts = [part for r in runs for part in r.get("parts") or [{"seed": r["seed"], "size": r["size"]}]]
    items = [
        i for part in parts for i in load_items(head["task"], part["size"], part["seed"], head["config"])
    ]
    specs = [s for s in head["outcomes"] if all(s in r["outcomes"] for r in runs)]
    live = {
        spec: [
            Outcome(**{**o, "samples": [tuple(x) for x in o["samples"]]})
            for r in runs
            for o in r["outcomes"][spec]
        ]
        for spec in specs
    }
    wall = {
        spec: sum(next(row["seconds"] for row in r["rows"] if row["strategy"] == spec) for r in runs)
        for spec in specs
    }
    meta = {"task": head["task"], "config": head["config"], "max_tokens": head["max_tokens"], "parts": parts}
    return meta, items, live, wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="products")
    parser.add_argument(
        "--config", default='{"min_digits": 1, "max_digits": 1}', help="reasoning-gym config (JSON)"
    )
    parser.add_argument("--size", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7, help="dataset and sampling seed")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument(
        "--concurrency", type=int, default=4, help="questions in flight (the engine batches them)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="llama.cpp threads (1 is fastest on a busy CPU)"
    )
    parser.add_argument("--strategies", default=";".join(LIVE), help="';'-separated live specs")
    parser.add_argument("--out", type=Path, default=Path("early_stop_out"))
    parser.add_argument(
        "--replay",
        type=Path,
        nargs="+",
        help="earlier runs' early_stop.json: reuse their live rows and samples, run nothing; "
        "several runs (other seeds) are pooled into one table",
    )
    parser.add_argument(
        "--extend",
        type=Path,
        help="an earlier run's early_stop.json: run the --strategies it lacks on its questions "
        "(same seed, max_tokens) and add them to its table",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    live: dict[str, list[Outcome]] = {}
    wall: dict[str, float] = {}
    asked = [s.strip() for s in args.strategies.split(";") if s.strip()]
    if args.replay or args.extend:
        meta, items, live, wall = load_runs(args.replay or [args.extend])
        if args.extend and len(meta["parts"]) != 1:
            raise SystemExit("--extend takes a run of one seed")
        args.seed, args.max_tokens = meta["parts"][0]["seed"], meta["max_tokens"]
        to_run = [s for s in asked if s not in live] if args.extend else []
        specs = list(live) + to_run
    else:
        config = json.loads(args.config)
        meta = {
            "task": args.task,
            "config": config,
            "max_tokens": args.max_tokens,
            "parts": [{"seed": args.seed, "size": args.size}],
        }
        items = load_items(args.task, args.size, args.seed, config)
        specs = to_run = asked if SC in asked else [SC, *asked]
    seeds = ", ".join(str(p["seed"]) for p in meta["parts"])
    title = f"{meta['task']} {json.dumps(meta['config'])}: {len(items)} questions, seed {seeds}"
    print(f"{title}, max_tokens {meta['max_tokens']}", flush=True)

    if to_run:

        async def run_all() -> None:
            engine = LlamaCppEngine(n_threads=args.threads, max_batch=32)
            for spec in to_run:
                start = time.monotonic()
                live[spec] = await run_live(spec, items, engine, args)
                wall[spec] = time.monotonic() - start
                acc = sum(o.correct for o in live[spec]) / len(items)
                toks = sum(o.tokens for o in live[spec])
                print(f"  ran {spec:40s} acc {acc:6.1%}  tokens {toks:7d}  {wall[spec]:6.0f}s", flush=True)
            await engine.aclose()

        asyncio.run(run_all())

    n = len(items)
    base = [o.correct for o in live[SC]]
    base_tokens = sum(o.tokens for o in live[SC])

    def row(
        spec: str, kind: str, correct: list[bool], tpq: float, spq: float, **extra: Any
    ) -> dict[str, Any]:
        acc = sum(correct) / n
        return {
            "strategy": spec,
            "kind": kind,
            "accuracy": acc,
            "tokens": tpq * n,
            "tokens_per_q": tpq,
            "samples_per_q": spq,
            "token_ratio": tpq * n / base_tokens,
            "acc_delta_pts": 100 * (acc - sum(base) / n),
            "ci95_pts": paired_ci95(base, correct),
            **extra,
        }

    rows = []
    for spec in specs:
        outs = live[spec]
        rows.append(
            row(
                spec,
                "live",
                [o.correct for o in outs],
                sum(o.tokens for o in outs) / n,
                sum(len(o.samples) for o in outs) / n,
                prompt_tokens=sum(o.prompt_tokens for o in outs),
                seconds=wall[spec],
            )
        )
    pool: Pool = [o.samples for o in live[SC]]
    for k in REPLAY_N:
        correct, tpq = replay_sc(pool, items, k)
        rows.append(
            row(f"self-consistency:n={k}", "replay", correct, tpq, k, curve="self-consistency n=1..16")
        )
    # the greedy answer as the first vote (the default) replays from the live `direct` run
    greedy: Pool | None = [[(0, o.answer, o.tokens)] for o in live["direct"]] if "direct" in live else None
    first = "greedy first" if greedy else "no greedy vote"
    for rule, thresholds in REPLAY_THRESHOLDS.items():
        for batch in REPLAY_BATCHES:
            for thr in thresholds:
                ac = AdaptiveConsistency(max_n=16, batch=batch, threshold=thr, rule=rule, greedy=bool(greedy))
                curve = f"adaptive-consistency rule={rule}, batch={batch}, {first}"
                rows.append(row(ac.spec(), "replay", *replay_ac(pool, items, ac, greedy), curve=curve))
    if greedy:
        for thr in REPLAY_THRESHOLDS["gain"]:
            ac = AdaptiveConsistency(max_n=16, threshold=thr, greedy=False)
            curve = "adaptive-consistency rule=gain, batch=2, no greedy vote"
            rows.append(row(ac.spec(), "replay", *replay_ac(pool, items, ac), curve=curve))
    for batch in REPLAY_BATCHES:
        ac = AdaptiveConsistency(max_n=16, batch=batch, rule="lead", greedy=bool(greedy))
        rows.append(row(ac.spec(), "replay", *replay_ac(pool, items, ac, greedy)))

    table = [
        "{:48s} {:6s} {:>6s} {:>6s} {:>5s} {:>8s} {:>7s} {:>6s} {:>6s}  goal".format(
            "strategy", "run", "acc", "Δpts", "±95%", "tokens", "tok/q", "×SC16", "samp/q"
        )
    ]
    for r in rows:
        goal = r["acc_delta_pts"] >= -2 and r["token_ratio"] <= 0.5
        table.append(
            f"{r['strategy']:48s} {r['kind']:6s} {r['accuracy']:6.1%} {r['acc_delta_pts']:+6.1f} "
            f"{r['ci95_pts']:5.1f} {r['tokens']:8.0f} {r['tokens_per_q']:7.1f} {r['token_ratio']:6.2f} "
            f"{r['samples_per_q']:6.2f}  {'✓' if goal else ''}"
        )
    print("\n" + "\n".join(table))
    (args.out / "table.txt").write_text(
        f"{title}, max_tokens {meta['max_tokens']}\n" + "\n".join(table) + "\n"
    )
    (args.out / "early_stop.json").write_text(
        json.dumps(
            {
                **meta,
                "size": n,
                "seed": meta["parts"][0]["seed"] if len(meta["parts"]) == 1 else None,
                "rows": rows,
                "outcomes": {s: [asdict(o) for o in outs] for s, outs in live.items()},
            },
            indent=1,
        )
    )
    plot(rows, args.out / "early_stop.png", title)
    print(f"\nwrote {args.out / 'early_stop.json'}, table.txt and early_stop.png")


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    curves: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("curve"):
            curves.setdefault(r["curve"], []).append(r)
    for name, points in curves.items():
        if "batch=4" in name or "batch=1" in name:
            continue  # rounds of 1 and 4 are in the JSON and the table; the plot shows rounds of 2
        points = sorted(points, key=lambda r: r["tokens_per_q"])
        ax.plot(
            [r["tokens_per_q"] for r in points],
            [100 * r["accuracy"] for r in points],
            "o-" if name.startswith("self") else "s--",
            markersize=4,
            label=f"{name} (replay)",
        )
    for r in rows:
        if r["kind"] == "live":
            ax.plot(
                r["tokens_per_q"], 100 * r["accuracy"], "*", markersize=12, label=f"{r['strategy']} (live)"
            )
    ax.set_xlabel("generated tokens per question")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
