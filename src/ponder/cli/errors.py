"""One-line errors and exit code 2 for bad input, instead of tracebacks."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

stderr = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)
