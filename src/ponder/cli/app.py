"""The root typer app; each command module registers itself on it."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ponder",
    help="Think longer instead of bigger: inference-time scaling for any LLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
