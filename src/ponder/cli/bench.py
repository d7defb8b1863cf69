"""`ponder bench`: strategies side by side on an offline dataset, with accuracy-versus-compute
tables and a plot. Bad input fails with one line and exit 2 before any model is loaded."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ponder.allocate import total_tokens
from ponder.bench import (
    COLUMNS,
    BenchError,
    BenchRun,
    parse_strategies,
    read_results,
    run_bench,
    summary,
    table_rows,
    write_outputs,
)
from ponder.budget import Budget, BudgetError
from ponder.cli.app import app
from ponder.cli.engine import EngineOptions, engine_options
from ponder.cli.errors import fail, shown, stderr
from ponder.cli.think import closing
from ponder.datasets import get_dataset
from ponder.engines.base import Engine
from ponder.engines.spec import EngineSpec
from ponder.executors import EXECUTORS, Executor, ExecutorError, LocalExecutor, get_executor
from ponder.executors.ray import RAY_EXTRA
from ponder.store import StoreError, TraceStore

STRATEGIES_HELP = (
    "Strategy specs to compare. Separate specs with ';' or ','; a comma-separated item that is not "
    "a strategy name (key=value, or a flag of the previous strategy) continues the previous spec, so "
    "'direct,beam-search:width=4,expand=2,self-consistency:n=8' is three strategies. Repeatable."
)


@app.command()
@engine_options
def bench(
    dataset: Annotated[
        str, typer.Option(help="gsm8k, math500, aime24, aime25, humaneval or reasoning-gym:<task>.")
    ],
    strategies: Annotated[list[str], typer.Option("--strategies", "--strategy", "-s", help=STRATEGIES_HELP)],
    out: Annotated[
        Path, typer.Option(help="Directory for results.jsonl, summaries and the plot; rerun to resume.")
    ],
    size: Annotated[
        int | None,
        typer.Option(
            help="Problems: the first SIZE of a fixed dataset (default: all), "
            "or SIZE generated for reasoning-gym (default: 100)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for sampling and for reasoning-gym generators.")] = 0,
    dataset_config: Annotated[
        str | None, typer.Option(help="JSON config for reasoning-gym generators, e.g. '{\"min_digits\": 1}'.")
    ] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option(
            "--budget", "-b", help="Per-problem limit: 30s, 4000tok, $0.02, 16 samples. Repeatable."
        ),
    ] = None,
    total_budget: Annotated[
        str | None,
        typer.Option(
            help="One token budget for all the problems, per strategy (e.g. 20000tok), spent where it "
            "is needed: with auto, a greedy answer for each, the rest to the least confident. A resumed "
            "run must give the same total; the problems still to do share what the rows already "
            "written left of it."
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="Problems thought about at once (the engine batches them).")
    ] = 4,
    max_tokens: Annotated[int, typer.Option(help="Cap on tokens per sample.")] = 512,
    store: Annotated[
        Path | None, typer.Option(help="Trace database (default: $PONDER_HOME/traces.sqlite).")
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            help="local (this process, one engine) or ray (Ray workers, each with its own engine; "
            "pip install 'ponder[ray]')."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join (auto, ray://head:10001); default: start one on this machine."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Ray workers (default: one per CPU of the cluster), each thinking --concurrency problems."
        ),
    ] = None,
    *,
    engine_options: EngineOptions,
) -> None:
    """Benchmark strategies on a dataset: accuracy, pass@k, tokens, seconds and dollars per strategy.

    Every graded result is appended to OUT/results.jsonl at once; rerunning the same command
    skips (problem, strategy, seed) rows already there, so an interrupted run resumes.
    """
    if size is not None and size < 1:
        fail("--size must be at least 1")
    if concurrency < 1:
        fail("--concurrency must be at least 1")
    if max_tokens < 1:
        fail("--max-tokens must be at least 1")
    runner = _executor(executor, ray_address, workers, concurrency)
    try:
        config = _config(dataset_config)
        chosen = parse_strategies(strategies)
        limits = Budget.parse(*(budget or []))
        total = None if total_budget is None else total_tokens(total_budget)
        source = get_dataset(dataset, config)
        problems = source.load(size, seed)
        run = BenchRun(
            dataset=source,
            problems=problems,
            strategies=chosen,
            out=out,
            seed=seed,
            budget=limits,
            max_tokens=max_tokens,
            concurrency=concurrency,
            dataset_config=config,
            engine_label=engine_options.label(),
            total_budget=total,
        )
        run.prepare()
        trace_store = TraceStore(store)
    except (BenchError, BudgetError, StoreError, ValueError) as exc:
        fail(str(exc))
    except ImportError as exc:
        fail(f"dataset {dataset!r} needs a package that is not installed: {exc}")
    try:
        if runner.remote:  # each worker builds its own engine; none is loaded here
            rows, errors = asyncio.run(_run_with_progress(run, engine_options.spec(), trace_store, runner))
        else:
            eng = engine_options.create()
            rows, errors = asyncio.run(closing(eng, _run_with_progress(run, eng, trace_store, runner)))
    except (BudgetError, ExecutorError) as exc:
        fail(str(exc))
    finally:
        runner.close()
    data = summary(run, rows)
    write_outputs(run, data)
    _print(data, run)
    for error in errors[:10]:
        stderr.print(f"[yellow]failed:[/] {error}", soft_wrap=True)
    if errors:
        fail(f"{len(errors)} of the runs failed; rerun the same command to retry them", code=1)


def _executor(name: str, address: str | None, workers: int | None, concurrency: int) -> Executor:
    """The executor the options ask for; exit 2 on a bad combination or a missing Ray."""
    if name not in EXECUTORS:
        fail(f"unknown executor {shown(name)}: choose one of {', '.join(EXECUTORS)}")
    if name == "local":
        given = [o for o, v in (("--ray-address", address), ("--workers", workers)) if v is not None]
        if given:
            fail(f"{' and '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} to --executor ray")
        return LocalExecutor(concurrency)
    if workers is not None and workers < 1:
        fail("--workers must be at least 1")
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        found = False
    if not found:
        fail(RAY_EXTRA)
    return get_executor("ray", address=address, workers=workers, concurrency=concurrency)


def _config(text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BenchError(f"--dataset-config is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BenchError("--dataset-config must be a JSON object, e.g. '{\"min_digits\": 1}'")
    return value


async def _run_with_progress(
    run: BenchRun, engine: Engine | EngineSpec, store: TraceStore, executor: Executor
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    total = len(run.problems) * len(run.strategies)
    already = total - len(run.pending(read_results(run.results_path)))
    if already:
        stderr.print(f"resuming: {already} of {total} results already in {run.results_path}")
    score = {"done": 0, "correct": 0}
    progress = Progress(
        TextColumn("[bold]bench[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=not stderr.is_terminal,
    )
    task = progress.add_task("bench", total=total, completed=already, status="")
    step = max(1, (total - already) // 20)

    def on_result(row: dict[str, Any]) -> None:
        score["done"] += 1
        score["correct"] += bool(row["correct"])
        status = f"{score['correct']}/{score['done']} correct this session"
        progress.update(task, advance=1, status=status)
        if not stderr.is_terminal and (score["done"] % step == 0 or already + score["done"] == total):
            stderr.print(f"bench: {already + score['done']}/{total} done · {status}")

    with progress:
        return await run_bench(run, engine, store, on_result, executor)


def _print(data: dict[str, Any], run: BenchRun) -> None:
    """A rich table on a terminal; the markdown summary when piped (no squeezed columns)."""
    out = Console(highlight=False)
    if not out.is_terminal:
        print((run.out / "summary.md").read_text(), end="")
    else:
        table = Table(title=f"{data['dataset']} · {data['size']} problems · seed {data['seed']}")
        for title, _, _ in COLUMNS:
            table.add_column(title, justify="left" if title == "strategy" else "right")
        for row in table_rows(data):
            table.add_row(*row)
        out.print(table)
        if total := data.get("total_budget"):
            spent = ", ".join(f"{s['strategy']} {s['completion_tokens_total']}" for s in data["strategies"])
            out.print(f"total budget {total} tokens per strategy; spent: {spent}")
    stderr.print(
        f"[dim]results in {run.out}/ (results.jsonl, summary.md/json/csv, accuracy_vs_tokens.png)[/]"
    )
