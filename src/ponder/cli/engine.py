"""The engine options `ponder think` and `ponder bench` share, checked before any model is
loaded or any server is called."""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from ponder.cli.errors import fail, shown
from ponder.engines import ENGINES
from ponder.engines.base import Engine
from ponder.engines.spec import EngineSpec

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
        "(default: from the environment, see the README).",
    ),
]
ModelPath = Annotated[
    Path | None, typer.Option(help="GGUF file for the embedded engine (default: bundled SmolLM2-135M).")
]
PriceInput = Annotated[
    float | None,
    typer.Option(
        help="Dollars per million prompt tokens (with --price-output), for usage and --budget '$0.02'."
    ),
]
PriceOutput = Annotated[
    float | None, typer.Option(help="Dollars per million completion tokens (with --price-input).")
]
ApiKeyEnv = Annotated[
    str | None,
    typer.Option(
        help="Environment variable holding the openai engine's API key (default: see the README).",
    ),
]


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class EngineOptions:
    """What the command line says about the engine; `check` exits 2 on anything wrong."""

    engine: EngineName = "llamacpp"
    model: ModelName = None
    base_url: BaseUrl = None
    model_path: ModelPath = None
    price_input: PriceInput = None
    price_output: PriceOutput = None
    api_key_env: ApiKeyEnv = None

    def check(self) -> EngineOptions:
        if self.engine not in ENGINES:
            fail(f"unknown engine {shown(self.engine)}: choose one of {', '.join(ENGINES)}")
        for option, price in (("--price-input", self.price_input), ("--price-output", self.price_output)):
            if price is not None and (not math.isfinite(price) or price < 0):
                fail(f"{option} must be a number of dollars per million tokens, 0 or more; got {price!r}")
        if (self.price_input is None) != (self.price_output is None):
            fail("give both --price-input and --price-output (dollars per million tokens), or neither")
        if self.engine == "llamacpp":
            given = [o for o, v in (("--base-url", self.base_url), ("--api-key-env", self.api_key_env)) if v]
            if given:
                fail(f"{' and '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} to --engine openai")
            return self
        if self.model_path is not None:
            fail("--model-path only applies to --engine llamacpp")
        # no --base-url: the engine falls back to its environment variables, or says what to set
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            fail(f"--base-url must start with http:// or https://, got {shown(self.base_url)}")
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            fail(f"--api-key-env: the environment variable {shown(self.api_key_env)} is not set")
        return self

    def create(self) -> Engine:
        """The engine; exit 2 when it cannot start (a missing GGUF file, no server URL)."""
        try:
            return self.spec().build()
        except (OSError, ValueError, RuntimeError) as exc:
            fail(f"cannot start the {self.engine} engine: {exc}")

    def spec(self) -> EngineSpec:
        """The engine as data, for workers that build their own (a Ray executor)."""
        options: dict[str, Any] = {}
        if self.price_input is not None:  # only when given: an engine without one keeps its own
            options.update(price_input=self.price_input, price_output=self.price_output)
        if self.engine == "llamacpp":
            if self.model_path is not None:
                options["model_path"] = str(self.model_path)
            return EngineSpec(name="llamacpp", options=options)
        given = {"base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env}
        return EngineSpec(name="openai", options={**options, **{k: v for k, v in given.items() if v}})

    def label(self) -> str:
        """What a resumed bench run must share with the rows already written."""
        prices = "" if self.price_input is None else f" ${self.price_input:g}/${self.price_output:g} per M"
        if self.engine == "openai":
            return f"openai:{self.model}@{self.base_url}{prices}"
        return (f"llamacpp:{self.model_path}" if self.model_path else "llamacpp") + prices


def engine_options(command: F) -> F:
    """Give a typer command the engine options (declared once, as EngineOptions' fields):
    the command takes `engine_options: EngineOptions`, already checked."""
    own = inspect.signature(command, eval_str=True)
    hints = get_type_hints(EngineOptions, include_extras=True)
    added = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
        for f in fields(EngineOptions)
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        given = {f.name: kwargs.pop(f.name) for f in fields(EngineOptions)}
        return command(**kwargs, engine_options=EngineOptions(**given).check())

    kept = [p for p in own.parameters.values() if p.name != "engine_options"]
    wrapper.__signature__ = own.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in (*kept, *added)}
    return wrapper  # type: ignore[return-value]
