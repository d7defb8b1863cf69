"""`ponder strategies`: what each strategy does, the parameters its spec takes, and (with
--json) each one's JSON Schema, the same data a server accepts as a strategy."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ponder.cli.app import app
from ponder.strategies import REGISTRY


def describe() -> list[dict[str, Any]]:
    """Every registered strategy with its summary, parameters and JSON Schema, sorted by name."""
    return [
        {
            "name": name,
            "summary": cls.summary,
            "parameters": [p._asdict() for p in cls.parameters(nested=True)],
            "schema": cls.json_schema(),
        }
        for name, cls in sorted(REGISTRY.items())
    ]


@app.command()
def strategies(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list: name, summary, parameters, JSON Schema.")
    ] = False,
) -> None:
    """List the strategies, their parameters and one-line descriptions.

    Use them as --strategy NAME:key=value,key=value (e.g. adaptive-consistency:max_n=16,batch=4).
    A strategy parameter nests another in parentheses (best-of-n:n=4,of=(refine:max_rounds=2)); a
    value with commas, parentheses or quotes goes in double quotes (budget-forcing:wait="Hmm, wait").
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
        for column in ("parameter", "type", "range", "default", "help"):
            table.add_column(column)
        properties = item["schema"]["properties"]
        for p in item["parameters"]:
            default = (
                json.dumps(p["default"])
                if p["default"] is None or isinstance(p["default"], bool)
                else str(p["default"])
            )
            table.add_row(p["name"], p["type"], _range(properties[p["name"]]), default, p["help"])
        console.print(table)
        console.print()


def _range(schema: dict[str, Any]) -> str:
    """A parameter's allowed numbers from its JSON Schema: "[0, 2]", "(0, 1]", ">= 1"."""
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    opening = "[" if "minimum" in schema else "("
    closing = "]" if "maximum" in schema else ")"
    if low is not None and high is not None:
        return f"{opening}{_number(low)}, {_number(high)}{closing}"
    if low is not None:
        return f"{'>=' if opening == '[' else '>'} {_number(low)}"
    if high is not None:
        return f"{'<=' if closing == ']' else '<'} {_number(high)}"
    return ""


def _number(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"
