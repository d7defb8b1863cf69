"""The OpenAI wire format as clients speak it: the chat request they send, the response,
chunks and errors they read. Field names are OpenAI's (and vLLM's `reasoning_content`), so
the official client, LangChain and curl scripts work unchanged; ponder's own fields live in
one `ponder` object."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Effort = Literal["none", "minimal", "low", "medium", "high"]

# Standard fields ponder cannot honour: a request that sets them gets a 400 naming the field
# instead of an answer that silently ignored them. The value that means "not used" is allowed.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "audio": (None,),
    "prediction": (None,),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
}


class ApiError(Exception):
    """An error the client should see as OpenAI-style JSON: status, message, the bad field."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        kind: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, param=self.param, kind=self.kind, code=self.code)


def error_body(
    message: str, *, param: str | None = None, kind: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetIn(_Strict):
    seconds: float | None = None
    tokens: int | None = None
    usd: float | None = None
    samples: int | None = None


class PonderIn(_Strict):
    """`extra_body={"ponder": {...}}`: how to think about this request."""

    strategy: Any = None  # a spec string or a JSON object; checked by the plan
    budget: Any = None  # {"seconds": .., "tokens": .., "usd": .., "samples": ..} or "30s,$0.01"
    format: Literal["auto", "number", "choice", "text", "math", "code"] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """`POST /v1/chat/completions`. Unknown fields are ignored (clients add their own);
    known fields ponder cannot honour are rejected (see UNSUPPORTED)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=1000)
    messages: list[Any] = Field(max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=8)
    seed: int | None = Field(default=None, ge=0, lt=2**31)  # n choices use seed..seed+n-1
    reasoning_effort: Effort | None = None
    response_format: dict[str, Any] | None = None
    ponder: PonderIn | None = None
    user: str | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ApiError(400, "stop: give at most 4 non-empty strings", param="stop")
        return stops


def parse_chat(raw: bytes) -> ChatRequest:
    """The request body, or a 400 naming the first bad field."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    for name, allowed in UNSUPPORTED.items():
        if name in data and data[name] not in allowed:
            raise ApiError(400, f"{name} is not supported by ponder", param=name)
    if request.response_format and request.response_format.get("type", "text") != "text":
        raise ApiError(400, "response_format: only type 'text' is supported", param="response_format")
    return request


def validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False)[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    return ApiError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param)


# -- responses ------------------------------------------------------------------------------


def usage_body(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's usage object from ponder's Usage (as a dict)."""
    prompt = int(usage.get("prompt_tokens", 0))
    completion = int(usage.get("completion_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": int(usage.get("reasoning_tokens", 0))},
    }


def completion_body(
    completion_id: str,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, Any],
    ponder: dict[str, Any] | list[dict[str, Any]],
    created: int | None = None,
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
        "ponder": ponder,
    }


def choice(index: int, content: str, finish_reason: str, reasoning: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {"index": index, "message": message, "finish_reason": finish_reason, "logprobs": None}


def chunk(
    completion_id: str, model: str, created: int, choices: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """One `chat.completion.chunk`; no choices gives the usage-only chunk."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        **extra,
    }


def choice_delta(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """What choice `index` adds in one chunk."""
    return {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}


def sse(data: Any, *, event: str | None = None, event_id: int | None = None) -> bytes:
    """One server-sent event (the `data: [DONE]` sentinel when data is that string)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    head += f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {payload}\n\n".encode()
