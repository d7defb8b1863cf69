"""`ponder fix` with the bundled model on every seeded-defect repository in tests/fixtures/repos:
how many it fixes, attempts and tokens each, and what became of each reply; side by side for
each form of reply the prompt asks for (`--asks code,diff`). The table goes to docs/results/fix/.

    PONDER_THREADS=1 PYTHONPATH=src python benchmarks/fix_fixtures.py [--attempts 2] [--max-tokens 384]
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


async def run(ask: Ask, attempts: int, max_tokens: int) -> list[tuple[str, bool, str]]:
    engine = default_engine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in NAMES:
            data = fixture(name)
            checks = cast(list[str], data["checks"])
            root = materialize(name, Path(tmp))
            start = time.monotonic()
            report = await afix(
                root, checks, engine=engine, max_attempts=attempts, max_tokens=max_tokens, ask=ask
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
            print(f"[{ask}] {row}", flush=True)
    return rows


async def main(asks: list[Ask], attempts: int, max_tokens: int, out: Path) -> None:
    results = {ask: await run(ask, attempts, max_tokens) for ask in asks}
    command = (
        f"`PONDER_THREADS=1 PYTHONPATH=src python benchmarks/fix_fixtures.py --asks {','.join(asks)} "
        f"--attempts {attempts} --max-tokens {max_tokens}`"
    )
    lines = ["# ponder fix on the seeded-defect fixtures (bundled model)", "", command, ""]
    lines += [
        f"- asked for **{ask}**: fixed (every check passes after the best patch) "
        f"**{sum(f for _, f, _ in rows)} of {len(rows)}**"
        for ask, rows in results.items()
    ]
    for ask, rows in results.items():
        lines += [
            "",
            f"## asked for {ask}",
            "",
            "| repository | checks | fixed | checks fixed | attempts | patches that applied | "
            "completion tokens | seconds | what happened |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
            *(row for _, _, row in rows),
        ]
    text = "\n".join([*lines, ""])
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--asks", default="code,diff", help="forms of reply to ask for, in order")
    parser.add_argument("--attempts", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--out", type=Path, default=Path("docs/results/fix"))
    args = parser.parse_args()
    asks = [cast(Ask, a.strip()) for a in args.asks.split(",") if a.strip()]
    if bad := [a for a in asks if a not in ("code", "diff")]:
        parser.error(f"--asks takes code and diff, not {', '.join(bad)}")
    asyncio.run(main(asks, args.attempts, args.max_tokens, args.out))
