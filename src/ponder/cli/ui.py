"""`ponder ui`: the trace viewer over a local store, read-only, with no model loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ponder.cli.app import app
from ponder.cli.errors import fail
from ponder.store import StoreError, TraceStore, default_store_path


@app.command()
def ui(
    store: Annotated[
        Path | None, typer.Option(help="Trace database (default: $PONDER_HOME/traces.sqlite).")
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    host: Annotated[
        str, typer.Option(help="Address to listen on (the viewer has no login: keep it on loopback).")
    ] = "127.0.0.1",
) -> None:
    """Open the trace viewer: browse traces, watch a think live, see the spend."""
    if not 0 < port < 65536:
        fail("--port must be between 1 and 65535")
    try:
        import uvicorn

        from ponder.ui import create_ui_app
    except ImportError as exc:
        fail(f"the viewer needs its extra: pip install 'ponder[server]' ({exc.name} is missing)")
    path = store or default_store_path()
    try:
        opened = TraceStore(path, readonly=True)
    except StoreError as exc:
        fail(str(exc))
    shown = f"[{host}]" if ":" in host else host
    print(f"ponder ui: http://{shown}:{port}/ (store {path}, read-only; Ctrl-C stops)", flush=True)
    try:
        uvicorn.run(create_ui_app(opened), host=host, port=port, log_level="warning")
    finally:
        opened.close()
