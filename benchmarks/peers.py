"""ponder against its peers on one backend: optillm's and its_hub's proxies and `ponder serve`,
all in front of the same llama-cpp-python server with the bundled SmolLM2-135M, asked the same
seeded questions one at a time over HTTP.

    llama_cpp.server (bundled GGUF) <- ponder serve --upstream   <-+
                                    <- optillm --base-url          +- this script (httpx)
                                    <- its-iaas (/configure)     <-+

optillm and its_hub run from their own venv (`--peers-venv`, never ponder's): optillm 0.4.0 is
installed with `--no-deps` plus the few modules its proxy path imports (its wheel requires torch
and transformers, which the proxy path never imports). Every answer is graded the same way:
ponder's answer extraction on the returned text, then the dataset's own scorer.

Tokens are counted as each side reports them (`usage.completion_tokens`), and for optillm also
as its backend reported them in optillm's own conversation log (the sum over every provider
call): optillm's `self_consistency` leaves length-truncated samples out of its count.

The peers' venv:

    python -m venv /work/peers-venv
    /work/peers-venv/bin/pip install --no-deps optillm==0.4.0
    /work/peers-venv/bin/pip install flask openai cerebras_cloud_sdk 'z3-solver<=4.15.4.0' sympy numpy \
        networkx aiohttp math-verify PyYAML 'its_hub[iaas]==1.2.0'

    PONDER_THREADS=1 python benchmarks/peers.py --size 24 --seed 401 --out docs/results/peers
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from ponder.datasets import load_dataset
from ponder.engines.models import bundled_model_path
from ponder.extract import extract_answer
from ponder.problem import Problem
from ponder.prompts import SOLVE_SYSTEM

ALIAS = "smollm2"  # the backend's model name: no '-', which optillm reads as an approach separator
LAST_NUMBER = r"(-?\d[\d,]*(?:\.\d+)?)(?!.*\d)"  # its_hub's vote key: the response's last number


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(name: str, cmd: list[str], ready: str, logs: Path, env: dict[str, str]) -> Iterator[None]:
    """Start `cmd`, wait until GET `ready` answers (any status), stop it on exit."""
    log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        end = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                tail = (logs / f"{name}.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{name} exited ({proc.returncode}): {tail}")
            try:
                httpx.get(ready, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > end:
                    raise TimeoutError(f"{name} not ready after 300 s") from None
                time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def arms(urls: dict[str, str], max_tokens: int) -> list[dict[str, Any]]:
    """What each side is asked. optillm and its_hub get ponder's answer instruction as the
    system prompt (ponder serve adds it itself), so every side asks the model the same thing."""
    solve = [{"role": "system", "content": SOLVE_SYSTEM}]
    return [
        {"arm": "optillm none (one sample)", "url": urls["optillm"], "model": f"none-{ALIAS}",
         "system": solve, "temperature": "0.8 (backend default)", "body": {"max_tokens": max_tokens}},
        {"arm": "optillm self_consistency", "url": urls["optillm"], "model": f"self_consistency-{ALIAS}",
         "system": solve, "temperature": "1.0 (fixed)", "body": {"max_tokens": max_tokens}},
        {"arm": "optillm majority_voting k=8", "url": urls["optillm"], "model": f"majority_voting-{ALIAS}",
         "system": solve, "temperature": "0.6", "body": {"max_tokens": max_tokens, "k": 8}},
        {"arm": "optillm bon n=3", "url": urls["optillm"], "model": f"bon-{ALIAS}",
         "system": solve, "temperature": "1.0, rating 0.1", "body": {"max_tokens": max_tokens}},
        {"arm": "optillm moa", "url": urls["optillm"], "model": f"moa-{ALIAS}",
         "system": solve, "temperature": "1.0, critique 0.1", "body": {"max_tokens": max_tokens}},
        {"arm": "optillm cot_reflection", "url": urls["optillm"], "model": f"cot_reflection-{ALIAS}",
         "system": solve, "temperature": "0.6", "body": {"max_tokens": max_tokens}},
        {"arm": "its_hub self-consistency budget=8", "url": urls["its_hub"], "model": ALIAS, "system": solve,
         "temperature": "0.8 (backend default)", "body": {"max_tokens": max_tokens, "budget": 8}},
        {"arm": "ponder direct (greedy)", "url": urls["ponder"], "model": "direct/ponder",
         "system": [], "temperature": "0", "body": {"max_tokens": max_tokens}},
        {"arm": "ponder self-consistency:n=8", "url": urls["ponder"], "model": "self-consistency:n=8/ponder",
         "system": [], "temperature": "0.8", "body": {"max_tokens": max_tokens}},
        {"arm": "ponder auto", "url": urls["ponder"], "model": "auto/ponder", "system": [],
         "temperature": "0.8 (its vote)", "body": {"max_tokens": max_tokens}},
    ]  # fmt: skip


def optillm_backend_tokens(log_dir: Path) -> list[int | None]:
    """Completion tokens the backend reported for each optillm request, in request order,
    summed over the request's provider calls (optillm's conversation log); None where the
    approach logs no provider calls (its plugins, e.g. majority_voting, do not)."""
    entries = [
        json.loads(line)
        for path in sorted(log_dir.glob("conversations_*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    entries.sort(key=lambda e: e.get("timestamp", ""))
    return [
        sum(
            int(((call.get("response") or {}).get("usage") or {}).get("completion_tokens") or 0)
            for call in e["provider_calls"]
        )
        if e.get("provider_calls")
        else None
        for e in entries
    ]


def backend_requests(log: Path) -> int:
    """Chat requests the backend has answered so far (its uvicorn access log)."""
    return log.read_text(errors="replace").count("POST /v1/chat/completions")


def ask(client: httpx.Client, arm: dict[str, Any], problem: Problem, seed: int) -> dict[str, Any]:
    body = {
        "model": arm["model"],
        "messages": [*arm["system"], {"role": "user", "content": problem.question}],
        "seed": seed,
        **arm["body"],
    }
    if arm["arm"].startswith("ponder"):
        body["ponder"] = {"format": problem.format, "budget": {"seconds": 600}}
    start = time.monotonic()
    reply = client.post(f"{arm['url']}/chat/completions", json=body)
    seconds = time.monotonic() - start
    if reply.status_code != 200:
        return {"error": f"{reply.status_code}: {reply.text[:300]}", "seconds": seconds}
    data = reply.json()
    text = data["choices"][0]["message"].get("content") or ""
    ponder = data.get("ponder") or {}
    answer = ponder.get("answer") if arm["arm"].startswith("ponder") else extract_answer(text, problem.format)
    return {
        "text": text,
        "answer": answer,
        "completion_tokens": int((data.get("usage") or {}).get("completion_tokens") or 0),
        "seconds": seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=24)
    p.add_argument("--seed", type=int, default=401)
    p.add_argument("--max-tokens", type=int, default=256, help="cap on each sample")
    p.add_argument("--peers-venv", type=Path, default=Path("/work/peers-venv"))
    p.add_argument("--threads", type=int, default=int(os.environ.get("PONDER_THREADS", "1")))
    p.add_argument("--out", type=Path, default=Path("docs/results/peers"))
    args = p.parse_args()

    problems = load_dataset(
        "reasoning-gym:products", config={"min_digits": 1, "max_digits": 1}, size=args.size, seed=args.seed
    )
    work = Path(tempfile.mkdtemp(prefix="ponder_peers_"))
    ports = {k: free_port() for k in ("llama", "ponder", "optillm", "its_hub")}
    urls = {k: f"http://127.0.0.1:{port}/v1" for k, port in ports.items()}
    env = {
        **os.environ,
        "PONDER_HOME": str(work),
        "PONDER_THREADS": str(args.threads),
        "OPENAI_API_KEY": "none",
    }
    venv = args.peers_venv / "bin"
    with ExitStack() as stack:
        stack.enter_context(process("llama", [
            sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path()),
            "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(ports["llama"]),
            "--n_ctx", "2048", "--n_threads", str(args.threads), "--verbose", "False",
        ], urls["llama"] + "/models", work, env))  # fmt: skip
        stack.enter_context(process("ponder", [
            sys.executable, "-m", "ponder", "serve", "--port", str(ports["ponder"]),
            "--upstream", urls["llama"], "--upstream-model", ALIAS,
            "--store", str(work / "traces.sqlite"), "--max-seconds", "600",
        ], urls["ponder"] + "/models", work, env))  # fmt: skip
        stack.enter_context(process("optillm", [
            str(venv / "optillm"), "--base-url", urls["llama"], "--port", str(ports["optillm"]),
            "--log-conversations", "--conversation-log-dir", str(work / "optillm"),
        ], f"http://127.0.0.1:{ports['optillm']}/health", work, env))  # fmt: skip
        stack.enter_context(process("its_hub", [
            str(venv / "its-iaas"), "--host", "127.0.0.1", "--port", str(ports["its_hub"]),
        ], f"http://127.0.0.1:{ports['its_hub']}/v1/models", work, env))  # fmt: skip
        httpx.post(f"http://127.0.0.1:{ports['its_hub']}/configure", timeout=30, json={
            "endpoint": urls["llama"], "api_key": "none", "model": ALIAS, "alg": "self-consistency",
            "regex_patterns": [LAST_NUMBER], "budget": 8, "temperature": 0.8,
        }).raise_for_status()  # fmt: skip

        plan = arms(urls, args.max_tokens)
        rows: list[dict[str, Any]] = []
        with httpx.Client(timeout=900) as client:
            for i, problem in enumerate(problems):
                for arm in plan:
                    before = backend_requests(work / "llama.log")
                    row = ask(client, arm, problem, seed=i)
                    row["backend_requests"] = backend_requests(work / "llama.log") - before
                    grader_ok = "error" not in row and problem.meta["grader"].grade(
                        problem, row.get("answer"), row.get("text", "")
                    )
                    rows.append({"arm": arm["arm"], "id": problem.id, "gold": problem.gold, **row,
                                 "correct": bool(grader_ok)})  # fmt: skip
                    print(f"{i:3d} {arm['arm']:36s} {row.get('answer')!s:>8} gold {problem.gold:>4} "
                          f"{'ok' if grader_ok else '--'} {row.get('completion_tokens', 0):5d} tok "
                          f"{row['backend_requests']:2d} req {row['seconds']:6.1f}s {row.get('error', '')}",
                          flush=True)  # fmt: skip
        backend = optillm_backend_tokens(work / "optillm")
    optillm_rows = [r for r in rows if r["arm"].startswith("optillm")]
    if len(backend) == len(optillm_rows):
        for row, tokens in zip(optillm_rows, backend, strict=True):
            row["backend_completion_tokens"] = tokens
    report(rows, plan, args, problems)


def report(
    rows: list[dict[str, Any]], plan: list[dict[str, Any]], args: argparse.Namespace, problems: list[Problem]
) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    lines = [
        f"# ponder and its peers on one backend: reasoning-gym products (single digit), "
        f"{len(problems)} questions, seed {args.seed}",
        "",
        "Backend: llama-cpp-python's server with the bundled SmolLM2-135M-Instruct Q4_1, "
        f"{args.threads} thread(s); max_tokens {args.max_tokens} per sample (its_hub's proxy ignores it). "
        "One question at a time, each side asked over HTTP.",
        "",
        "| side | temperature | accuracy | completion tok/question (reported) | "
        "completion tok/question (backend) | backend requests/question | s/question | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in plan:
        mine = [r for r in rows if r["arm"] == arm["arm"]]
        ok = [r for r in mine if "error" not in r]
        acc = sum(r["correct"] for r in mine) / len(mine)
        reported = statistics.mean(r["completion_tokens"] for r in ok) if ok else 0.0
        logged = [r.get("backend_completion_tokens", "n/a") for r in ok]
        backend = [t for t in logged if isinstance(t, int)]
        backend_cell = (
            f"{statistics.mean(backend):.0f}" if backend else "not logged" if None in logged else "= reported"
        )
        requests = statistics.mean(r["backend_requests"] for r in mine)
        secs = statistics.mean(r["seconds"] for r in mine)
        lines.append(
            f"| {arm['arm']} | {arm['temperature']} | {acc:.3f} | {reported:.0f} | {backend_cell} | "
            f"{requests:.1f} | {secs:.1f} | {len(mine) - len(ok)} |"
        )
    lines += ["", f"Command: `PONDER_THREADS={args.threads} python benchmarks/peers.py --size {args.size} "
              f"--seed {args.seed} --max-tokens {args.max_tokens} --out {args.out}`", ""]  # fmt: skip
    (args.out / "summary.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
