"""`ponder serve`: the OpenAI-compatible reasoning server."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ponder.budget import Budget
from ponder.cli.app import app
from ponder.cli.errors import fail
from ponder.settings import settings
from ponder.strategies import parse_strategy
from ponder.strategies.base import DEFAULT_STRATEGY

if TYPE_CHECKING:
    from ponder.server.service import ServerConfig


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 exposes it to the network).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    store: Annotated[
        Path | None, typer.Option(help="Trace database (default: $PONDER_HOME/traces.sqlite).")
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            help="Think with this OpenAI-compatible server (vLLM, llama.cpp, Ollama...) instead of"
            " the embedded model."
        ),
    ] = None,
    upstream_model: Annotated[
        str | None, typer.Option(help="Model name at the upstream (default: its first model).")
    ] = None,
    upstream_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the upstream's API key.")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Require 'Authorization: Bearer KEY' (default: $PONDER_SERVER_API_KEY; none: open)."
        ),
    ] = None,
    max_concurrent: Annotated[int, typer.Option(help="Thinks running at once.")] = 4,
    queue: Annotated[int, typer.Option(help="Requests waiting for a slot before 429.")] = 16,
    max_body: Annotated[int, typer.Option(help="Largest request body, in bytes.")] = 1 << 20,
    price_input: Annotated[
        float | None,
        typer.Option(help="Dollars per million prompt tokens, for usd budgets (or $PONDER_PRICE_INPUT)."),
    ] = None,
    price_output: Annotated[
        float | None,
        typer.Option(help="Dollars per million completion tokens (or $PONDER_PRICE_OUTPUT)."),
    ] = None,
    strategy: Annotated[
        str, typer.Option(help="Strategy for requests that choose none (see the README's server section).")
    ] = DEFAULT_STRATEGY,
    budget: Annotated[
        str, typer.Option(help="Budget for requests that give none, e.g. '60s,8000tok'.")
    ] = "60s",
    max_seconds: Annotated[float, typer.Option(help="Longest think any request may ask for.")] = 600.0,
    grace: Annotated[float, typer.Option(help="Seconds a shutdown waits for in-flight thinks.")] = 10.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve ponder over the OpenAI API: point any client's base_url at http://HOST:PORT/v1."""
    try:
        from ponder.server.run import server
    except ImportError as exc:
        fail(f"the server needs its extra: pip install 'ponder[server]' ({exc.name} is missing)")
    if not 0 < port < 65536:
        fail("--port must be between 1 and 65535")
    if upstream is None and (upstream_model or upstream_key_env):
        fail("--upstream-model and --upstream-key-env need --upstream URL")
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        fail("--log-level must be debug, info, warning or error")
    try:
        if price_input is None and price_output is None:
            env = settings()
            price_input, price_output = env.price_input, env.price_output
        from ponder.server.plan import Defaults
        from ponder.server.service import ServerConfig

        parse_strategy(strategy)
        defaults = Defaults(strategy=strategy, budget=Budget.parse(budget), cap=Budget(seconds=max_seconds))
        config = ServerConfig(
            store=store,
            upstream=upstream,
            upstream_model=upstream_model,
            upstream_key_env=upstream_key_env,
            api_key=api_key or os.environ.get("PONDER_SERVER_API_KEY") or None,
            max_concurrent=max_concurrent,
            queue=queue,
            max_body=max_body,
            price_input=price_input,
            price_output=price_output,
            grace=grace,
            defaults=defaults,
        )
    except ValueError as exc:
        fail(str(exc))
    if upstream is not None:
        _check_upstream(config)
    logging.basicConfig(level=log_level.upper(), format="%(message)s", stream=sys.stderr)
    try:
        server(config, host, port, log_level=log_level.lower()).run()
    except (OSError, ValueError, RuntimeError) as exc:
        fail(f"the server stopped: {exc}", code=1)


def _check_upstream(config: ServerConfig) -> None:
    """Ask the upstream for its model before serving, so a wrong URL or key is one line now
    rather than a failed start-up later."""
    from ponder.engines.base import EngineError

    async def check() -> str:
        engine = config.engine()
        try:
            return await engine.ensure_model()  # type: ignore[attr-defined]
        finally:
            await engine.aclose()

    try:
        model = asyncio.run(check())
    except (EngineError, ValueError) as exc:
        fail(f"cannot use the upstream {config.upstream}: {exc}", code=1)
    print(f"upstream {config.upstream}: model {model}", file=sys.stderr)
