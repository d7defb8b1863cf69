"""`ponder fix` with the bundled model on every seeded-defect repository in tests/fixtures/repos:
how many it fixes, attempts and tokens each, and what became of each reply; side by side for
each form of reply the prompt asks for (`--asks code,diff`), over several sampling seeds
(`--seeds 0,1,2`: the second attempt samples, so one run is a noisy count). The table goes
to docs/results/fix/.

    PONDER_THREADS=1 PYTHONPATH=src python benchmarks/fix_fixtures.py [--seeds 0,1,2] [--attempts 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ponder.code.fix import Ask, Attempt, afix
from ponder.think import default_engine
from test_fix import NAMES, fixture, materialize


def happened(a: Attempt) -> str:
    """One attempt in a few words: how its reply was read and what the checks said."""
    if a.error:
        return "no patch: " + a.error.splitlines()[0][:110].replace("|", "/")
    verdict = "adopted" if a.adopted else ("breaks " + ", ".join(a.broken) if a.broken else "no progress")
    return f"{a.how}: {sum(r.passed for r in a.runs)}/{len(a.runs)} pass, {verdict}".replace("|", "/")


async def run(ask: Ask, seed: int, attempts: int, max_tokens: int) -> list[tuple[str, bool, str]]:
    """Every fixture once: (name, fixed, its table row)."""
    engine = default_engine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in NAMES:
            data = fixture(name)
            checks = cast(list[str], data["checks"])
            root = materialize(name, Path(tmp))
            start = time.monotonic()
            report = await afix(
                root, checks, engine=engine, max_attempts=attempts, max_tokens=max_tokens, ask=ask, seed=seed
            )
            applied = sum(a.error is None for a in report.attempts)
            fixed = not report.still_failing
            what = "<br>".join(f"{a.index}. {happened(a)}" for a in report.attempts)
            row = (
                f"| {name} | {', '.join(checks)} | {'yes' if fixed else 'no'} | "
                f"{len(report.fixed)}/{len(report.checks)} | {len(report.attempts)} | {applied} | "
                f"{report.usage['completion_tokens']} | {time.monotonic() - start:.0f} | {what} |"
            )
            rows.append((name, fixed, row))
            print(f"[{ask} seed {seed}] {row}", flush=True)
    return rows


async def main(asks: list[Ask], seeds: list[int], attempts: int, max_tokens: int, out: Path) -> None:
    results = {(ask, seed): await run(ask, seed, attempts, max_tokens) for seed in seeds for ask in asks}
    command = (
        f"`PONDER_THREADS=1 PYTHONPATH=src python benchmarks/fix_fixtures.py --asks {','.join(asks)} "
        f"--seeds {','.join(map(str, seeds))} --attempts {attempts} --max-tokens {max_tokens}`"
    )
    lines = ["# ponder fix on the seeded-defect fixtures (bundled model)", "", command, ""]
    for ask in asks:
        counts = [sum(f for _, f, _ in results[ask, seed]) for seed in seeds]
        lines.append(
            f"- asked for **{ask}**: fixed (every check passes after the best patch) "
            + ", ".join(f"**{c} of {len(NAMES)}** (seed {s})" for c, s in zip(counts, seeds, strict=True))
            + f"; mean {sum(counts) / len(counts):.1f}"
        )
    lines += ["", f"Fixed in how many of the {len(seeds)} seeds:", ""]
    lines += ["| repository | " + " | ".join(asks) + " |", "|---|" + "---:|" * len(asks)]
    for i, name in enumerate(NAMES):
        counts = [str(sum(results[a, s][i][1] for s in seeds)) for a in asks]
        lines.append(f"| {name} | " + " | ".join(counts) + " |")
    for ask in asks:
        lines += [
            "",
            f"## asked for {ask}, seed {seeds[0]}: what happened",
            "",
            "| repository | checks | fixed | checks fixed | attempts | patches that applied | "
            "completion tokens | seconds | what happened |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
            *(row for _, _, row in results[ask, seeds[0]]),
        ]
    text = "\n".join([*lines, ""])
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--asks", default="code,diff", help="forms of reply to ask for, in order")
    parser.add_argument("--seeds", default="0", help="sampling seeds, each a full run: 0,1,2")
    parser.add_argument("--attempts", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--out", type=Path, default=Path("docs/results/fix"))
    args = parser.parse_args()
    asks = [cast(Ask, a.strip()) for a in args.asks.split(",") if a.strip()]
    if bad := [a for a in asks if a not in ("code", "diff")]:
        parser.error(f"--asks takes code and diff, not {', '.join(bad)}")
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--seeds takes integers separated by commas, not {args.seeds!r}")
    if not asks or not seeds:
        parser.error("--asks and --seeds need at least one value each")
    asyncio.run(main(asks, seeds, args.attempts, args.max_tokens, args.out))
