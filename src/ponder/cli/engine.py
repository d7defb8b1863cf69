"""The engine options `ponder think` and `ponder bench` share, checked before any model is
loaded or any server is called."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ponder.cli.errors import fail, shown
from ponder.engines import ENGINES, create_engine
from ponder.engines.base import Engine

BASE_URL_ENV = ("PONDER_BASE_URL", "OPENAI_BASE_URL")

EngineName = Annotated[
    str, typer.Option("--engine", help="llamacpp (embedded) or openai (any OpenAI-compatible server).")
]
ModelName = Annotated[
    str | None, typer.Option(help="Model name for the openai engine (default: the server's first model).")
]
BaseUrl = Annotated[
    str | None,
    typer.Option(
        help="Server URL for the openai engine, e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1 "
        "(default: $PONDER_BASE_URL, $OPENAI_BASE_URL).",
    ),
]
ModelPath = Annotated[
    Path | None, typer.Option(help="GGUF file for the embedded engine (default: bundled SmolLM2-135M).")
]
PriceInput = Annotated[
    float | None,
    typer.Option(help="Dollars per million prompt tokens (openai engine), for --budget '$0.02' and usage."),
]
PriceOutput = Annotated[
    float | None, typer.Option(help="Dollars per million completion tokens (openai engine).")
]
ApiKeyEnv = Annotated[
    str | None,
    typer.Option(
        help="Environment variable holding the API key (default: $PONDER_API_KEY, then $OPENAI_API_KEY).",
    ),
]


@dataclass(frozen=True)
class EngineOptions:
    """What the command line says about the engine; `check` exits 2 on anything wrong."""

    engine: str = "llamacpp"
    model: str | None = None
    base_url: str | None = None
    model_path: Path | None = None
    price_input: float | None = None
    price_output: float | None = None
    api_key_env: str | None = None

    def check(self) -> EngineOptions:
        if self.engine not in ENGINES:
            fail(f"unknown engine {shown(self.engine)}: choose one of {', '.join(ENGINES)}")
        for option, price in (("--price-input", self.price_input), ("--price-output", self.price_output)):
            if price is not None and (not math.isfinite(price) or price < 0):
                fail(f"{option} must be a number of dollars per million tokens, 0 or more; got {price!r}")
        if self.engine == "llamacpp":
            given = [
                option
                for option, value in (
                    ("--base-url", self.base_url),
                    ("--price-input", self.price_input),
                    ("--price-output", self.price_output),
                    ("--api-key-env", self.api_key_env),
                )
                if value is not None
            ]
            if given:
                fail(f"{', '.join(given)} only apply to --engine openai")
            return self
        if self.model_path is not None:
            fail("--model-path only applies to --engine llamacpp")
        url = self.base_url or next((os.environ[v] for v in BASE_URL_ENV if os.environ.get(v)), None)
        if url is None:
            fail(
                "--engine openai needs --base-url, e.g. http://127.0.0.1:8000/v1 for a local server "
                "or https://api.openai.com/v1 (or set $PONDER_BASE_URL)"
            )
        if not url.startswith(("http://", "https://")):
            fail(f"the base URL must start with http:// or https://, got {shown(url)}")
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            fail(f"--api-key-env: the environment variable {shown(self.api_key_env)} is not set")
        return self

    def create(self) -> Engine:
        """The engine; exit 2 when it cannot start (a missing GGUF file, say)."""
        try:
            if self.engine == "llamacpp":
                return create_engine("llamacpp", model_path=self.model_path)
            return create_engine("openai", **self._openai_options())
        except (OSError, ValueError, RuntimeError) as exc:
            fail(f"cannot start the {self.engine} engine: {exc}")

    def _openai_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"base_url": self.base_url, "model": self.model}
        if self.api_key_env is not None:
            options["api_key"] = os.environ[self.api_key_env]
        # prices go only when given: an engine without them keeps its own default
        if self.price_input is not None:
            options["price_input"] = self.price_input
        if self.price_output is not None:
            options["price_output"] = self.price_output
        return options

    def label(self) -> str:
        """What a resumed bench run must share with the rows already written."""
        if self.engine == "openai":
            prices = (
                f" ${self.price_input or 0:g}/${self.price_output or 0:g} per M"
                if self.price_input is not None or self.price_output is not None
                else ""
            )
            return f"openai:{self.model}@{self.base_url}{prices}"
        return f"llamacpp:{self.model_path}" if self.model_path else "llamacpp"
