"""The OpenAI wire format: request bodies out, validated replies in.

A reply is checked before anything is counted from it: a choice index that is not a
non-negative integer below `n`, a usage count that is negative or not an integer, a
`/models` list that is not a list all raise `BadReply`, which the HTTP layer retries and
then reports as one `EngineError`. A wrong number must never reach a budget.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ponder.engines.base import GenerationRequest, TokenLogprob

CHARS_PER_TOKEN = 4.0


class BadReply(Exception):
    """A reply that cannot be used as it is (5xx, 429, garbage, a broken stream): worth asking
    again. `retry_after` is the server's own wait, when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


def estimate_tokens(text: str) -> int:
    """~4 characters a token: no tokenizer can be downloaded offline, and the estimate is
    only used for budgets when the server does not report usage."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def estimate_prompt_tokens(req: GenerationRequest) -> int:
    """The prompt's tokens, estimated; a chat template adds ~4 tokens a message and ~3 to
    prime the reply (OpenAI's own count for its chat models)."""
    if req.prompt is not None:
        return estimate_tokens(req.prompt + req.prefill)
    messages = list(req.messages or ())
    text = "".join(m.get("content", "") for m in messages) + req.prefill
    return estimate_tokens(text) + 4 * len(messages) + 3


def split(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` in proportion to `weights` so the parts sum exactly to `total`
    (largest remainder; equal parts when every weight is 0)."""
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    s = sum(weights)
    raw = [total * w / s for w in weights]
    parts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


# -- requests ----------------------------------------------------------------------------


def request_body(
    req: GenerationRequest,
    model: str,
    n: int,
    seed: int | None,
    max_tokens: int,
    stream: bool,
    explicit_sampling: bool = False,
) -> dict[str, Any]:
    """The JSON body for /chat/completions (messages) or /completions (raw prompt).

    `explicit_sampling` also sends top_k, min_p and repeat_penalty=1 even when they are off:
    llama.cpp-family servers otherwise apply their own defaults (repeat_penalty 1.1, top_k
    40, min_p 0.05), even at temperature 0, so their "greedy" text is not greedy (measured by
    benchmarks/engine_parity.py: 3/40 greedy texts equal to the embedded engine's without,
    34/40 with, one question at a time)."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
    }
    if n > 1:
        body["n"] = n
    if req.stop:
        body["stop"] = list(req.stop)
    if seed is not None:
        body["seed"] = seed
    # Extensions (vLLM, SGLang, llama.cpp); sent only when used because strict servers
    # (OpenAI) reject unknown fields.
    if req.top_k > 0 or explicit_sampling:
        body["top_k"] = req.top_k
    if req.min_p > 0 or explicit_sampling:
        body["min_p"] = req.min_p
    if explicit_sampling:
        body["repeat_penalty"] = 1.0
    if req.messages is not None:
        messages = [dict(m) for m in req.messages]
        if req.prefill:
            messages.append({"role": "assistant", "content": req.prefill})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body["messages"] = messages
        if req.logprobs:
            body["logprobs"] = True
            # Sent even when 0: llama-cpp-python returns no logprobs without it.
            body["top_logprobs"] = req.top_logprobs
    else:
        body["prompt"] = (req.prompt or "") + req.prefill
        if req.logprobs:
            body["logprobs"] = req.top_logprobs
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# -- replies -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(frozen=True)
class Choice:
    index: int
    text: str
    finish_reason: str | None
    logprobs: Any  # raw; parsed by `parse_logprobs` only when asked for


@dataclass(frozen=True)
class Reply:
    choices: list[Choice]  # sorted by index, indexes unique
    usage: Usage | None


def choice_index(choice: dict[str, Any], n: int) -> int:
    """A choice's index, checked: a wrong one would put a text in another sample's slot."""
    i = choice.get("index", 0)
    if i is None:
        i = 0
    if type(i) is not int or not 0 <= i < n:
        raise BadReply(f"choice index {i!r} is not an integer in [0, {n})")
    return i


def parse_usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadReply(f"usage is not an object: {json.dumps(raw)[:200]}")

    def count(key: str) -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if type(value) is not int or value < 0:
            raise BadReply(f"usage.{key} = {value!r} is not a non-negative integer")
        return value

    return Usage(count("prompt_tokens"), count("completion_tokens"))


def parse_reply(data: dict[str, Any], chat: bool, n: int) -> Reply:
    """A /chat/completions or /completions body (or streamed chunks put back together as
    one) into checked choices and usage."""
    raw = data.get("choices")
    if not isinstance(raw, list):
        raise BadReply(f"response without choices: {json.dumps(data)[:300]}")
    choices: dict[int, Choice] = {}
    for c in raw:
        if not isinstance(c, dict):
            raise BadReply(f"a choice is not an object: {json.dumps(c)[:200]}")
        i = choice_index(c, n)
        if i in choices:
            raise BadReply(f"choice index {i} appears twice")
        if chat:
            message = c.get("message")
            content = message.get("content") if isinstance(message, dict) else None
        else:
            content = c.get("text")
        reason = c.get("finish_reason")
        choices[i] = Choice(
            i, str(content or ""), reason if isinstance(reason, str) else None, c.get("logprobs")
        )
    if not choices:
        raise BadReply("response with no choices")
    return Reply([choices[i] for i in sorted(choices)], parse_usage(data.get("usage")))


def parse_models(data: dict[str, Any]) -> str | None:
    """The first model id of `GET /models`, None when the list is empty."""
    models = data.get("data")
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise BadReply(f"/models is not a list of models: {json.dumps(data)[:200]}")
    if not models:
        return None
    first = models[0].get("id")
    if not isinstance(first, str) or not first:
        raise BadReply(f"/models lists a model without an id: {json.dumps(models[0])[:200]}")
    return first


def parse_logprobs(raw: Any) -> list[TokenLogprob] | None:
    """Chat shape `{"content": [{token, logprob, top_logprobs: [{token, logprob}]}]}` or
    completions shape `{tokens, token_logprobs, top_logprobs: [{token: logprob}]}`.
    A missing logprob (some servers give None for the first token) becomes NaN."""
    if not isinstance(raw, dict):
        return None

    def num(x: Any) -> float:
        return float(x) if isinstance(x, int | float) else math.nan

    if isinstance(raw.get("content"), list):
        out = []
        for item in raw["content"]:
            if not isinstance(item, dict):
                continue
            top = {
                str(t.get("token", "")): num(t.get("logprob"))
                for t in item.get("top_logprobs") or []
                if isinstance(t, dict)
            }
            out.append(TokenLogprob(str(item.get("token", "")), num(item.get("logprob")), top))
        return out
    if isinstance(raw.get("tokens"), list):
        tokens = raw["tokens"]
        lps = raw.get("token_logprobs") or [None] * len(tokens)
        tops = raw.get("top_logprobs") or [None] * len(tokens)
        return [
            TokenLogprob(
                str(tok),
                num(lp),
                {str(k): num(v) for k, v in top.items()} if isinstance(top, dict) else {},
            )
            for tok, lp, top in zip(tokens, lps, tops, strict=False)
        ]
    return None
