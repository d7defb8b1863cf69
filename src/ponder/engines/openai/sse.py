"""Server-sent events: one streamed completion put back together as the chunks arrive.

httpx-sse parses the event framing; `Stream` keeps each choice's text, logprobs, finish
reason and the final chunk's usage, hands every new piece of text to `emit` the moment it
arrives (the engine's token-delta hook), and holds the partial text of each choice when a
deadline cancels the request. Chunks are checked as they come (`wire.choice_index`,
`wire.parse_usage`): a bad one is a `BadReply`, retried by the HTTP layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from httpx_sse import EventSource

from ponder.engines.openai.wire import BadReply, choice_index, parse_usage

Emit = Callable[[int, str], None]
"""(sample index within the caller's request, new text)."""


class Stream:
    """The state of one streamed HTTP request for `n` choices, the first being sample `first`
    of the caller's request. `delivered` turns True once any text went to `emit`: from then
    on a retry could write different text than the listener already has, so the request is
    not retried (see `OpenAIEngine`)."""

    def __init__(self, chat: bool, n: int, first: int = 0, emit: Emit | None = None) -> None:
        self.chat = chat
        self.n = n
        self.first = first
        self.emit = emit
        self.delivered = False
        self.reset()

    def reset(self) -> None:
        self.streamed = False  # the server answered with events (not one JSON body)
        self.text: dict[int, list[str]] = {}
        self.logprobs: dict[int, dict[str, list[Any]]] = {}
        self.finish: dict[int, Any] = {}
        self.usage: Any = None

    def add(self, chunk: dict[str, Any]) -> None:
        if chunk.get("usage") is not None:
            parse_usage(chunk["usage"])  # checked now, so a bad count is retried
            self.usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise BadReply(f"chunk choices are not a list: {json.dumps(chunk)[:200]}")
        for c in choices:
            if not isinstance(c, dict):
                raise BadReply(f"a chunk choice is not an object: {json.dumps(c)[:200]}")
            i = choice_index(c, self.n)
            delta = c.get("delta") if self.chat else c
            piece = delta.get("content" if self.chat else "text") if isinstance(delta, dict) else None
            piece = str(piece or "")
            self.text.setdefault(i, []).append(piece)
            if piece and self.emit is not None:
                self.delivered = True
                self.emit(self.first + i, piece)
            if isinstance(c.get("logprobs"), dict):
                into = self.logprobs.setdefault(i, {})
                for key, values in c["logprobs"].items():
                    if isinstance(values, list):
                        into.setdefault(key, []).extend(values)
            if c.get("finish_reason"):
                self.finish[i] = c["finish_reason"]

    def partial(self, i: int) -> str:
        return "".join(self.text.get(i, []))

    def response(self) -> dict[str, Any]:
        """The chunks as the one JSON body a non-streamed request would have returned."""
        choices = []
        for i in sorted(self.text):
            choice: dict[str, Any] = {"index": i, "finish_reason": self.finish.get(i)}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": self.partial(i)}
            else:
                choice["text"] = self.partial(i)
            if i in self.logprobs:
                choice["logprobs"] = self.logprobs[i]
            choices.append(choice)
        out: dict[str, Any] = {"choices": choices}
        if self.usage is not None:
            out["usage"] = self.usage
        return out

    async def read(self, response: httpx.Response) -> dict[str, Any]:
        """Read the events (`data: {chunk}` ..., then `data: [DONE]`) of `response`; the whole
        completion as one JSON body, or `BadReply` when the stream broke before its end."""
        self.reset()  # a retried request starts over
        self.streamed = True
        done = False
        async for event in EventSource(response).aiter_sse():
            if event.data == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(event.data)
            except ValueError as exc:
                raise BadReply(f"malformed event in the stream: {event.data[:200]!r}") from exc
            if isinstance(chunk, dict):
                if isinstance(chunk.get("error"), dict | str):
                    raise BadReply(f"error in the stream: {str(chunk['error'])[:300]}")
                self.add(chunk)
        # A choice without a finish reason was cut, even if [DONE] came: llama-cpp-python's
        # server ends a stream that way when another request interrupts it.
        if not self.text or len(self.finish) < len(self.text):
            raise BadReply("the stream ended before the completion did" + ("" if done else " (no [DONE])"))
        return self.response()
