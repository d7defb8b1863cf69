"""An engine as data: {name, options}, JSON-serialisable, so that a process that cannot be
handed an engine object (a Ray worker on another machine) builds its own from the same spec.

    >>> EngineSpec(name="openai", options={"base_url": "http://vllm:8000/v1"}).build()

`api_key` may be given as `api_key_env`, the name of an environment variable read where
the engine is built, so a key never travels inside the spec.
"""

from __future__ import annotations

import os
from typing import Any

import pydantic

from ponder.engines import ENGINES, create_engine
from ponder.engines.base import Engine

SECRET_OPTIONS = ("api_key",)


class EngineSpec(pydantic.BaseModel):
    """Which engine (`create_engine`'s name) and its constructor options (JSON values only)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    name: str = "llamacpp"
    options: dict[str, pydantic.JsonValue] = pydantic.Field(default_factory=dict)

    @pydantic.field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in ENGINES:
            raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
        return name

    def build(self) -> Engine:
        """The engine, made in this process (the model loads, or the client is set up, here)."""
        options: dict[str, Any] = dict(self.options)
        env = options.pop("api_key_env", None)
        if env is not None:
            key = os.environ.get(str(env))
            if not key:
                raise ValueError(f"api_key_env: the environment variable {env!r} is not set here")
            options["api_key"] = key
        return create_engine(self.name, **options)

    def label(self) -> str:
        """The spec without secrets, for logs and run headers."""
        shown = {k: v for k, v in self.options.items() if k not in SECRET_OPTIONS and v is not None}
        return self.name + "".join(f" {k}={v}" for k, v in sorted(shown.items()))
