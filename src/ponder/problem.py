"""What is asked, and what the answer must satisfy."""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

AnswerFormat = Literal["auto", "number", "choice", "text", "math", "code"]
Message = dict[str, str]
ROLES = ("system", "developer", "user", "assistant")


class ProblemError(ValueError):
    """A question or chat that cannot be asked: empty, malformed, or not ending with the user."""


@dataclass
class Problem:
    """A question plus how to judge an answer to it.

    A chat is a question too: `system` is the caller's system prompt (ponder's own
    instructions about the answer's form are added after it) and `history` the earlier
    turns, alternating user and assistant; `question` is the last user turn. Build one
    from OpenAI-style messages with `Problem.from_messages`.

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
    system: str | None = None
    history: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ProblemError("the question is empty")
        formats = typing.get_args(AnswerFormat)
        if self.format not in formats:
            raise ProblemError(f"unknown answer format {self.format!r}: choose one of {', '.join(formats)}")
        if self.system is not None and not self.system.strip():
            self.system = None
        self.history = [_message(m, i) for i, m in enumerate(self.history)]
        for i, m in enumerate(self.history):
            if m["role"] not in ("user", "assistant"):
                raise ProblemError(f"history[{i}]: role must be user or assistant, got {m['role']!r}")

    @classmethod
    def from_messages(cls, messages: Iterable[Mapping[str, Any]], **options: Any) -> Problem:
        """A problem from OpenAI-style chat messages: system (or developer) messages become
        the system prompt, the last message must be the user's question, the rest is history."""
        chat = [_message(m, i) for i, m in enumerate(messages)]
        if not chat:
            raise ProblemError("messages is empty: give at least one user message")
        if chat[-1]["role"] != "user":
            raise ProblemError(f"the last message must be the user's, got {chat[-1]['role']!r}")
        system = "\n\n".join(m["content"] for m in chat if m["role"] in ("system", "developer"))
        turns = [m for m in chat[:-1] if m["role"] in ("user", "assistant")]
        return cls(chat[-1]["content"], system=system or None, history=turns, **options)

    @property
    def messages(self) -> list[Message]:
        """The caller's chat as given: system, history, question (without ponder's instructions)."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.history, {"role": "user", "content": self.question}]


def _message(raw: Any, index: int) -> Message:
    """One chat message, checked: a known role and text content (OpenAI's list of text
    parts is joined; images and tool calls cannot be thought about here)."""
    if not isinstance(raw, Mapping):
        raise ProblemError(f"messages[{index}] must be an object with role and content")
    role = raw.get("role")
    if role not in ROLES:
        raise ProblemError(f"messages[{index}].role must be one of {', '.join(ROLES)}, got {role!r}")
    content = raw.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise ProblemError(f"messages[{index}].content: only text parts are supported")
            parts.append(part["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise ProblemError(f"messages[{index}].content must be text")
    return {"role": str(role), "content": content}
