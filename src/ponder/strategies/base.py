"""The strategy contract and the `name:key=value,...` spec syntax shared by the CLI, the
API and (later) the server.

A strategy is a dataclass whose fields are its parameters; `run` reads like the paper's
pseudo-code and must be *anytime*: when the meter says stop, return the best so far.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from ponder.context import Context
from ponder.problem import Problem


@dataclass
class Result:
    """A strategy's pick: the canonical answer, the response shown to the user, its score,
    and the trace node it came from."""

    answer: str | None
    response: str
    score: float | None = None
    node: str | None = None
    response_tokens: int = 0


class StrategyError(ValueError):
    """An unknown strategy or a bad parameter."""


REGISTRY: dict[str, type[Strategy]] = {}


@dataclass
class Strategy(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            REGISTRY[cls.name] = cls

    @abstractmethod
    async def run(self, problem: Problem, ctx: Context) -> Result: ...

    def spec(self) -> str:
        """The CLI spec that rebuilds this strategy, non-default parameters only."""
        changed = [
            f"{f.name}={_format(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if f.init and _is_simple(f) and getattr(self, f.name) != _default(f)
        ]
        return self.name + (":" + ",".join(changed) if changed else "")

    @classmethod
    def parameters(cls) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, help) for each simple parameter."""
        hints = typing.get_type_hints(cls)
        return [
            (f.name, _type_name(hints[f.name]), _default(f), f.metadata.get("help", ""))
            for f in dataclasses.fields(cls)
            if f.init and _is_simple(f)
        ]


def parse_strategy(spec: str | Strategy, **overrides: Any) -> Strategy:
    """Build a strategy from "name" or "name:key=value,key=value" (e.g. "beam-search:width=4,expand=2")."""
    if isinstance(spec, Strategy):
        return spec
    import ponder.strategies  # noqa: F401  (fills the registry)

    name, _, arg_text = spec.strip().partition(":")
    cls = REGISTRY.get(name.strip())
    if cls is None:
        raise StrategyError(f"unknown strategy {name!r}: choose one of {', '.join(sorted(REGISTRY))}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in arg_text.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq:
            raw, eq = "true", "="  # bare flag: "weighted" means weighted=true
        if key not in fields or not _is_simple(fields[key]):
            known = ", ".join(p[0] for p in cls.parameters())
            raise StrategyError(f"strategy {name!r} has no parameter {key!r} (parameters: {known or 'none'})")
        kwargs[key] = _convert(name, key, raw.strip(), hints[key])
    for key, value in overrides.items():
        if value is not None and key in fields:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise StrategyError(f"strategy {name!r}: {exc}") from exc


def _convert(name: str, key: str, raw: str, hint: Any) -> Any:
    base = _base_type(hint)
    try:
        if base is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if base is int:
            return int(raw)
        if base is float:
            return float(raw)
        return raw
    except ValueError:
        raise StrategyError(
            f"strategy {name!r}: parameter {key!r} wants {_type_name(hint)}, got {raw!r}"
        ) from None


def _base_type(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    if typing.get_origin(hint) is typing.Literal:
        return str
    return hint


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "|".join(map(str, typing.get_args(hint)))
    base = _base_type(hint)
    return getattr(base, "__name__", str(base))


def _is_simple(f: dataclasses.Field[Any]) -> bool:
    return not f.metadata.get("nested", False)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _format(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
