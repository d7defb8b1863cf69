"""Running the app under uvicorn with a shutdown that is graceful for thinks: on SIGINT /
SIGTERM the `stopping` flag is raised at once (job event streams end, new requests are
refused by uvicorn), open requests get `grace` seconds to finish, then jobs get theirs, and
whatever still thinks is cancelled and marked "interrupted" in the store."""

from __future__ import annotations

import threading
from types import FrameType

import uvicorn

from ponder.engines.base import Engine
from ponder.server.app import create_app
from ponder.server.service import ServerConfig
from ponder.store import TraceStore


class PonderServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()
        super().handle_exit(sig, frame)

    def stop(self) -> None:
        """Begin a graceful shutdown from another thread (what a signal does)."""
        self.stopping.set()
        self.should_exit = True


def server(
    config: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    engine: Engine | None = None,
    store: TraceStore | None = None,
    log_level: str = "warning",
) -> PonderServer:
    stopping = threading.Event()
    app = create_app(config, engine=engine, store=store, stopping=stopping)
    settings = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level=log_level,
        access_log=False,  # ponder.server.access logs each request as one JSON line instead
        timeout_graceful_shutdown=max(1, round(config.grace)),
        lifespan="on",
    )
    return PonderServer(settings, stopping)
