"""`ponder demo`: what thinking buys, shown on a few seeded questions instead of one
hand-picked one. Half the questions are easy for the model, half hard; each strategy answers
all of them, and the table shows the answers, accuracy, tokens and seconds side by side."""

from __future__ import annotations

import asyncio
from typing import Annotated, NamedTuple

import typer
from rich.console import Console
from rich.table import Table

from ponder.cli.app import app
from ponder.cli.errors import fail, stderr
from ponder.datasets import Dataset, get_dataset
from ponder.engines import create_engine
from ponder.engines.base import Engine, EngineError
from ponder.problem import Problem
from ponder.store import StoreError, TraceStore
from ponder.strategies import StrategyError, parse_strategy
from ponder.think import Answer, athink

# reasoning-gym generators and settings: the bundled model gets the first mostly right, the
# second mostly wrong (measured in benchmarks/routing.py)
EASY = ("products", {"min_digits": 1, "max_digits": 1})
HARD = ("products", {"min_digits": 2, "max_digits": 2})


class Question(NamedTuple):
    level: str
    problem: Problem
    dataset: Dataset  # grades the answers


@app.command()
def demo(
    size: Annotated[int, typer.Option(min=2, max=40, help="Questions, half easy, half hard.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the generated questions.")] = 1,
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies to compare.")] = "direct,auto",
    max_tokens: Annotated[int, typer.Option(min=16, max=4096, help="Cap on tokens per sample.")] = 160,
) -> None:
    """Compare strategies on seeded questions with the bundled model: answers, accuracy, cost."""
    try:
        specs = [parse_strategy(s.strip()).spec() for s in strategies.split(",") if s.strip()]
        store = TraceStore()
    except (StrategyError, StoreError) as exc:
        fail(str(exc))
    if not specs:
        fail("--strategies is empty")
    questions = _questions(size, seed)
    try:
        engine = create_engine("llamacpp")
    except (OSError, ValueError, RuntimeError) as exc:
        fail(f"cannot start the embedded engine: {exc}")
    try:
        answers = asyncio.run(_run(engine, questions, specs, store, max_tokens))
    except EngineError as exc:
        fail(f"the engine failed: {exc}", code=1)
    _show(questions, specs, answers)


def _questions(size: int, seed: int) -> list[Question]:
    out = []
    for level, (task, config) in (("easy", EASY), ("hard", HARD)):
        dataset = get_dataset(f"reasoning-gym:{task}", config)
        out += [Question(level, p, dataset) for p in dataset.load(size // 2, seed)]
    return out


async def _run(
    engine: Engine, questions: list[Question], specs: list[str], store: TraceStore, max_tokens: int
) -> dict[str, list[Answer]]:
    answers: dict[str, list[Answer]] = {spec: [] for spec in specs}
    try:
        for i, question in enumerate(questions, 1):
            for spec in specs:
                if stderr.is_terminal:  # a progress line, overwritten; nothing on a pipe
                    stderr.print(f"[dim]question {i}/{len(questions)} · {spec}[/]".ljust(60), end="\r")
                answers[spec].append(
                    await athink(
                        question.problem, strategy=spec, engine=engine, store=store, max_tokens=max_tokens
                    )
                )
    finally:
        await engine.aclose()
    return answers


def _show(questions: list[Question], specs: list[str], answers: dict[str, list[Answer]]) -> None:
    table = Table(title="what thinking bought (bundled model)", title_justify="left")
    table.add_column("question", overflow="fold", max_width=48)
    table.add_column("gold", justify="right")
    for spec in specs:
        table.add_column(spec, justify="right")
    correct = {spec: 0 for spec in specs}
    for i, (level, problem, dataset) in enumerate(questions):
        cells = []
        for spec in specs:
            answer = answers[spec][i]
            ok = dataset.grade(problem, answer.answer, answer.response)
            correct[spec] += ok
            cells.append(f"{answer.answer or '–'} {'[green]✓[/]' if ok else '[red]✗[/]'}")
        table.add_row(f"[dim]{level}[/] {problem.question}", problem.gold or "", *cells)
    n = len(questions)
    table.add_section()
    table.add_row("accuracy", "", *(f"{correct[s]}/{n}" for s in specs))
    table.add_row(
        "tokens / question",
        "",
        *(f"{sum(a.usage.completion_tokens for a in answers[s]) / n:.0f}" for s in specs),
    )
    table.add_row(
        "seconds / question", "", *(f"{sum(a.usage.seconds for a in answers[s]) / n:.1f}" for s in specs)
    )
    Console(highlight=False).print(table)
    stderr.print(
        "[dim]every answer's hidden thoughts: ponder traces list · ponder traces show ID · ponder ui[/]"
    )
