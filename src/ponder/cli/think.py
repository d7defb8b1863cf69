"""`ponder think`: answer one question with a strategy inside a budget."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ponder.budget import Budget, BudgetError, Meter
from ponder.cli.app import app
from ponder.cli.errors import fail, stderr
from ponder.engines import ENGINES, create_engine
from ponder.engines.base import Engine, EngineError
from ponder.problem import Problem
from ponder.store import StoreError, TraceStore
from ponder.strategies import StrategyError, parse_strategy
from ponder.think import Answer, athink
from ponder.verifiers import AllOf, Verifier, parse_verifier_spec

T = TypeVar("T")


def engine_from_options(
    engine: str, model: str | None, base_url: str | None, model_path: Path | None
) -> Engine:
    if engine == "llamacpp":
        return create_engine("llamacpp", model_path=model_path)
    return create_engine("openai", base_url=base_url, model=model)


@app.command()
def think(
    question: Annotated[str, typer.Argument(help="The question to think about.")],
    strategy: Annotated[
        str, typer.Option("--strategy", "-s", help="Strategy spec, e.g. self-consistency:n=16.")
    ] = "self-consistency",
    samples: Annotated[
        int | None, typer.Option("--samples", "-n", help="Samples for strategies that take n.")
    ] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option("--budget", "-b", help="Limit: 30s, 2m, 4000tok, $0.02, 16 samples. Repeatable."),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="llamacpp (embedded) or openai (any OpenAI-compatible server).")
    ] = "llamacpp",
    model: Annotated[str | None, typer.Option(help="Model name for the openai engine.")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Server URL for the openai engine, e.g. http://127.0.0.1:8000/v1.")
    ] = None,
    model_path: Annotated[
        Path | None, typer.Option(help="GGUF file for the embedded engine (default: bundled SmolLM2-135M).")
    ] = None,
    verify: Annotated[
        list[str] | None,
        typer.Option(
            "--verify",
            help="Verifier spec: tests:FILE, ruff, mypy, math, schema:FILE, regex:PATTERN. Repeatable.",
        ),
    ] = None,
    answer_format: Annotated[
        str, typer.Option("--format", help="auto, number, choice, text, math or code.")
    ] = "auto",
    gold: Annotated[str | None, typer.Option(help="Known answer, for verifiers such as math.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Cap on tokens per sample.")] = 512,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    store: Annotated[
        Path | None, typer.Option(help="Trace database (default: $PONDER_HOME/traces.sqlite).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    show_response: Annotated[
        bool, typer.Option("--show-response", help="Also print the chosen response text.")
    ] = False,
) -> None:
    """Think about QUESTION and print the answer."""
    if not question.strip():
        fail("the question is empty")
    if max_tokens < 1:
        fail("--max-tokens must be at least 1")
    if engine not in ENGINES:
        fail(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    try:
        limits = Budget.parse(*(budget or []))
        chosen = parse_strategy(strategy, n=samples)
        if samples is not None and "n" not in {p[0] for p in chosen.parameters()}:
            fail(f"strategy {chosen.name!r} takes no --samples; use --budget '{samples} samples'")
        problem = Problem(question, format=answer_format, gold=gold)  # type: ignore[arg-type]
        trace_store = TraceStore(store)
    except (BudgetError, StrategyError, StoreError, ValueError) as exc:
        fail(str(exc))
    try:
        eng = engine_from_options(engine, model, base_url, model_path)
    except (OSError, ValueError, RuntimeError) as exc:
        fail(f"cannot start the {engine} engine: {exc}")
    try:
        verifier = _verifier(verify, eng)
    except ValueError as exc:
        fail(str(exc))
    meter = Meter(limits)
    try:
        work = _run_with_progress(problem, chosen, meter, eng, verifier, trace_store, max_tokens, seed)
        result = asyncio.run(closing(eng, work))
    except StoreError as exc:
        fail(str(exc))
    except EngineError as exc:  # the model could not be reached: what was thought is in the trace
        fail(f"the {engine} engine failed: {exc}", code=1)
    _print(result, as_json, show_response)


def _verifier(specs: list[str] | None, engine: Engine) -> Verifier | None:
    if not specs:
        return None
    checks = [parse_verifier_spec(spec, engine=engine) for spec in specs]
    return checks[0] if len(checks) == 1 else AllOf(checks)


async def closing(engine: Engine, work: Awaitable[T]) -> T:
    """Await `work`, then close the engine, on one event loop (HTTP clients belong to it)."""
    try:
        return await work
    finally:
        await engine.aclose()


async def _run_with_progress(
    problem: Problem,
    strategy: Any,
    meter: Meter,
    engine: Engine,
    verifier: Any,
    store: TraceStore,
    max_tokens: int,
    seed: int,
) -> Answer:
    progress = Progress(
        TextColumn("[bold]thinking[/]"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
    )
    if not stderr.is_terminal:
        return await athink(
            problem,
            strategy=strategy,
            budget=meter.budget,
            meter=meter,
            engine=engine,
            verifier=verifier,
            store=store,
            max_tokens=max_tokens,
            seed=seed,
        )
    counts = {"sample": 0, "step": 0, "revision": 0}
    total = meter.budget.seconds or getattr(strategy, "n", None)
    task = progress.add_task("think", total=total, status="")

    def on_node(node: Any) -> None:
        if node.kind in counts:
            counts[node.kind] += 1

    async def refresh() -> None:
        while True:
            left = meter.seconds_left()
            status = f"{counts['sample'] + counts['revision']} samples · {meter.completion_tokens} tok"
            if left != float("inf"):
                status += f" · {max(0.0, left):.1f}s left"
            done = meter.elapsed if meter.budget.seconds else counts["sample"]
            progress.update(task, completed=done, status=status)
            await asyncio.sleep(0.1)

    with progress:
        ticker = asyncio.create_task(refresh())
        try:
            return await athink(
                problem,
                strategy=strategy,
                meter=meter,
                engine=engine,
                verifier=verifier,
                store=store,
                on_node=on_node,
                max_tokens=max_tokens,
                seed=seed,
            )
        finally:
            ticker.cancel()


def _print(result: Answer, as_json: bool, show_response: bool) -> None:
    out = Console(highlight=False)
    if as_json:
        payload = {
            "answer": result.answer,
            "strategy": result.strategy,
            "trace_id": result.trace_id,
            "stopped_by": result.stopped_by,
            "usage": result.to_dict()["usage"],
            "model": result.model,
            "score": result.score,
        }
        if show_response:
            payload["response"] = result.response
        print(json.dumps(payload))
        return
    if show_response:
        out.print(result.response, markup=False)
    out.print(result.answer if result.answer is not None else "(no answer)", markup=False, style="bold")
    u = result.usage
    stop = f" · stopped by {result.stopped_by}" if result.stopped_by else ""
    stderr.print(
        f"[dim]{result.strategy} · {u.reasoning_tokens} reasoning"
        f" + {u.completion_tokens - u.reasoning_tokens} answer tokens"
        f" · {u.seconds:.1f}s{stop} · trace {result.trace_id[:12]}[/]"
    )
