"""The HTTP surface: OpenAI's `/v1/models` and `/v1/chat/completions`, plus ponder's jobs
and traces under `/v1/ponder/`. Handlers stay thin: parse (wire), decide (plan), think
(service), say (wire; streaming and chatstream for SSE)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

import ponder.ui
from ponder.engines.base import Engine, EngineError
from ponder.server.chatstream import chat_stream
from ponder.server.guards import Guard
from ponder.server.jobs import Jobs
from ponder.server.plan import ALIAS, Plan
from ponder.server.service import ClientGone, Outcome, ServerConfig, Service, completion
from ponder.server.thinking import engine_failure, failure
from ponder.server.wire import ApiError, error_body, parse_chat
from ponder.store import StoreError, TraceStore
from ponder.strategies import REGISTRY

log = logging.getLogger("ponder.server")


class Stream(StreamingResponse):
    """Server-sent events whose generator is always closed in the request's own task, so a
    client that leaves mid-stream cancels its think at once (not whenever the GC runs)."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._content.aclose()  # type: ignore[attr-defined]


def create_app(
    config: ServerConfig | None = None,
    *,
    engine: Engine | None = None,
    store: TraceStore | None = None,
    stopping: threading.Event | None = None,
) -> FastAPI:
    """The server as an ASGI app. `engine` and `store`, when given, are used as they are
    and left open (tests inject a scripted engine); otherwise they are made from `config`
    at startup and closed at shutdown. Set `stopping` when a shutdown begins, so streams
    that would only wait (job events) end at once instead of holding the shutdown."""
    config = config or ServerConfig()
    stopping = stopping or threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        the_store = store or TraceStore(config.store)
        the_engine = engine or config.engine()
        if hasattr(the_engine, "ensure_model"):
            await the_engine.ensure_model()
        service = Service(config, the_engine, the_store, stopping)
        app.state.service = service
        app.state.jobs = Jobs(service)
        app.state.jobs.resume()  # queued jobs a dead server left in the store
        log.info("serving %s (store %s)", service.served, the_store.path)
        try:
            yield
        finally:
            await service.drain()
            if own_engine:
                await the_engine.aclose()
            if store is None:
                the_store.close()

    app = FastAPI(title="ponder", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(Guard, api_key=config.api_key, max_body=config.max_body)
    _errors(app)
    _routes(app)
    app.include_router(ponder.ui.router(lambda: app.state.service.store))  # the viewer, at /
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        return JSONResponse(error_body(f"{param}: {first['msg']}", param=param), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return JSONResponse(error_body(str(exc.detail), code=code), status_code=exc.status_code)

    @app.exception_handler(EngineError)
    async def engine_error(_: Request, exc: EngineError) -> JSONResponse:
        error = engine_failure(exc)
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        message = f"internal error: {type(exc).__name__}: {str(exc)[:300]}"
        return JSONResponse(error_body(message, kind="server_error"), status_code=500)

    @app.exception_handler(StoreError)
    async def store_error(_: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), kind="server_error"), status_code=500)


def _service(request: Request) -> Service:
    return request.app.state.service


def _routes(app: FastAPI) -> None:
    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        service = _service(request)
        gate = service.gate
        return {"status": "ok", "model": service.served, "running": gate.running, "waiting": gate.waiting}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        service = _service(request)
        names = [service.served, ALIAS, *(f"{name}/{ALIAS}" for name in sorted(REGISTRY))]
        created = int(service.started)
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": created, "owned_by": "ponder"} for n in names],
        }

    @app.get("/v1/ponder/strategies")
    async def strategies() -> dict[str, Any]:
        """What `ponder.strategy` accepts: each strategy's summary and JSON Schema."""
        data = [
            {"name": name, "summary": cls.summary, "schema": cls.json_schema()}
            for name, cls in sorted(REGISTRY.items())
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        service = _service(request)
        body = parse_chat(await request.body())
        chosen = service.plan(body)
        if body.stream:
            service.gate.check()
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return Stream(chat_stream(service, chosen, include_usage, request))
        async with service.gate.slot():
            outcomes = await asyncio.gather(
                *(_answer(service, chosen, chosen.seed + i, request) for i in range(chosen.n))
            )
        request.state.log = {"trace_id": outcomes[0].trace_id, "strategy": chosen.spec}
        return completion(list(outcomes), chosen.model, chosen.stop)

    @app.post("/v1/ponder/jobs", status_code=202)
    async def create_job(request: Request) -> dict[str, Any]:
        service = _service(request)
        body = parse_chat(await request.body())
        if body.stream:
            raise ApiError(400, "stream: a job is followed at /v1/ponder/jobs/{id}/events", param="stream")
        job = await request.app.state.jobs.create(service.plan(body))
        request.state.log = {"trace_id": job["id"]}
        return job

    @app.get("/v1/ponder/jobs/{job_id}")
    async def get_job(request: Request, job_id: str) -> dict[str, Any]:
        return request.app.state.jobs.view(job_id)

    @app.delete("/v1/ponder/jobs/{job_id}")
    async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
        return await request.app.state.jobs.cancel(job_id)

    @app.get("/v1/ponder/jobs/{job_id}/events", response_model=None)
    async def job_events(
        request: Request, job_id: str, last_event_id: Annotated[str | None, Header()] = None
    ) -> StreamingResponse:
        jobs: Jobs = request.app.state.jobs
        jobs.check(job_id)
        after = 0
        if last_event_id:
            if not last_event_id.strip().isdigit():
                raise ApiError(
                    400, "Last-Event-ID must be an event id from this stream", param="Last-Event-ID"
                )
            after = int(last_event_id)
        return Stream(jobs.events(job_id, after))

    @app.get("/v1/ponder/traces/{trace_id}")
    async def get_trace(request: Request, trace_id: str) -> dict[str, Any]:
        return _service(request).trace(trace_id).to_dict()

    @app.get("/v1/ponder/traces")
    async def list_traces(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
        status: Annotated[str | None, Query(max_length=20)] = None,
        strategy: Annotated[str | None, Query(max_length=200)] = None,
        text: Annotated[str | None, Query(max_length=500)] = None,
    ) -> dict[str, Any]:
        rows = _service(request).store.list_traces(limit, offset, status=status, strategy=strategy, text=text)
        data = [{k: v for k, v in t.to_dict().items() if k != "nodes"} for t in rows]
        return {"object": "list", "data": data, "limit": limit, "offset": offset}


async def _answer(service: Service, chosen: Plan, seed: int, request: Request) -> Outcome:
    thinking = await service.begin(chosen, seed)
    try:
        answer = await service.settle(thinking, request.is_disconnected)
    except ClientGone:
        raise ApiError(499, "the client closed the request; its think was cancelled") from None
    error = failure(service.store, answer, service.engine)
    if error is not None:
        raise error
    return Outcome.of(answer)
