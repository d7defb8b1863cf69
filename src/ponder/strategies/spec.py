"""The text form of a strategy spec, split into a name and raw parameter values (the strategy
classes give the values their types; see `ponder.strategies.base`).

    spec   := name [":" param ("," param)*]
    param  := key ["=" value]                  a bare key is a flag: "weighted" = "weighted=true"
    value  := "(" text ")"                     any text with balanced parentheses, e.g. a nested
                                               strategy: of=(refine:max_rounds=2)
            | '"' JSON string '"'              anything at all: wait="Hmm, (wait)"
            | text                             up to the next top-level comma

Quotes are honoured everywhere, so a quoted ")" or "," never ends a group or a value.
`format_value` writes a value so that `split_spec` reads it back unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
#: a bare value may hold anything but these (and no edge whitespace)
_NEEDS_QUOTES = re.compile(r'[,()"=\x00-\x1f\x7f]|^\s|\s$|^$')


class SpecSyntaxError(ValueError):
    """A spec that does not parse: unbalanced parentheses, an open quote, a bad key."""


def split_spec(text: str) -> tuple[str, list[tuple[str, str]]]:
    """("name", [(key, raw value), ...]) from "name:key=value,..."; keys keep their spelling."""
    text = unwrap(text.strip())
    name, _, rest = text.partition(":")
    params = []
    for item in split_top(rest):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not _KEY.fullmatch(key):
            raise SpecSyntaxError(
                f"bad parameter {_short(item.strip())} in {_short(text)}: expected key=value"
            )
        params.append((key, unquote(raw.strip()) if eq else "true"))
    return name.strip(), params


def split_top(text: str, separator: str = ",") -> list[str]:
    """The non-empty items of `text` between separators outside quotes and parentheses."""
    items, start = [], 0
    for i, char, depth in _scan(text):
        if char == separator and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item.strip()]


def unwrap(value: str) -> str:
    """The inside of "(...)" when the parentheses enclose the whole value, else the value."""
    if value.startswith("("):
        for i, char, depth in _scan(value):
            if char == ")" and depth == 0:
                return value[1:-1].strip() if i == len(value) - 1 else value
    return value


def unquote(value: str) -> str:
    """A raw value: a group's inside, a JSON string's text, or the bare text."""
    if value.startswith('"'):
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if not isinstance(decoded, str):
            raise SpecSyntaxError(f'bad quoted value {_short(value)}: one JSON string, e.g. "a, b"')
        return decoded
    return unwrap(value)


def format_value(text: str) -> str:
    """`text` bare when `split_spec` reads it back unchanged, else as a JSON string."""
    return json.dumps(text, ensure_ascii=False) if _NEEDS_QUOTES.search(text) else text


def _scan(text: str) -> Iterator[tuple[int, str, int]]:
    """(index, char, depth) for each character outside quotes; a closing ")" has the depth it
    closes to. Raises on an unbalanced parenthesis or an unterminated quote."""
    depth, quoted, escaped = 0, False, False
    for i, char in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            continue
        if char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SpecSyntaxError(f"unbalanced ')' at position {i + 1} of {_short(text)}")
        yield i, char, depth
    if quoted:
        raise SpecSyntaxError(f"unterminated quote in {_short(text)}")
    if depth:
        raise SpecSyntaxError(f"unbalanced '(' in {_short(text)}: {depth} not closed")


def _short(text: str) -> str:
    """`text` quoted for an error line, its middle cut when it is long."""
    return repr(text if len(text) <= 120 else f"{text[:80]} ... {text[-30:]}")
