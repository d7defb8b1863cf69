"""Load on `ponder serve`: N concurrent short chat requests from the official `openai` client
against a real `ponder serve` process on loopback (embedded bundled model, or --upstream).

Bounded: exactly N requests, each with a client timeout, the whole run with a deadline.
Prints the latency percentiles of the successful requests, how many were refused with the
documented 429 (past --max-concurrent + --queue), any other error (there should be none),
the server's peak resident memory (VmHWM) and its throughput.

    PONDER_THREADS=1 PYTHONPATH=src python benchmarks/server_load.py --requests 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import openai

SRC = str(Path(__file__).resolve().parent.parent / "src")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one(client: openai.AsyncOpenAI, i: int, model: str, max_tokens: int) -> tuple[str, float]:
    started = time.monotonic()
    try:
        reply = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"What is {i} + {i % 7}?"}],
            max_tokens=max_tokens,
            seed=i,
        )
        outcome = "ok" if reply.choices[0].message.content is not None else "empty"
    except openai.RateLimitError:
        outcome = "429"
    except openai.APIError as exc:
        outcome = f"error: {type(exc).__name__}: {str(exc)[:120]}"
    return outcome, time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def load(base_url: str, args: argparse.Namespace) -> tuple[list[tuple[str, float]], float]:
    client = openai.AsyncOpenAI(
        base_url=base_url + "/v1", api_key="bench", max_retries=0, timeout=args.timeout
    )
    started = time.monotonic()
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(one(client, i, args.model, args.max_tokens) for i in range(args.requests))),
            args.deadline,
        )
    finally:
        await client.close()
    return list(results), time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--model", default="direct/ponder", help="model name (strategy in it)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-concurrent", type=int, default=16)
    parser.add_argument("--queue", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=300.0, help="per request, seconds")
    parser.add_argument("--deadline", type=float, default=600.0, help="whole run, seconds")
    parser.add_argument("--upstream", default=None, help="OpenAI-compatible URL to think with")
    args = parser.parse_args()
    if not 1 <= args.requests <= 1000:
        parser.error("--requests must be between 1 and 1000")

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    store = Path(tempfile.mkdtemp(prefix="ponder_load_")) / "traces.sqlite"
    cmd = [sys.executable, "-m", "ponder", "serve", "--port", str(port), "--store", str(store)]
    cmd += [
        "--max-concurrent",
        str(args.max_concurrent),
        "--queue",
        str(args.queue),
        "--log-level",
        "warning",
    ]
    if args.upstream:
        cmd += ["--upstream", args.upstream]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 120
        while True:
            if server.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"the server did not start: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(base_url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        idle_mb = peak_rss_mb(server.pid)
        results, wall = asyncio.run(load(base_url, args))
        peak_mb = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(60)
    counts = Counter(outcome if not outcome.startswith("error") else "error" for outcome, _ in results)
    ok = [seconds for outcome, seconds in results if outcome == "ok"]
    print(f"command: {' '.join(sys.argv)}")
    print(f"server:  {' '.join(cmd[1:])}")
    print(
        f"requests {args.requests} concurrent, model {args.model}, max_tokens {args.max_tokens},"
        f" cap {args.max_concurrent} + queue {args.queue}"
    )
    print(f"ok {counts['ok']}  429 {counts['429']}  other errors {counts['error'] + counts['empty']}")
    for outcome, _ in results:
        if outcome.startswith("error"):
            print("  " + outcome)
    if ok:
        print(
            f"latency s: p50 {percentile(ok, 0.5):.2f}  p95 {percentile(ok, 0.95):.2f}"
            f"  max {max(ok):.2f}  mean {statistics.mean(ok):.2f}"
        )
    print(f"wall {wall:.1f} s, throughput {len(ok) / wall:.2f} req/s")
    print(f"server peak RSS: {peak_mb:.0f} MiB (after start-up {idle_mb:.0f} MiB)")
    if counts["error"] or counts["empty"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
