"""`ponder strategies`: what each strategy does and the parameters its spec takes."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ponder.cli.app import app
from ponder.strategies import REGISTRY


def describe() -> list[dict[str, Any]]:
    """Every registered strategy with its summary and parameters, sorted by name."""
    return [
        {
            "name": name,
            "summary": cls.summary,
            "parameters": [
                {"name": p, "type": t, "default": d, "help": h} for p, t, d, h in cls.parameters()
            ],
        }
        for name, cls in sorted(REGISTRY.items())
    ]


@app.command()
def strategies(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the strategies, their parameters and one-line descriptions.

    Use them as --strategy NAME:key=value,key=value (e.g. adaptive-consistency:max_n=16,batch=4).
    """
    items = describe()
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    console = Console(highlight=False)
    for item in items:
        console.print(f"[bold]{item['name']}[/]  {item['summary']}")
        if not item["parameters"]:
            console.print("  (no parameters)\n")
            continue
        table = Table(show_header=True, header_style="dim", box=None, padding=(0, 2), pad_edge=True)
        for column in ("parameter", "type", "default", "help"):
            table.add_column(column)
        for p in item["parameters"]:
            default = str(p["default"]).lower() if isinstance(p["default"], bool) else str(p["default"])
            table.add_row(p["name"], p["type"], default, p["help"])
        console.print(table)
        console.print()
