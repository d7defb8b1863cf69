"""Engines: the only layer that talks to a model. Backends import lazily so that using
one does not require the others' dependencies."""

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


def create_engine(name: str = "llamacpp", **options: Any) -> Engine:
    """Build an engine by name: "llamacpp" (embedded, bundled model by default) or
    "openai" (any OpenAI-compatible server). Options go to the engine's constructor."""
    options = {k: v for k, v in options.items() if v is not None}
    if name == "llamacpp":
        from ponder.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(**options)
    if name == "openai":
        from ponder.engines.openai import OpenAIEngine

        return OpenAIEngine(**options)
    raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
