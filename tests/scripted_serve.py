"""`ponder serve` as a real process with a scripted engine, for tests that kill it:
`python scripted_serve.py STORE PORT ENGINE` where ENGINE is `stuck` (every think hangs in
its first sample, holding its slot until the process dies) or `answer:TEXT` (every sample
is TEXT). One slot, a queue of four, API key "k"."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from fakes import ScriptedEngine
from ponder.engines.base import GenerationRequest
from ponder.server.run import server
from ponder.server.service import ServerConfig


async def _hang(_: GenerationRequest) -> None:
    await asyncio.Event().wait()


def main(store: str, port: str, engine_name: str) -> None:
    kind, _, text = engine_name.partition(":")
    engine = ScriptedEngine(["never"], before=_hang) if kind == "stuck" else ScriptedEngine([text])
    config = ServerConfig(store=Path(store), api_key="k", max_concurrent=1, queue=4, grace=1)
    server(config, "127.0.0.1", int(port), engine=engine).run()


if __name__ == "__main__":
    main(*sys.argv[1:])
