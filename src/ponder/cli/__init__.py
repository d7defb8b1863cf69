"""The `ponder` command line. Each module registers its commands on the shared app."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.markup import escape

from ponder.cli import bench as _bench  # noqa: F401  (registers commands)
from ponder.cli import demo as _demo  # noqa: F401
from ponder.cli import serve as _serve  # noqa: F401
from ponder.cli import strategies as _strategies  # noqa: F401
from ponder.cli import think as _think  # noqa: F401
from ponder.cli import traces as _traces  # noqa: F401
from ponder.cli import ui as _ui  # noqa: F401
from ponder.cli import usage as _usage  # noqa: F401
from ponder.cli import verify as _verify  # noqa: F401
from ponder.cli.app import app
from ponder.cli.errors import stderr

__all__ = ["app", "main"]


def main() -> None:
    """Run the app. A usage error (a missing argument, "abc" for a number) is one line with
    the help command to try, like every other bad input, not a boxed usage panel."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's own click: UsageError, BadParameter, ...
        _usage_error(exc)
    except (typer.Abort, KeyboardInterrupt):
        print("ponder: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def _usage_error(exc: Any) -> None:
    if type(exc).__name__ == "NoArgsIsHelpError":  # `ponder` or `ponder traces` alone: the help
        exc.show()
        raise SystemExit(2)
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    stderr.print(f"[bold red]error:[/] {escape(exc.format_message())}{hint}", soft_wrap=True)
    raise SystemExit(getattr(exc, "exit_code", 2))
