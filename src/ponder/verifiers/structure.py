"""Structure of the answer: JSON matching a JSON Schema (or a pydantic model), or a regex."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ponder.problem import Problem
from ponder.verifiers.base import Verdict

_FENCED_JSON = re.compile(r"```(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)


def find_json(text: str) -> tuple[bool, Any]:
    """The JSON value in a model's answer: the whole text, a fenced block, or the first
    decodable object/array in it (models wrap JSON in prose). (found, value)."""
    stripped = text.strip()
    try:
        return True, json.loads(stripped)
    except ValueError:
        pass
    for block in reversed(_FENCED_JSON.findall(text)):
        try:
            return True, json.loads(block)
        except ValueError:
            continue
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        return True, value
    return False, None


class JsonSchema:
    """Validates the answer's JSON against a schema; every violation becomes feedback.

    `schema` is a JSON Schema dict or a pydantic model class (its `model_json_schema()`).
    """

    def __init__(self, schema: dict[str, Any] | type[Any], name: str = "schema") -> None:
        from jsonschema.validators import validator_for

        if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
            schema = schema.model_json_schema()
        if not isinstance(schema, dict):
            raise TypeError("schema must be a JSON Schema dict or a pydantic model class")
        cls = validator_for(schema)
        cls.check_schema(schema)  # a broken schema is the caller's bug: fail loudly, now
        self.schema = schema
        self._validator = cls(schema)
        self.name = name

    @classmethod
    def from_file(cls, path: str | Path, name: str = "schema") -> JsonSchema:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")), name=name)

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        found, value = find_json(candidate)
        if not found:
            return Verdict(0.0, False, "the answer contains no valid JSON", {"errors": ["no JSON"]})
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if not errors:
            return Verdict(1.0, True, "the JSON matches the schema", {"value": value, "errors": []})
        messages = [f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
        feedback = "the JSON does not match the schema:\n" + "\n".join(messages[:20])
        score = max(0.0, 0.5 - 0.1 * (len(errors) - 1))  # valid JSON but wrong shape: partial credit
        return Verdict(score, False, feedback, {"value": value, "errors": messages})


class Regex:
    """Passes when the answer matches `pattern` (`re.search`; `full=True`: the whole
    stripped answer must match)."""

    def __init__(self, pattern: str, flags: int = 0, full: bool = False, name: str = "regex") -> None:
        self.pattern = re.compile(pattern, flags)
        self.full = full
        self.name = name

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        text = candidate.strip() if self.full else candidate
        m = self.pattern.fullmatch(text) if self.full else self.pattern.search(text)
        if m:
            return Verdict(1.0, True, "the answer matches the required pattern", {"match": m.group(0)})
        how = "as a whole" if self.full else "anywhere"
        return Verdict(
            0.0,
            False,
            f"the answer does not match the pattern {self.pattern.pattern!r} {how}",
            {"match": None},
        )
