"""Local executor against the Ray executor (a private loopback cluster, 2 workers), side by
side in one process on the same seeded bench of reasoning-gym `products` with the bundled
model: wall time of each (Ray's includes starting the actors and loading the model in each,
not the cluster start), the ratio, and how many per-problem answers agree.

    PONDER_THREADS=1 python benchmarks/ray_ratio.py --size 24 --strategy direct
    PONDER_THREADS=1 python benchmarks/ray_ratio.py --size 12 --strategy self-consistency:n=4 --concurrency 2
    PONDER_THREADS=1 python benchmarks/ray_ratio.py --size 24 --strategy direct --no-prefix-cache
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ponder.bench import BenchRun, parse_strategies, run_bench
from ponder.datasets import get_dataset
from ponder.engines.spec import EngineSpec
from ponder.executors import Executor, LocalExecutor
from ponder.executors.ray import RayExecutor


def timed(args: argparse.Namespace, out: Path, spec: EngineSpec, executor: Executor) -> tuple[float, Any]:
    source = get_dataset("reasoning-gym:products")
    run = BenchRun(
        dataset=source,
        problems=source.load(args.size, args.seed),
        strategies=parse_strategies(args.strategy),
        out=out,
        seed=args.seed,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency,
    )
    run.prepare()
    started = time.perf_counter()
    rows, errors = asyncio.run(run_bench(run, spec, False, executor=executor))
    assert not errors, errors
    return time.perf_counter() - started, [r for spec_rows in rows.values() for r in spec_rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--strategy", default="direct")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--no-prefix-cache", action="store_true")
    args = parser.parse_args()
    spec = EngineSpec(options={"prefix_cache": 0} if args.no_prefix_cache else {})
    out = Path(tempfile.mkdtemp(prefix="ray_ratio-"))
    local_s, local = timed(args, out / "local", spec, LocalExecutor(args.concurrency))
    with RayExecutor(workers=2, concurrency=args.concurrency).start() as executor:
        ray_s, remote = timed(args, out / "ray", spec, executor)
    answers = {r["id"]: r["answer"] for r in local}
    same = sum(answers[r["id"]] == r["answer"] for r in remote)
    report = {**vars(args), "local_s": round(local_s, 1), "ray_s": round(ray_s, 1)}
    report.update(local_over_ray=round(local_s / ray_s, 2), same_answers=f"{same}/{len(remote)}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
