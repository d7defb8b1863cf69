"""The viewer's HTTP surface: the page, its three static files and read-only JSON.

Handlers are plain `def`s: FastAPI runs them on its thread pool, so SQLite reads never
block a server's event loop. Live pages poll `/ui/api/traces/{id}/updates?after=V` with
the largest node version they hold (the store's `nodes_after` contract) about once a
second while the trace runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Annotated, Any, get_args

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from ponder.store import StoreError, TraceStore
from ponder.strategies import REGISTRY
from ponder.trace import TraceStatus
from ponder.ui import views
from ponder.usage import BY, UsageError, parse_since, spend

StoreSource = TraceStore | Callable[[], TraceStore]
STATUSES: tuple[str, ...] = get_args(TraceStatus)
_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page runs only its own script and styles: even a bug that put model text into
# markup could not run it.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def _asset(name: str) -> bytes:
    return files("ponder.ui").joinpath("static", name).read_bytes()


@contextmanager
def _reading() -> Iterator[None]:
    try:
        yield
    except StoreError as exc:
        raise HTTPException(503, str(exc)) from None


def router(store: StoreSource) -> APIRouter:
    """The viewer's routes over `store`: a store, or a function returning one when the app
    opens its store only at startup (`lambda: app.state.service.store`)."""
    get_store: Callable[[], TraceStore] = store if callable(store) else (lambda: store)
    api = APIRouter()

    @api.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8", headers=_HEADERS)

    @api.get("/ui/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, f"no such file: {name}")
        return Response(_asset(name), media_type=_STATIC[name], headers=_HEADERS)

    @api.get("/ui/api/traces")
    def traces(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
        text: Annotated[str | None, Query(max_length=500)] = None,
        strategy: Annotated[str | None, Query(max_length=200)] = None,
        status: Annotated[str | None, Query(max_length=20)] = None,
    ) -> dict[str, Any]:
        if status and status not in STATUSES:
            raise HTTPException(400, f"status must be one of {', '.join(STATUSES)}")
        filters = {"text": text or None, "strategy": strategy or None, "status": status or None}
        with _reading():
            the_store = get_store()
            total = the_store.count_traces(**filters)
            rows = the_store.list_traces(limit, offset, **filters)
        return {"total": total, "limit": limit, "offset": offset, "rows": [views.row(t) for t in rows]}

    @api.get("/ui/api/strategies")
    def strategies() -> dict[str, Any]:
        return {"strategies": sorted(REGISTRY), "statuses": list(STATUSES)}

    @api.get("/ui/api/traces/{trace_id}")
    def trace(trace_id: str) -> dict[str, Any]:
        with _reading():
            record = get_store().get_trace(trace_id)
        if record is None:
            raise HTTPException(404, f"no single trace matches {trace_id!r}")
        return views.detail(record)

    @api.get("/ui/api/traces/{trace_id}/updates")
    def updates(trace_id: str, after: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        """Nodes added or grown since version `after`, the prompts and the trace's state."""
        with _reading():
            record = get_store().get_trace(trace_id)
        if record is None:
            raise HTTPException(404, f"no single trace matches {trace_id!r}")
        fresh = sorted((n for n in record.nodes if n.version > after), key=lambda n: n.version)
        return {
            **views.state(record),
            "prompts": record.prompts,
            "nodes": [views.node(n) for n in fresh],
            "version": max([after, *(n.version for n in fresh)]),
        }

    @api.get("/ui/api/usage")
    def usage(
        since: Annotated[str | None, Query(max_length=20)] = None,
        by: Annotated[str | None, Query(max_length=20)] = None,
    ) -> dict[str, Any]:
        if by and by not in BY:
            raise HTTPException(400, f"by must be one of {', '.join(BY)}")
        try:
            with _reading():
                return spend(get_store().path, since=parse_since(since), by=by or None).to_dict()
        except UsageError as exc:
            raise HTTPException(400, str(exc)) from None

    return api


def create_ui_app(store: StoreSource) -> FastAPI:
    """The viewer alone (what `ponder ui` serves): errors as `{"error": message}`."""
    app = FastAPI(title="ponder viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router(store))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:])
        return JSONResponse({"error": f"{where}: {first['msg']}"}, status_code=400)

    return app
