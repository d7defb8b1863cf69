"""`ponder fix` with the bundled model on every seeded-defect repository in tests/fixtures/repos:
how many it fixes, attempts and tokens each; the table goes to docs/results/fix/.

    PONDER_THREADS=1 PYTHONPATH=src python benchmarks/fix_fixtures.py [--attempts 2] [--max-tokens 384]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ponder.code.fix import afix
from ponder.think import default_engine
from test_fix import NAMES, fixture, materialize


async def main(attempts: int, max_tokens: int, out: Path) -> None:
    engine = default_engine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in NAMES:
            data = fixture(name)
            root = materialize(name, Path(tmp))
            start = time.monotonic()
            report = await afix(
                root, data["checks"], engine=engine, max_attempts=attempts, max_tokens=max_tokens
            )  # type: ignore[arg-type]
            applied = sum(a.error is None for a in report.attempts)
            rows.append(
                f"| {name} | {', '.join(data['checks'])} | {'yes' if not report.still_failing else 'no'} | "  # type: ignore[arg-type]
                f"{len(report.fixed)}/{len(report.checks)} | {len(report.attempts)} | {applied} | "
                f"{report.usage['completion_tokens']} | {time.monotonic() - start:.0f} |"
            )
            print(rows[-1], flush=True)
    fixed = sum("| yes |" in r for r in rows)
    text = "\n".join(
        [
            "# ponder fix on the seeded-defect fixtures (bundled model)",
            "",
            f"`PONDER_THREADS=1 PYTHONPATH=src python benchmarks/fix_fixtures.py --attempts {attempts} "
            f"--max-tokens {max_tokens}`",
            "",
            f"Fixed (every check passes after the best patch): **{fixed} of {len(rows)}**.",
            "",
            "| repository | checks | fixed | checks fixed | attempts | patches that applied | "
            "completion tokens | seconds |",
            "|---|---|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--attempts", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--out", type=Path, default=Path("docs/results/fix"))
    args = parser.parse_args()
    asyncio.run(main(args.attempts, args.max_tokens, args.out))
