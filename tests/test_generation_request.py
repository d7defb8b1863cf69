"""`GenerationRequest` rejects sampling settings a backend would misread (NaN passes every
comparison, so it used to reach the sampler and produce gibberish)."""

from __future__ import annotations

import math

import pytest

from ponder.engines.base import GenerationRequest

MESSAGES = [{"role": "user", "content": "hi"}]

BAD = [
    ("temperature", -1.0),
    ("temperature", 2.5),
    ("temperature", 1e9),
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("temperature", "0.5"),
    ("top_p", 0.0),
    ("top_p", 1.5),
    ("top_p", math.nan),
    ("top_p", -math.inf),
    ("min_p", -0.1),
    ("min_p", 1.1),
    ("min_p", math.nan),
    ("top_k", -1),
    ("top_k", 2.5),
    ("max_tokens", 0),
    ("max_tokens", 1.0),
    ("n", 0),
    ("n", True),
    ("seed", 1.5),
    ("seed", "7"),
    ("seed", math.nan),
    ("top_logprobs", -1),
]


@pytest.mark.parametrize(("field", "value"), BAD)
def test_bad_setting_is_a_value_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{field} must"):
        GenerationRequest(messages=MESSAGES, **{field: value})  # type: ignore[arg-type]


def test_temperature_message_says_the_range() -> None:
    with pytest.raises(ValueError, match=r"temperature must be in \[0, 2\]"):
        GenerationRequest(messages=MESSAGES, temperature=3.0)


GOOD = [
    {"temperature": 0.0},
    {"temperature": 2.0},
    {"temperature": 1},
    {"top_p": 1.0, "top_k": 0, "min_p": 0.0},
    {"top_p": 1e-6, "top_k": 40, "min_p": 1.0},
    {"seed": None},
    {"seed": 0},
    {"seed": 2**40},
    {"n": 16, "max_tokens": 1},
]


@pytest.mark.parametrize("settings", GOOD)
def test_edges_of_the_ranges_are_accepted(settings: dict[str, object]) -> None:
    request = GenerationRequest(messages=MESSAGES, **settings)  # type: ignore[arg-type]
    assert all(getattr(request, k) == v for k, v in settings.items())


def test_exactly_one_of_messages_or_prompt() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        GenerationRequest()
    with pytest.raises(ValueError, match="exactly one"):
        GenerationRequest(messages=MESSAGES, prompt="x")
