"""Does batching pay? Aggregate tokens/s of N parallel samples vs N sequential ones.

Measures, side by side in one run on the embedded engine:
- one prompt, n = 1, 4, 8, 16 samples in one `generate` call (one batched decode per step),
  against 16 samples drawn one call after another;
- two problems thinking at once (two concurrent `generate` calls joining one running
  batch) against the same two calls one after the other.

EOS is ignored so every sample produces exactly `--max-tokens` tokens and the counts are
comparable. Usage: python benchmarks/engine_parallel.py [--max-tokens 64] [--model PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from ponder.engines.base import GenerationRequest
from ponder.engines.llamacpp import LlamaCppEngine

QUESTION = "Write a short story about a robot who learns to paint."
OTHER = "Explain step by step why the sky is blue."


def request(question: str, n: int, max_tokens: int, seed: int) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "user", "content": question}],
        n=n,
        max_tokens=max_tokens,
        temperature=0.8,
        seed=seed,
    )


async def timed(engine: LlamaCppEngine, requests: list[GenerationRequest]) -> tuple[float, int]:
    start = time.perf_counter()
    out = await engine.generate(requests)
    return time.perf_counter() - start, sum(c.completion_tokens for cs in out for c in cs)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default=None, help="GGUF path (default: bundled SmolLM2)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    t = args.max_tokens

    engine = LlamaCppEngine(args.model, n_threads=args.threads, max_batch=16)
    engine.scheduler.ignore_eos = True  # fixed-length samples: comparable token counts
    try:
        await timed(engine, [request(QUESTION, 2, 8, 99)])  # warm-up: graphs, caches

        rows: list[tuple[str, int, float, float]] = []
        for n in (1, 4, 8, 16):
            seconds, tokens = await timed(engine, [request(QUESTION, n, t, n)])
            rows.append((f"{n} parallel", tokens, seconds, tokens / seconds))
        start, tokens = time.perf_counter(), 0
        for i in range(16):
            _, k = await timed(engine, [request(QUESTION, 1, t, 100 + i)])
            tokens += k
        seconds = time.perf_counter() - start
        rows.append(("16 sequential", tokens, seconds, tokens / seconds))

        print(f"model {engine.model}, {engine.n_threads} threads, {t} tokens per sample, EOS ignored")
        print(f"{'samples':<16}{'tokens':>8}{'seconds':>10}{'tok/s':>10}")
        for name, tokens, seconds, rate in rows:
            print(f"{name:<16}{tokens:>8}{seconds:>10.2f}{rate:>10.1f}")
        ratio = rows[3][3] / rows[4][3]
        print(f"16 parallel vs 16 sequential: {ratio:.2f}x aggregate tokens/s (goal >= 1.6x)")

        # Two problems thinking at once: each a call of 4 samples.
        a, b = request(QUESTION, 4, t, 1), request(OTHER, 4, t, 2)
        start = time.perf_counter()
        await timed(engine, [a])
        await timed(engine, [b])
        one_after_other = time.perf_counter() - start
        start = time.perf_counter()
        await asyncio.gather(timed(engine, [a]), timed(engine, [b]))
        together = time.perf_counter() - start
        print(
            f"two problems x 4 samples: one after the other {one_after_other:.2f}s, "
            f"concurrently {together:.2f}s -> {one_after_other / together:.2f}x faster together"
        )
    finally:
        await engine.aclose()


if __name__ == "__main__":
    asyncio.run(main())
