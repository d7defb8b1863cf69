"""`ponder serve`: an OpenAI-compatible reasoning server.

Glossary: a *think* is one `athink` call; a *trace* is what it wrote (nodes in the store);
a *job* is a think that outlives its request, and its id is its trace id; a *plan* is what
a chat request asks ponder to do (problem, strategy, budget, sampling).

Layout: `wire` (OpenAI request/response shapes and errors), `plan` (request -> plan),
`thinking` (the one seam to the core), `streaming` (following a trace live, thoughts as
text), `service` (engine, store, gate, thinks in flight), `jobs`, `guards` (auth, size,
concurrency, access log), `app` (routes), `run` (uvicorn with a graceful shutdown).
"""

from ponder.server.app import create_app
from ponder.server.service import ServerConfig

__all__ = ["ServerConfig", "create_app"]
