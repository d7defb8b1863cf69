"""`ponder traces`: list and inspect persisted thoughts."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from ponder.cli.app import app
from ponder.cli.errors import fail, shown, utf8
from ponder.store import NodeRecord, StoreError, TraceRecord, TraceStore

traces_app = typer.Typer(help="List and inspect the hidden thoughts of past requests.", no_args_is_help=True)
app.add_typer(traces_app, name="traces")

ID_MAX_CHARS = 128  # trace ids are 32 hex digits; a longer "prefix" cannot match one

StoreOption = Annotated[
    Path | None, typer.Option(help="Trace database (default: $PONDER_HOME/traces.sqlite).")
]


def _open(store: Path | None) -> TraceStore:
    if store is not None and not store.exists():
        fail(f"no trace store at {store}")
    try:
        return TraceStore(store)
    except StoreError as exc:
        fail(str(exc))


def _find(store: Path | None, trace_id: str) -> TraceRecord:
    """The one trace `trace_id` starts, read whole; exit 2 when none (or a damaged store)."""
    utf8(trace_id, "the trace id")
    if not trace_id.strip() or len(trace_id) > ID_MAX_CHARS:
        fail(f"no single trace matches {shown(trace_id)}: give a trace id or its first characters")
    try:
        record = _open(store).get_trace(trace_id)
    except StoreError as exc:
        fail(str(exc))
    if record is None:
        fail(f"no single trace matches {shown(trace_id)}")
    return record


@traces_app.command("list")
def list_traces(
    store: StoreOption = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List recent traces, newest first."""
    if limit < 1:
        fail("--limit must be at least 1")
    try:
        records = _open(store).list_traces(limit)
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps([{k: v for k, v in r.to_dict().items() if k != "nodes"} for r in records]))
        return
    console = Console()
    wide = console.width >= 110  # on a narrow terminal the question matters more than the time
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    columns = [("id", 8), ("when", 11), ("strategy", 16), ("answer", 12), ("tokens", 6), ("stop", 7)]
    for column, width in columns if wide else [c for c in columns if c[0] not in ("when", "tokens")]:
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=width)
    table.add_column("question", overflow="fold", min_width=20)
    for r in records:
        when = datetime.fromtimestamp(r.created_at).strftime("%m-%d %H:%M")
        tokens = str((r.usage or {}).get("completion_tokens", ""))
        stop = r.stopped_by or ("" if r.status == "done" else r.status)
        answer, question = _short(r.answer or "", 16), _short(r.question, 80)
        row = [r.id[:8], when, escape(r.strategy), answer, tokens, stop, question]
        table.add_row(*(row if wide else [row[0], row[2], row[3], row[5], row[6]]))
    console.print(table)


@traces_app.command("show")
def show_trace(
    trace_id: Annotated[str, typer.Argument(help="Trace id (a unique prefix is enough).")],
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    full: Annotated[bool, typer.Option(help="Show whole texts, not previews.")] = False,
) -> None:
    """Show one trace as a tree of thoughts."""
    record = _find(store, trace_id)
    if as_json:
        print(json.dumps(record.to_dict()))
        return
    usage = record.usage or {}
    title = (
        f"[bold]{escape(record.question)}[/]\n{record.strategy} on {record.model} · {record.status}"
        f" · answer [bold]{_short(record.answer or '', 60)}[/] · {usage.get('completion_tokens', '?')} tokens"
        f" · {usage.get('seconds', '?')}s"
        + (f" · stopped by {record.stopped_by}" if record.stopped_by else "")
    )
    tree = Tree(title)
    branches: dict[str | None, Tree] = {None: tree}
    for node in record.nodes:
        parent = branches.get(node.parent_id, tree)
        branches[node.id] = parent.add(_label(node, full))
    Console().print(tree)


def _short(text: str, width: int) -> str:
    """One escaped line: model text may contain rich markup such as "[/]"."""
    flat = " ".join(text.split())
    return escape(flat if len(flat) <= width else flat[: width - 1] + "…")


def _label(node: NodeRecord, full: bool) -> str:
    text = escape(node.text) if full else _short(node.text, 90)
    parts = [f"[bold]{node.kind}[/]" + (" (greedy)" if node.meta.get("greedy") else "")]
    if node.answer is not None:
        parts.append(f"→ [cyan]{_short(node.answer, 40)}[/]")
    if node.score is not None:
        parts.append(f"score {node.score:.2f}")
    if node.completion_tokens:
        parts.append(f"{node.completion_tokens} tok")
    reason = node.meta.get("finish_reason")
    if reason and reason != "stop":
        parts.append(f"[yellow]{reason}[/]")
    if text and node.kind != "root":
        parts.append(f"[dim]{text}[/]")
    return " ".join(parts)
