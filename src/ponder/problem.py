"""What is asked, and what the answer must satisfy."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Literal

AnswerFormat = Literal["auto", "number", "choice", "text", "math", "code"]


@dataclass
class Problem:
    """A question plus how to judge an answer to it.

    `format` drives extraction (auto-detect, a number, a choice letter, free text, a
    LaTeX math expression, or code with an `entry_point`); `gold` and `tests` are optional ground truth
    that verifiers and benchmarks use, never shown to the model. `preamble` is code the
    candidate's code is tested after (a prompt's imports and helpers, which models that
    rewrite the whole function tend to drop).
    """

    question: str
    format: AnswerFormat = "auto"
    gold: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    preamble: str | None = None
    choices: list[str] | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.question or not self.question.strip():
            raise ValueError("the question is empty")
        formats = typing.get_args(AnswerFormat)
        if self.format not in formats:
            raise ValueError(f"unknown answer format {self.format!r}: choose one of {', '.join(formats)}")
