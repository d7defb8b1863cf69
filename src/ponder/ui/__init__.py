"""The trace viewer: a read-only web page over a trace store, to watch a think live and
inspect every hidden thought, and a spend page.

`router(store)` is a FastAPI router (the page at `/`, its assets under `/ui/static/`, its
JSON under `/ui/api/`) that any app includes with one line; `create_ui_app(store)` is the
standalone app `ponder ui` serves. The page is plain HTML, CSS and one script served from
this package: no CDN, no build step, works offline.
"""

from ponder.ui.routes import StoreSource, create_ui_app, router

__all__ = ["StoreSource", "create_ui_app", "router"]
