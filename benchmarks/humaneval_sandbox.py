"""Check the sandbox harness on HumanEval: all 164 canonical solutions must pass their tests,
and the 164 bare prompts (no body) must fail. Prints counts, wall time and the isolation used.

    PYTHONPATH=src python benchmarks/humaneval_sandbox.py [--concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from ponder.datasets.humaneval import load_humaneval
from ponder.sandbox import set_max_concurrency
from ponder.verifiers import UnitTests


async def run(concurrency: int) -> dict[str, object]:
    set_max_concurrency(concurrency)
    problems = load_humaneval()
    verifier = UnitTests()
    isolation: set[str] = set()

    async def grade(kind: str) -> tuple[list[str], float]:
        start = time.monotonic()
        texts = [p.meta["canonical_solution"] if kind == "solution" else p.question for p in problems]
        verdicts = await asyncio.gather(
            *(verifier.verify(p, t) for p, t in zip(problems, texts, strict=True))
        )
        isolation.update(f"{v.details.get('isolation')} cgroup={v.details.get('cgroup')}" for v in verdicts)
        passed = [p.id or "" for p, v in zip(problems, verdicts, strict=True) if v.passed]
        return passed, time.monotonic() - start

    solved, t_solutions = await grade("solution")
    bare, t_prompts = await grade("prompt")
    return {
        "problems": len(problems),
        "canonical_passed": len(solved),
        "canonical_failed": sorted({p.id or "" for p in problems} - set(solved)),
        "canonical_seconds": round(t_solutions, 2),
        "prompt_only_passed": bare,
        "prompt_only_seconds": round(t_prompts, 2),
        "seconds_per_run": round((t_solutions + t_prompts) * concurrency / (2 * len(problems)), 3),
        "isolation": sorted(isolation),
        "concurrency": concurrency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    result = asyncio.run(run(args.concurrency))
    for key, value in result.items():
        print(f"{key}: {value}")
    ok = result["canonical_passed"] == result["problems"] and not result["prompt_only_passed"]
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
