"""The strategy contract, and strategies as data: validated parameters, a spec string, a JSON
form and a JSON Schema, all read off the dataclass fields.

A strategy is a dataclass whose fields are its parameters; `run` reads like the paper's
pseudo-code and must be *anytime*: when the meter says stop, return the best so far.

A field's `metadata` holds its help text and its range (`ge`, `gt`, `le`, `lt`,
`min_length`; numbers are finite unless `allow_inf` or the default is infinite, never NaN);
pydantic checks every value against the field's type and range when the strategy is built,
so `SelfConsistency(n=0)`, `temperature=nan` and a misspelt choice are a `StrategyError`
naming the strategy and the parameter. A field typed `Strategy` (e.g.
`BestOfN.of`) takes a nested strategy, a field typed `Verifier` a verifier spec
(`ponder.verifiers.parse_verifier_spec`); both round-trip through `spec()` / `to_dict()`:

    best-of-n:n=4,of=(refine:max_rounds=2,verifier=math)
    {"name": "best-of-n", "n": 4, "of": {"name": "refine", "max_rounds": 2, "verifier": "math"}}

The text grammar is in `ponder.strategies.spec`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, NamedTuple

import pydantic

from ponder.context import Context
from ponder.problem import Problem
from ponder.strategies.spec import SpecSyntaxError, format_value, split_spec
from ponder.verifiers import SPEC_HELP, parse_verifier_spec, verifier_spec
from ponder.verifiers.base import Verifier

if TYPE_CHECKING:
    from ponder.engines.base import Engine

#: the most samples (or beams, particles, iterations) one strategy may ask for
MAX_COUNT = 1_000_000
#: ranges shared by many strategies, for a field's metadata: {"help": ..., **TEMPERATURE}
TEMPERATURE: dict[str, Any] = {"ge": 0.0, "le": 2.0}
TOP_P: dict[str, Any] = {"gt": 0.0, "le": 1.0}
COUNT: dict[str, Any] = {"ge": 1, "le": MAX_COUNT}
#: deepest nesting of strategies in one spec (best-of-n of refine is 2)
MAX_DEPTH = 32

_CONSTRAINTS = ("ge", "gt", "le", "lt", "min_length")
Kind = Literal["value", "strategy", "verifier"]


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
    """An unknown strategy, a malformed spec or a bad parameter."""


class Parameter(NamedTuple):
    name: str
    type: str
    default: Any
    help: str


REGISTRY: dict[str, type[Strategy]] = {}
#: what ponder thinks with when nobody says: cheap first, more only where it pays
DEFAULT_STRATEGY = "auto"


@dataclass
class Strategy(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            REGISTRY[cls.name] = cls
        own = cls.__dict__.get("__post_init__")
        if own is not None:  # a subclass's checks across fields run on checked values

            @functools.wraps(own)
            def checked_first(self: Strategy) -> None:
                Strategy._check_parameters(self)
                try:
                    own(self)
                except StrategyError:
                    raise
                except ValueError as exc:  # a check that did not say which strategy
                    raise StrategyError(f"strategy {self.name!r}: {exc}") from None

            cls.__post_init__ = checked_first  # type: ignore[method-assign]

    def __post_init__(self) -> None:
        """Check every parameter against its type and range, converting where pydantic's lax
        mode does ("4" -> 4 for an int field). A subclass's own `__post_init__` (checks across
        fields) runs after this, without calling super()."""
        self._check_parameters()

    def _check_parameters(self) -> None:
        values = {name: getattr(self, name) for name in _model(type(self)).model_fields}
        for name, value in _check(type(self), values).items():
            setattr(self, name, value)
        for name, kind in _fields(type(self)).items():
            value = getattr(self, name)
            wanted = {"strategy": Strategy, "verifier": Verifier}.get(kind)
            if wanted is not None and value is not None and not isinstance(value, wanted):
                raise self.invalid(name, f"wants a {kind}, got {type(value).__name__}")

    def invalid(self, parameter: str, why: str) -> StrategyError:
        """The error for a bad value of `parameter`, e.g. `raise self.invalid("n", "must be even")`."""
        return StrategyError(f"strategy {self.name!r}: parameter {parameter} {why}")

    @abstractmethod
    async def run(self, problem: Problem, ctx: Context) -> Result: ...

    def spec(self) -> str:
        """The spec string that rebuilds this strategy: its non-default parameters, nested
        strategies in parentheses. A verifier object not built from a spec has no spec and is
        left out."""
        items = [f"{key}={_format(value)}" for key, value in self._changed().items()]
        return self.name + (":" + ",".join(items) if items else "")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of `spec()`: {"name": ..., parameter: value, ...}, nested strategies
        as dicts, verifiers as spec strings."""
        data: dict[str, Any] = {"name": self.name}
        for key, value in self._changed().items():
            data[key] = value.to_dict() if isinstance(value, Strategy) else value
        return data

    def _changed(self) -> dict[str, Any]:
        """The non-default parameters with a spec (verifiers replaced by theirs)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.init or value == _default(f):
                continue
            if _fields(type(self))[f.name] == "verifier":
                value = verifier_spec(value)
            if value is not None:
                out[f.name] = value
        return out

    @classmethod
    def parameters(cls, nested: bool = False) -> list[Parameter]:
        """(name, type, default, help) of each parameter; strategy and verifier fields (type
        "strategy" / "verifier") only when `nested`."""
        hints = typing.get_type_hints(cls)
        return [
            Parameter(
                f.name,
                kind if kind != "value" else _type_name(hints[f.name]),
                _default(f),
                f.metadata.get("help", ""),
            )
            for f in dataclasses.fields(cls)
            if (kind := _fields(cls).get(f.name)) and (nested or kind == "value")
        ]

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of this strategy's `to_dict()` form. A strategy-valued parameter
        refers to `#/$defs/strategy`: any registered strategy, as a spec string or an object."""
        schema = _object_schema(cls)
        if "strategy" in _fields(cls).values():
            schema["$defs"] = _all_defs()
        return {"$schema": _DIALECT, **schema}


def strategy_json_schema() -> dict[str, Any]:
    """The JSON Schema of any strategy: a spec string, or an object whose "name" picks the
    strategy (what a server accepts as a strategy)."""
    import ponder.strategies  # noqa: F401  (fills the registry)

    return {"$schema": _DIALECT, "$ref": "#/$defs/strategy", "$defs": _all_defs()}


def parse_strategy(
    spec: str | Mapping[str, Any] | Strategy, *, engine: Engine | None = None, **overrides: Any
) -> Strategy:
    """A strategy from a spec string ("beam-search:width=4,expand=2",
    "best-of-n:n=4,of=(refine:max_rounds=2)") or its JSON form ({"name": "best-of-n", "n": 4},
    also as a JSON string); `overrides` that are not None and name a parameter replace the
    spec's value. `engine` is what `judge` / `reward` verifier specs inside it grade with."""
    if isinstance(spec, Strategy):
        return spec
    import ponder.strategies  # noqa: F401  (fills the registry)

    overrides = {k: v for k, v in overrides.items() if v is not None}
    return _build(spec, overrides, engine, depth=1)


def _build(spec: object, overrides: dict[str, Any], engine: Engine | None, depth: int) -> Strategy:
    if depth > MAX_DEPTH:
        raise StrategyError(f"strategies nested more than {MAX_DEPTH} deep")
    name, params = _split(spec)
    cls = REGISTRY.get(name)
    if cls is None:
        raise StrategyError(f"unknown strategy {name!r:.100}{_guess(name, REGISTRY)}")
    kinds = _fields(cls)
    kwargs: dict[str, Any] = {}
    for raw_key, value in params:
        key = str(raw_key).replace("-", "_")
        if key not in kinds:
            raise StrategyError(f"strategy {name!r} has no parameter {raw_key!r:.100}{_guess(key, kinds)}")
        if key in kwargs:
            raise StrategyError(f"strategy {name!r}: parameter {key} given twice")
        if kinds[key] == "strategy" and value is not None and not isinstance(value, Strategy):
            value = _build(value, {}, engine, depth + 1)
        elif kinds[key] == "verifier" and isinstance(value, str):
            try:
                value = parse_verifier_spec(value, engine=engine)
            except ValueError as exc:
                raise StrategyError(f"strategy {name!r}: parameter {key}: {exc}") from None
        kwargs[key] = value
    kwargs.update((k, v) for k, v in overrides.items() if k in kinds)
    return cls(**kwargs)


def _split(spec: object) -> tuple[str, Sequence[tuple[object, Any]]]:
    """(name, [(key, value), ...]) of a spec string, a JSON object or its JSON text."""
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        try:
            spec = json.loads(spec)
        except (ValueError, RecursionError) as exc:
            raise StrategyError(f"bad JSON strategy: {exc}") from None
    if isinstance(spec, str):
        try:
            return split_spec(spec)
        except SpecSyntaxError as exc:
            raise StrategyError(f"malformed strategy spec: {exc}") from None
    if not isinstance(spec, Mapping):
        raise StrategyError(f"a strategy is a spec string or an object, not {type(spec).__name__}")
    name = spec.get("name")
    if not isinstance(name, str):
        raise StrategyError(f'a strategy object needs a "name" (a strategy name), got {spec!r:.200}')
    return name, [(k, v) for k, v in spec.items() if k != "name"]


def _guess(word: str, choices: Iterable[str]) -> str:
    """The tail of an unknown-name error: "; did you mean 'x'? (choose from: a, b, c)"."""
    names = sorted(choices)
    close = difflib.get_close_matches(word, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (choose from: {', '.join(names) or 'none'})"


# --- fields, types and schemas -----------------------------------------------------------------

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@functools.cache
def _fields(cls: type[Strategy]) -> dict[str, Kind]:
    """Each init parameter's kind: a plain value, a nested strategy or a verifier."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Kind] = {}
    for f in dataclasses.fields(cls):
        if f.init:
            base = _base_type(hints[f.name])
            nested = isinstance(base, type) and issubclass(base, Strategy)
            out[f.name] = "strategy" if nested else "verifier" if base is Verifier else "value"
    return out


@functools.cache
def _model(cls: type[Strategy]) -> type[pydantic.BaseModel]:
    """A pydantic model of the plain-value parameters: the types, ranges and help texts."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if _fields(cls).get(f.name) != "value":
            continue
        hint = hints[f.name]
        constraints = {k: f.metadata[k] for k in _CONSTRAINTS if k in f.metadata}
        checks: list[Any] = []
        if _base_type(hint) in (int, float):
            # infinity only where it means something ("allow_inf", or an infinite default)
            infinite = f.metadata.get("allow_inf", False) or _infinite(_default(f))
            constraints["allow_inf_nan"] = infinite
            checks.append(pydantic.BeforeValidator(_no_bool))  # after Field: the schema keeps the range
            if infinite:
                checks.append(pydantic.AfterValidator(_no_nan))
        info = pydantic.Field(description=f.metadata.get("help") or None, **constraints)
        fields[f.name] = (Annotated[hint, info, *checks], _default(f))
    config = pydantic.ConfigDict(extra="forbid", title=cls.name)
    return pydantic.create_model(cls.__name__, __config__=config, **fields)


def _check(cls: type[Strategy], values: dict[str, Any]) -> dict[str, Any]:
    """`values` (plain parameters) checked against their types and ranges, converted."""
    model = _model(cls)
    try:
        checked = model.model_validate(values)
    except pydantic.ValidationError as exc:
        raise StrategyError(_explain(cls.name, exc)) from None
    return {name: getattr(checked, name) for name in values}


def _no_bool(value: Any) -> Any:
    """True is not a count (pydantic's lax mode would read it as 1)."""
    if isinstance(value, bool):
        raise ValueError("a number, not a boolean")
    return value


def _no_nan(value: float) -> float:
    if math.isnan(value):
        raise ValueError("a number, not NaN")
    return value


def _object_schema(cls: type[Strategy]) -> dict[str, Any]:
    schema = _model(cls).model_json_schema()
    properties: dict[str, Any] = {"name": {"const": cls.name}}
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
    for key, kind in _fields(cls).items():
        if kind == "value":  # (JSON has no infinity: an infinite default is left unsaid)
            prop = schema["properties"][key]
            properties[key] = {k: v for k, v in prop.items() if k != "title" and not _infinite(v)}
            continue
        one = (
            {"$ref": "#/$defs/strategy"}
            if kind == "strategy"
            else {"type": "string", "description": f"a verifier spec: {SPEC_HELP}"}
        )
        properties[key] = {"anyOf": [one, {"type": "null"}], "default": None}
        if helps[key]:
            properties[key]["description"] = helps[key]
    return {
        "title": cls.name,
        "description": cls.summary,
        "type": "object",
        "properties": properties,
        "required": ["name"],
        "additionalProperties": False,
    }


def _all_defs() -> dict[str, Any]:
    defs: dict[str, Any] = {name: _object_schema(REGISTRY[name]) for name in sorted(REGISTRY)}
    defs["strategy"] = {
        "anyOf": [
            {"type": "string", "description": "a strategy spec, e.g. best-of-n:n=4,of=(refine:max_rounds=2)"},
            {"oneOf": [{"$ref": f"#/$defs/{name}"} for name in sorted(REGISTRY)]},
        ]
    }
    return defs


def _explain(name: str, exc: pydantic.ValidationError) -> str:
    """One line per the first error: the strategy, the parameter, what it wants, what it got."""
    error = exc.errors()[0]
    key = ".".join(map(str, error["loc"]))
    ctx = error.get("ctx") or {}
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    kind = error["type"]
    number = _number(error.get("input"))
    if number is not None and math.isnan(number):
        why = "must be a number, not NaN"
    elif kind == "finite_number" or (kind in bounds and number is not None and math.isinf(number)):
        why = "must be a finite number"
    elif kind in bounds:
        why = f"must be {bounds[kind]} {next(iter(ctx.values()))}"
    elif kind == "string_too_short":
        why = "must not be empty"
    elif kind == "literal_error":
        why = f"must be {ctx.get('expected')}"
    elif kind == "extra_forbidden":
        why = "is no parameter"
    else:
        hint = typing.get_type_hints(REGISTRY[name]).get(key) if name in REGISTRY else None
        why = f"wants {_type_name(hint) if hint is not None else 'another value'}"
    return f"strategy {name!r}: parameter {key} {why}, got {error.get('input')!r:.100}"


def _number(value: Any) -> float | None:
    """`value` as a float if it reads as one ("nan", "1e9", 3), else None."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _infinite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


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


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _format(value: Any) -> str:
    """A parameter value in spec syntax: nested strategies in parentheses, floats exact."""
    if isinstance(value, Strategy):
        return f"({value.spec()})"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return format_value(str(value))
