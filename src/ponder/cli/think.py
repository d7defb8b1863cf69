"""`ponder think`: answer one question (or chat) with a strategy inside a budget."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ponder.budget import Budget, BudgetError, Meter
from ponder.cli.app import app
from ponder.cli.engine import EngineOptions, engine_options
from ponder.cli.errors import fail, shown, stderr, utf8
from ponder.engines.base import Engine, EngineError
from ponder.problem import Problem
from ponder.store import NodeRecord, StoreError, TraceStore
from ponder.strategies import Strategy, StrategyError, parse_strategy
from ponder.strategies.base import DEFAULT_STRATEGY
from ponder.think import Answer, athink
from ponder.verifiers import AllOf, Verifier, parse_verifier_spec

T = TypeVar("T")
MESSAGES_MAX_BYTES = 16 * 1024 * 1024  # a chat file larger than this is a mistake, not a prompt


@app.command()
@engine_options
def think(
    question: Annotated[
        str | None, typer.Argument(help="The question (optional with --messages: then the last user turn).")
    ] = None,
    strategy: Annotated[
        str, typer.Option("--strategy", "-s", help="Strategy spec, e.g. self-consistency:n=16.")
    ] = DEFAULT_STRATEGY,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples", "-n", help="Samples: the strategy's n, or its max_n (auto, adaptive-consistency)."
        ),
    ] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option("--budget", "-b", help="Limit: 30s, 2m, 4000tok, $0.02, 16 samples. Repeatable."),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option("--system", help="System prompt (ponder adds its answer-format instruction after it)."),
    ] = None,
    messages: Annotated[
        Path | None,
        typer.Option(
            "--messages",
            help="JSON file ('-' for stdin) with an OpenAI-style chat: a list of {role, content}, "
            "ending with the user's turn (or followed by QUESTION).",
        ),
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
    *,
    engine_options: EngineOptions,
) -> None:
    """Think about QUESTION and print the answer (on stdout; progress and cost on stderr).

    Exit 0 with an answer, 1 when the model could not be reached, 2 for bad input. With
    --verify, a failed check is reported on stderr (the answer is still printed).
    """
    if max_tokens < 1:
        fail("--max-tokens must be at least 1")
    try:
        problem = problem_from_options(question, system, messages, answer_format, gold)
        limits = Budget.parse(*(budget or []))
        chosen = parse_strategy(strategy)
        if samples is not None:  # the strategy's own sample count: n, or max_n for early stoppers
            takes = {p[0] for p in chosen.parameters()} & {"n", "max_n"}
            if not takes:
                fail(f"strategy {chosen.name!r} takes no --samples; use --budget '{samples} samples'")
            count: dict[str, Any] = {takes.pop(): samples}
            chosen = parse_strategy(strategy, **count)
        trace_store = TraceStore(store)
    except (BudgetError, StrategyError, StoreError, ValueError) as exc:
        fail(str(exc))
    eng = engine_options.create()
    try:
        verifier = _verifier(verify, eng)
    except ValueError as exc:
        fail(str(exc))
    meter = Meter(limits)
    verdicts = Verdicts()
    try:
        work = _run_with_progress(
            problem, chosen, meter, eng, verifier, trace_store, max_tokens, seed, verdicts
        )
        result = asyncio.run(closing(eng, work))
    except (StoreError, ValueError) as exc:  # a dollar budget with no price, a sampling setting out of range
        fail(str(exc))
    except EngineError as exc:  # the model could not be reached: what was thought is in the trace
        fail(f"the {engine_options.engine} engine failed: {exc}", code=1)
    _print(result, verdicts.of_answer() if verifier is not None else None, verifier, as_json, show_response)


def problem_from_options(
    question: str | None, system: str | None, messages: Path | None, answer_format: str, gold: str | None
) -> Problem:
    """The Problem the options describe: a question, a system prompt, a chat file, or a chat
    file with the question appended as the last user turn. ProblemError (a ValueError) when
    they do not make a chat."""
    utf8(question, "the question")
    utf8(system, "--system")
    utf8(gold, "--gold")
    if question is None and messages is None:
        fail("give a QUESTION, or --messages FILE.json with the chat")
    if question is not None and not question.strip():
        fail("the question is empty")
    options: dict[str, Any] = {"format": answer_format, "gold": gold}
    if messages is None:
        assert question is not None
        return Problem(question, system=system, **options)
    chat = read_messages(messages)
    if system is not None:
        chat.insert(0, {"role": "system", "content": system})
    if question is not None:
        chat.append({"role": "user", "content": question})
    return Problem.from_messages(chat, **options)


def read_messages(path: Path) -> list[Any]:
    """The JSON list in `path` ("-": stdin); exit 2 when it is unreadable or not a list."""
    name = "stdin" if str(path) == "-" else str(path)
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MESSAGES_MAX_BYTES + 1)
        else:
            with path.open("rb") as fh:
                data = fh.read(MESSAGES_MAX_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read --messages {shown(name)}: {exc.strerror or exc}")
    if len(data) > MESSAGES_MAX_BYTES:
        fail(f"--messages {shown(name)} is larger than {MESSAGES_MAX_BYTES // 2**20} MiB")
    try:
        chat = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        fail(f"--messages {shown(name)} is not UTF-8 text")
    except ValueError as exc:
        fail(f"--messages {shown(name)} is not valid JSON: {exc}")
    if not isinstance(chat, list):
        kind = type(chat).__name__
        fail(f"--messages {shown(name)} must hold a JSON list of {{role, content}} objects, not a {kind}")
    return chat


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


class Verdicts:
    """Listens to the trace for the verifier's verdicts, so the output can say whether the
    chosen answer passed: its verdict hangs from the same node as the answer."""

    def __init__(self) -> None:
        self.by_parent: dict[str | None, NodeRecord] = {}
        self.answer: NodeRecord | None = None

    def __call__(self, node: NodeRecord) -> None:
        if node.kind == "verdict":
            self.by_parent[node.parent_id] = node  # the latest verdict on a node counts
        elif node.kind == "answer":
            self.answer = node

    def of_answer(self) -> NodeRecord | None:
        return None if self.answer is None else self.by_parent.get(self.answer.parent_id)


async def _run_with_progress(
    problem: Problem,
    strategy: Strategy,
    meter: Meter,
    engine: Engine,
    verifier: Verifier | None,
    store: TraceStore,
    max_tokens: int,
    seed: int,
    on_node: Callable[[NodeRecord], None],
) -> Answer:
    def run(listener: Callable[[NodeRecord], None]) -> Awaitable[Answer]:
        return athink(
            problem,
            strategy=strategy,
            meter=meter,
            engine=engine,
            verifier=verifier,
            store=store,
            on_node=listener,
            max_tokens=max_tokens,
            seed=seed,
        )

    if not stderr.is_terminal:
        return await run(on_node)
    progress = Progress(
        TextColumn("[bold]thinking[/]"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
    )
    counts = {"sample": 0, "step": 0, "revision": 0}
    heard: set[str] = set()  # listeners hear a node again each time it grows: count it once
    total = meter.budget.seconds or getattr(strategy, "n", None)
    task = progress.add_task("think", total=total, status="")

    def count(node: NodeRecord) -> None:
        on_node(node)
        if node.kind in counts and node.id not in heard:
            heard.add(node.id)
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
            return await run(count)
        finally:
            ticker.cancel()


def write_text(text: str, *, bold: bool = False) -> None:
    """Model text on stdout, never hard-wrapped: a pipe or file gets the bytes as they are
    (code written with `> out.py` must parse); a terminal wraps long lines itself."""
    if sys.stdout.isatty():
        Console(highlight=False).print(text, markup=False, style="bold" if bold else None, soft_wrap=True)
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def verdict_summary(verdict: NodeRecord | None) -> tuple[bool, str]:
    """(passed, one line) for the chosen answer's verdict; no verdict means the strategy
    returned before its verifier checked this answer (or uses no verifier)."""
    if verdict is None:
        return False, "not verified: the strategy returned this answer without a verdict on it"
    name = verdict.meta.get("verifier") or "verifier"
    if verdict.meta.get("passed"):
        return True, f"{name} passed"
    lines = [line.strip() for line in verdict.text.splitlines() if line.strip()]
    first = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines[0] if lines else "")
    first = first if len(first) <= 160 else first[:159] + "…"
    score = f" (score {verdict.score:.2f})" if verdict.score is not None else ""
    return False, f"{name} failed{score}" + (f": {first}" if first else "")


def _print(
    result: Answer, verdict: NodeRecord | None, verifier: Verifier | None, as_json: bool, show_response: bool
) -> None:
    if as_json:
        payload: dict[str, Any] = {
            "answer": result.answer,
            "strategy": result.strategy,
            "trace_id": result.trace_id,
            "stopped_by": result.stopped_by,
            "usage": result.to_dict()["usage"],
            "model": result.model,
            "score": result.score,
        }
        if verifier is not None:
            payload["verdict"] = (
                None
                if verdict is None
                else {
                    "verifier": verdict.meta.get("verifier"),
                    "passed": bool(verdict.meta.get("passed")),
                    "score": verdict.score,
                    "feedback": verdict.text,
                }
            )
        if show_response:
            payload["response"] = result.response
        print(json.dumps(payload))
        return
    if show_response:
        write_text(result.response)
    write_text(result.answer if result.answer is not None else "(no answer)", bold=True)
    if verifier is not None:
        passed, line = verdict_summary(verdict)
        mark = f"[green]✓ {escape(line)}[/]" if passed else f"[bold yellow]✗ {escape(line)}[/]"
        stderr.print(mark, soft_wrap=True)
    u = result.usage
    stop = f" · stopped by {result.stopped_by}" if result.stopped_by else ""
    cost = f" · ${u.usd:.6f}" if u.usd else ""
    stderr.print(
        f"[dim]{escape(result.strategy)} · {u.reasoning_tokens} reasoning"
        f" + {u.completion_tokens - u.reasoning_tokens} answer tokens"
        f" · {u.seconds:.1f}s{cost}{stop} · trace {result.trace_id[:12]}[/]",
        soft_wrap=True,
    )
