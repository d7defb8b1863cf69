"""`ponder usage`: where the tokens went over a period, by strategy, day or model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ponder.cli.app import app
from ponder.cli.errors import fail
from ponder.store import default_store_path
from ponder.usage import BY, Group, UsageError, parse_since, spend


@app.command()
def usage(
    since: Annotated[
        str | None, typer.Option(help="Only traces started this long ago or later: 30m, 12h, 7d, 2w.")
    ] = None,
    by: Annotated[str | None, typer.Option(help="Group by strategy, day or model.")] = None,
    store: Annotated[
        Path | None, typer.Option(help="Trace database (default: $PONDER_HOME/traces.sqlite).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Tokens (prompt, reasoning, answer), seconds and dollars spent, and how much of the
    reasoning changed the answer (final answer differs from the greedy or first sample's)."""
    if by is not None and by not in BY:
        fail(f"--by must be one of {', '.join(BY)}, not {by!r}")
    try:
        result = spend(store or default_store_path(), since=parse_since(since), by=by)
    except UsageError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"spend {'since ' + since if since else 'of all time'} (tokens)",
        caption="changed: share of reasoning tokens in traces whose answer differs from the greedy or"
        " first sample's (how many traces)",
    )
    table.add_column(by or "", overflow="fold")
    for name in ("traces", "prompt", "reasoning", "answer", "seconds", "dollars", "changed"):
        table.add_column(name, justify="right", no_wrap=True)
    for group in [*result.groups, result.total]:
        table.add_row(*_cells(group), end_section=group is result.groups[-1] if result.groups else False)
    Console().print(table)


def _cells(g: Group) -> list[str]:
    share = "–" if g.changed_share is None else f"{g.changed_share:.0%}"
    return [
        escape(g.key),
        f"{g.traces:,}",
        f"{g.prompt_tokens:,}",
        f"{g.reasoning_tokens:,}",
        f"{g.answer_tokens:,}",
        f"{g.seconds:,.1f}",
        f"${g.usd:,.4f}",
        f"{share} ({g.changed_traces:,})",
    ]
