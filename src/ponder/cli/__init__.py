"""The `ponder` command line. Each module registers its commands on the shared app."""

from __future__ import annotations

import sys

from ponder.cli import bench as _bench  # noqa: F401  (registers commands)
from ponder.cli import strategies as _strategies  # noqa: F401
from ponder.cli import think as _think  # noqa: F401
from ponder.cli import traces as _traces  # noqa: F401
from ponder.cli import ui as _ui  # noqa: F401
from ponder.cli import usage as _usage  # noqa: F401
from ponder.cli import verify as _verify  # noqa: F401
from ponder.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        print("ponder: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
