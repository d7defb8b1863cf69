"""Engine parity: the same GGUF embedded and behind llama-cpp-python's OpenAI-compatible server.

Same seeded reasoning-gym questions (`products`, 1-2 digits), side by side in one run:

- `embedded`: ponder's llama.cpp engine as used (questions in flight together, so their
  samples share decode batches; prefix cache on; flash attention as llama.cpp chooses);
- `embedded alone`: one question at a time, no prefix cache, flash attention off: the
  arithmetic of a server evaluating one prompt at a time (greedy only);
- `server`: `python -m llama_cpp.server` at its defaults on a free loopback port (started
  here, stopped at the end) through ponder's OpenAI engine as it is;
- `server fixed`: the same server, the request body carrying the sampling settings
  llama-cpp-python fills in when a field is absent (`repeat_penalty` 1.1, `top_k` 40,
  `min_p` 0.05) set to what the embedded engine does (1.0, the request's top_k and
  min_p), and no streaming (the server ends a stream early, with no error and no
  finish_reason, when another request arrives: `interrupt_requests`).

Reports how often the greedy (`direct`) text equals `embedded`'s and `embedded alone`'s,
and the accuracy and generated tokens of `direct` and `adaptive-consistency` with the
paired 95% interval of each row's difference from `embedded`.

    python benchmarks/engine_parity.py --size 40 --seed 31 --out parity.json
    python benchmarks/engine_parity.py --replay parity.json   # the table again (or of a cut run)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from early_stop import Item, grade, load_items, paired_ci95

from ponder import athink
from ponder.engines.base import Engine
from ponder.engines.llamacpp import LlamaCppEngine
from ponder.engines.models import bundled_model_path
from ponder.engines.openai import OpenAIEngine

STRATEGIES = ["direct", "adaptive-consistency"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: Path, threads: int, n_ctx: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_threads", str(threads), "--n_ctx", str(n_ctx)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama_cpp.server did not answer within 120 s")


async def run(
    spec: str, items: list[Item], engine: Engine, seed: int, max_tokens: int, concurrency: int
) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(concurrency)

    async def one(item: Item) -> dict[str, Any]:
        async with gate:
            answer = await athink(
                item.problem, strategy=spec, engine=engine, store=False, seed=seed, max_tokens=max_tokens
            )
        return {
            "answer": answer.answer,
            "correct": grade(item, answer.answer),
            "text": answer.response,
            "tokens": answer.usage.completion_tokens,
        }

    return list(await asyncio.gather(*(one(i) for i in items)))


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    items = load_items(args.task, args.size, args.seed, json.loads(args.config))
    model = bundled_model_path("smollm2")
    proc, url = start_server(model, args.threads, args.n_ctx)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    strategies = args.strategies.split(";")
    try:
        embedded = LlamaCppEngine(model, n_threads=args.threads, n_ctx=args.n_ctx, max_batch=16)
        alone = LlamaCppEngine(
            model, n_threads=args.threads, n_ctx=args.n_ctx, max_batch=16, prefix_cache=0, flash_attn=False
        )
        # name -> engine, questions in flight, strategies
        variants: list[tuple[str, Engine, int, list[str]]] = [
            ("embedded", embedded, args.concurrency, strategies),
            ("embedded alone", alone, 1, ["direct"]),
            ("server", OpenAIEngine(url, api_key="none"), 2, strategies),
            (
                "server fixed",
                OpenAIEngine(url, api_key="none", stream=False, explicit_sampling=True),
                2,
                strategies,
            ),
        ]
        for spec in strategies:
            for name, engine, conc, specs in variants:
                if spec not in specs:
                    continue
                start = time.monotonic()
                out = await run(spec, items, engine, args.seed, args.max_tokens, conc)
                results.setdefault(spec, {})[name] = out
                if args.out:  # after every row, so a long run that is stopped still has its numbers
                    args.out.write_text(json.dumps({"items": len(items), "results": results}, indent=1))
                acc = sum(o["correct"] for o in out) / len(out)
                print(f"  {spec:22s} {name:16s} acc {acc:6.1%}  {time.monotonic() - start:6.0f}s", flush=True)
        for _, engine, _, _ in variants:
            await engine.aclose()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"items": len(items), "results": results}


def report(data: dict[str, Any], args: argparse.Namespace) -> None:
    n = data["items"]
    print(f"\n{args.task} {args.config}: {n} questions, seed {args.seed}, max_tokens {args.max_tokens}")
    head = f"{'strategy':22s}{'engine':16s}{'acc':>7s}{'vs embedded':>14s}{'tokens':>8s}"
    print(f"{head}{'same greedy as embedded / alone':>34s}")
    for spec, by_engine in data["results"].items():
        base = [o["correct"] for o in by_engine["embedded"]]
        for name, out in by_engine.items():
            correct = [o["correct"] for o in out]
            acc = sum(correct) / n
            delta = 100 * (acc - sum(base) / n)
            vs = "" if name == "embedded" else f"{delta:+.1f} ± {paired_ci95(base, correct):.1f}"
            same = ""
            if spec == "direct":
                texts = [o["text"] for o in out]
                same = " / ".join(
                    f"{sum(a == b['text'] for a, b in zip(texts, by_engine[ref], strict=True))}/{n}"
                    for ref in ("embedded", "embedded alone")
                    if ref in by_engine
                )
            tokens = sum(o["tokens"] for o in out)
            print(f"{spec:22s}{name:16s}{acc:7.1%}{vs:>14s}{tokens:8d}{same:>34s}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="products")
    parser.add_argument("--config", default='{"min_digits": 1, "max_digits": 2}')
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--seed", type=int, default=31, help="dataset and sampling seed")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--concurrency", type=int, default=8, help="questions in flight on the embedded engine"
    )
    parser.add_argument("--strategies", default=";".join(STRATEGIES))
    parser.add_argument("--out", type=Path, help="write every text and answer as JSON here")
    parser.add_argument("--replay", type=Path, help="print the table of an earlier run's --out, run nothing")
    args = parser.parse_args()
    report(json.loads(args.replay.read_text()) if args.replay else asyncio.run(main_async(args)), args)


if __name__ == "__main__":
    main()
