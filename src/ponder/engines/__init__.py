"""Engines: the only layer that talks to a model. Backends import lazily so that using
one does not require the others' dependencies (the embedded one needs `ponder[local]`)."""

from __future__ import annotations

from typing import Any

from ponder.engines.base import Completion, Engine, EngineError, GenerationRequest, Price, TokenLogprob

__all__ = [
    "ENGINES",
    "Completion",
    "Engine",
    "EngineError",
    "GenerationRequest",
    "Price",
    "TokenLogprob",
    "create_engine",
]

ENGINES = ("llamacpp", "openai")
LOCAL_EXTRA = "the embedded engine needs llama-cpp-python: pip install 'ponder[local]'"


def create_engine(
    name: str = "llamacpp",
    *,
    price_input: float | None = None,
    price_output: float | None = None,
    **options: Any,
) -> Engine:
    """Build an engine by name: "llamacpp" (embedded, bundled model by default) or
    "openai" (any OpenAI-compatible server). `price_input` / `price_output` are dollars per
    million input / output tokens (give both or neither); other options go to the engine's
    constructor, None meaning "the default"."""
    options = {k: v for k, v in options.items() if v is not None}
    price = Price.given(price_input, price_output)
    if price is not None:
        options["price"] = price
    if name == "llamacpp":
        try:
            from ponder.engines.llamacpp import LlamaCppEngine
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in ("llama_cpp", "numpy", "jinja2"):
                raise
            raise EngineError(f"{LOCAL_EXTRA} ({exc.name} is not installed)") from None
        return LlamaCppEngine(**options)
    if name == "openai":
        from ponder.engines.openai import OpenAIEngine

        return OpenAIEngine(**options)
    raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
