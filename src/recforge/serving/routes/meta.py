"""The routes about the server itself: ``/health``, the web page (``/``, ``/static``) and
``/model``."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations.
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from recforge.serving.context import AppContext
from recforge.serving.responses import json_response
from recforge.serving.schemas import Health, ModelInfo, errors

__all__ = ["STATIC", "add_meta_routes"]

#: The web page's files (package data: HTML, JS, CSS; no external resources).
STATIC = Path(__file__).resolve().parent.parent / "static"
#: In index.html, replaced by ``required`` when the server has an API key.
_KEY_MARKER = '<meta name="recforge-api-key" content="optional">'
#: The page loads nothing but its own files and talks to nothing but this server.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def add_meta_routes(app: FastAPI, ctx: AppContext, *, key_required: bool) -> None:
    """``GET /health``, ``GET /`` (the page; ``key_required``: it asks for the read key),
    ``/static`` and ``GET /model``."""

    @app.get("/health", responses=errors())
    async def health() -> Health:
        return Health(status="ok")

    # The page needs no key (like /health): it asks for the read key when the server wants
    # it, and never gets, sends or asks for the admin key.
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    if _KEY_MARKER not in page:  # pragma: no cover - guards edits of index.html
        raise RuntimeError(f"{STATIC / 'index.html'} lacks {_KEY_MARKER}")
    if key_required:
        page = page.replace(_KEY_MARKER, _KEY_MARKER.replace("optional", "required"))

    @app.get("/", include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/model", dependencies=ctx.guarded, response_model=None,
             responses={200: {"model": ModelInfo}, **errors(401)})
    async def model_info() -> Response:
        return json_response(ctx.service.info())
