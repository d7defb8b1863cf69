"""Verifiers: programmatic checks (sandboxed tests, ruff, mypy, math, schema, regex) and
model-based ones (judge, reward), composable, with CLI specs such as `tests:FILE`."""

from __future__ import annotations

import re
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ponder.verifiers.base import Verdict, Verifier
from ponder.verifiers.code import UnitTests
from ponder.verifiers.composite import AllOf, FunctionVerifier, Weighted, as_verifier, to_verdict
from ponder.verifiers.lint import Mypy, Ruff
from ponder.verifiers.math import MathEquivalence
from ponder.verifiers.model import Judge, Reward, p_yes, parse_score
from ponder.verifiers.structure import JsonSchema, Regex

if TYPE_CHECKING:
    from ponder.engines.base import Engine

__all__ = [
    "SPEC_HELP",
    "AllOf",
    "FunctionVerifier",
    "JsonSchema",
    "Judge",
    "MathEquivalence",
    "Mypy",
    "Regex",
    "Reward",
    "Ruff",
    "UnitTests",
    "Verdict",
    "Verifier",
    "Weighted",
    "as_verifier",
    "p_yes",
    "parse_score",
    "parse_verifier_spec",
    "to_verdict",
    "verifier_spec",
]

SPEC_HELP = "tests:FILE, ruff, mypy, math, schema:FILE.json, regex:PATTERN (judge, reward with an engine)"


#: the spec each verifier built by `parse_verifier_spec` came from, so a strategy holding it
#: can write it back (`Refine(verifier=...).spec()`)
_SPECS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def parse_verifier_spec(spec: str, engine: Engine | None = None) -> Verifier:
    """A verifier from a CLI spec: tests:FILE, ruff, mypy, math, schema:FILE.json,
    regex:PATTERN; judge and reward when an engine is given. Raises ValueError on bad specs."""
    verifier = _from_spec(spec, engine)
    _SPECS[verifier] = spec.strip()
    return verifier


def verifier_spec(verifier: object) -> str | None:
    """The spec `verifier` was parsed from; None for one built in Python."""
    try:
        return _SPECS.get(verifier)
    except TypeError:  # unhashable or not weak-referenceable: not one of ours
        return None


def _from_spec(spec: str, engine: Engine | None) -> Verifier:
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind in ("ruff", "mypy", "math", "judge", "reward") and sep and arg.strip():
        raise ValueError(f"verifier {kind!r} takes no argument (got {spec!r})")
    if kind == "ruff":
        return Ruff()
    if kind == "mypy":
        return Mypy()
    if kind == "math":
        return MathEquivalence()
    if kind in ("judge", "reward"):
        if engine is None:
            raise ValueError(f"verifier {kind!r} needs an engine")
        return Judge(engine) if kind == "judge" else Reward(engine)
    if kind in ("tests", "schema", "regex") and not arg:
        raise ValueError(
            f"verifier {kind!r} needs an argument: {kind}:{'PATTERN' if kind == 'regex' else 'FILE'}"
        )
    if kind == "tests":
        path = Path(arg).expanduser()
        if not path.is_file():
            raise ValueError(f"tests file not found: {arg}")
        return UnitTests(path.read_text(encoding="utf-8"))
    if kind == "schema":
        path = Path(arg).expanduser()
        if not path.is_file():
            raise ValueError(f"schema file not found: {arg}")
        try:
            return JsonSchema.from_file(path)
        except Exception as exc:  # invalid JSON, or jsonschema's SchemaError
            raise ValueError(f"bad JSON schema in {arg}: {exc}") from exc
    if kind == "regex":
        try:
            return Regex(arg)
        except re.error as exc:
            raise ValueError(f"bad regex {arg!r}: {exc}") from exc
    raise ValueError(f"unknown verifier spec {spec!r}; expected one of: {SPEC_HELP}")
