"""Every environment variable ponder reads, in one typed place.

Read with `settings()` at the moment a value is needed, never at import: tests and
long-lived processes change the environment between calls. Empty variables count as unset.
A malformed value is a `ValueError` naming the variable, not a silently ignored setting.

| variable                                   | field            | meaning                                   |
| ------------------------------------------ | ---------------- | ----------------------------------------- |
| PONDER_HOME                                | home             | traces and model cache directory          |
| PONDER_THREADS                             | threads          | CPU threads of the embedded engine        |
| PONDER_SANDBOX_ISOLATION                   | sandbox_isolation| "process" forces the sandbox's fallback   |
| PONDER_OPENAI_BASE_URL, OPENAI_BASE_URL    | openai_base_url  | the OpenAI-compatible server              |
| PONDER_API_KEY, OPENAI_API_KEY             | api_key          | its bearer token                          |
| PONDER_MODEL                               | model            | the model to ask it for                   |
| PONDER_PRICE_INPUT, PONDER_PRICE_OUTPUT    | price_input/...  | dollars per million prompt / output tokens|
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "settings"]


class Settings(BaseSettings):
    """ponder's environment, validated; see the module docstring for the variables."""

    model_config = SettingsConfigDict(env_prefix="PONDER_", env_ignore_empty=True, extra="ignore")

    home: Path | None = None
    threads: int | None = Field(default=None, ge=1)
    sandbox_isolation: Literal["auto", "namespaces", "process"] | None = None
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("PONDER_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("PONDER_API_KEY", "OPENAI_API_KEY")
    )
    model: str | None = None
    price_input: float | None = Field(default=None, ge=0)
    price_output: float | None = Field(default=None, ge=0)

    @field_validator("price_input", "price_output")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number of dollars per million tokens")
        return value


def settings() -> Settings:
    """The environment as it is now; a bad value raises ValueError naming its variable."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "PONDER_" + str(err["loc"][0]).upper() if err["loc"] else "a PONDER_ variable"
        raise ValueError(f"environment variable {name}: {err['msg']} (got {err.get('input')!r})") from None
