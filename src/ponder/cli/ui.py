"""`ponder ui`: the trace viewer over a local store, read-only, with no model loaded."""

from __future__ import annotations

import socket
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
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    host: Annotated[
        str, typer.Option(help="Address to listen on (the viewer has no login: keep it on loopback).")
    ] = "127.0.0.1",
) -> None:
    """Open the trace viewer: browse traces, watch a think live, see the spend."""
    if not 0 <= port < 65536:
        fail("--port must be between 0 and 65535")
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
    listener = _listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"ponder ui: http://{shown}:{listener.getsockname()[1]}/ (store {path}, read-only; Ctrl-C stops)",
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(create_ui_app(opened), log_level="warning"))
    try:
        server.run(sockets=[listener])
    finally:
        opened.close()
        listener.close()


def _listen(host: str, port: int) -> socket.socket:
    """Bind before saying where to look, so a taken port or a bad host is one line, not a
    URL that answers nothing; port 0 takes a free one."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    return listener
