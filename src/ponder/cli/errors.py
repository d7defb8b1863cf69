"""One-line errors and exit code 2 for bad input, instead of tracebacks."""

from __future__ import annotations

import math
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

stderr = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def shown(value: str, width: int = 60) -> str:
    """A user's value quoted for an error line: cut short, so a 100,000-character argument
    gives a one-line message, not a page."""
    text = value if len(value) <= width else f"{value[: width - 1]}… ({len(value):,} characters)"
    return repr(text)


def utf8(value: str | None, what: str) -> str | None:
    """`value` unchanged, or exit 2 when it is not text: Python keeps argv bytes that are
    not UTF-8 as lone surrogates, which SQLite, JSON and HTTP then refuse mid-run."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            fail(f"{what} is not valid UTF-8 text")
    return value


def positive_seconds(value: float, option: str, most: float) -> float:
    """A finite number of seconds in (0, most]: nan and inf pass a float parser and every
    comparison with them is False, so they would slip through a plain range check."""
    if not math.isfinite(value) or not 0 < value <= most:
        fail(f"{option} must be a number of seconds above 0 and at most {most:g}, got {value!r}")
    return value
