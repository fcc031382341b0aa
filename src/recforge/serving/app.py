"""The HTTP API: ``create_app(model)`` returns a FastAPI app; ``recforge serve`` runs it.

Endpoints (OpenAPI docs at ``/docs``):

- ``GET /health``, ``GET /model``;
- ``GET /users/{user_id}/recommendations?k=10&include_seen=false&explain=false``: unknown
  users get the most popular items, marked ``"fallback": "popular"``; ``explain=true`` adds
  to each item the history item most similar to it (``"because"``);
- ``GET /users/{user_id}/history?limit=50``: the items the model knows the user by;
- ``POST /recommendations``: ``{"users": [...], "k": 10}`` for a batch of users, or
  ``{"history": [...], "k": 10}`` for an anonymous session (fold-in, models that support
  it); unknown history items are listed in ``unknown_items``;
- ``GET /items/{item_id}/similar?k=10``;
- ``GET /items?query=...&limit=10``: items by title (or id, for models without titles);
- ``GET /``: a web page to explore all this (files under ``static/``, served at ``/static``).

Bad input answers 4xx with a JSON ``{"detail": ...}``: 422 for invalid parameters or bodies
(k outside 1..1000, malformed JSON, wrong types), 404 for unknown items, 400 for requests
the model cannot answer. With an API key (``api_key=`` or ``RECFORGE_API_KEY``), every
endpoint but ``/health``, the page (``/``, ``/static``) and the API description
(``/docs``, ``/openapi.json``) needs the ``X-API-Key`` header
(401 otherwise); the page asks for the key and sends it.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, Field, model_validator
from starlette.concurrency import run_in_threadpool

from recforge import __version__
from recforge.errors import ConfigError, DataError, ModelError, RecforgeError
from recforge.models.base import Recommender
from recforge.serving.service import MAX_K, NotFound, RecommendationService

__all__ = ["create_app"]

#: The web page's files (package data: HTML, JS, CSS; no external resources).
STATIC = Path(__file__).resolve().parent / "static"
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

def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):  # JSON true would pass as the id 1
        raise ValueError("an id is a number or a string, not true / false")
    return value


Id = Annotated[int | str, BeforeValidator(_not_a_bool)]


class RecommendationsRequest(BaseModel):
    """Either ``users`` (known or not) or ``history`` (item ids of an anonymous session)."""

    users: list[Id] | None = Field(default=None, max_length=10_000)
    history: list[Id] | None = Field(default=None, max_length=10_000)
    values: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None, description="Ratings / weights of the history items (same length).")
    k: int = Field(default=10, ge=1, le=MAX_K)
    include_seen: bool = False

    @model_validator(mode="after")
    def one_of(self) -> RecommendationsRequest:
        if (self.users is None) == (self.history is None):
            raise ValueError("give exactly one of 'users' and 'history'")
        if self.values is not None and (self.history is None
                                        or len(self.values) != len(self.history)):
            raise ValueError("'values' needs 'history' of the same length")
        return self


class ReloadRequest(BaseModel):
    model: str | None = Field(default=None, min_length=1)  # "" would be the working directory


class Event(BaseModel):
    user: Id
    item: Id
    value: float | None = Field(default=None, allow_inf_nan=False)
    timestamp: int | None = Field(default=None, ge=-(2**62), le=2**62)


class EventsRequest(BaseModel):
    events: list[Event] = Field(min_length=1, max_length=10_000)


def _finite(value: Any) -> Any:
    """``value`` with non-finite floats replaced by their text (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


_TRUE_FALSE = {b"true": True, b"false": False, b"1": True, b"0": False}
_JSON_HEADERS = [(b"content-type", b"application/json")]


class _FastRecommendations:
    """ASGI middleware answering well-formed ``GET /users/{id}/recommendations`` requests
    directly, before routing: no route matching, no dependency or parameter resolution.

    It only takes requests it can answer exactly as the FastAPI route would (``k`` a plain
    integer in 1..MAX_K, ``include_seen`` ``true``/``false``/``1``/``0``, ``explain`` not
    true, no other parameters, the right API key when one is required); every other request
    (and any error) goes on to FastAPI, which validates it, answers errors and documents the
    endpoint. (At 8 connections on 2 cores it raised throughput from 1,203-1,476 to
    1,587-1,805 requests/s: docs/benchmarks.md.)
    """

    def __init__(self, app: Any, *, owner: FastAPI, key: str | None) -> None:
        self.app = app
        self.owner = owner
        self.key = key.encode() if key is not None else None

    def _params(self, scope: dict[str, Any]) -> tuple[str, int, bool] | None:
        path: str = scope["path"]
        if (scope["type"] != "http" or scope["method"] != "GET"
                or not path.startswith("/users/") or not path.endswith("/recommendations")):
            return None
        user = path[7:-16]
        if not user or "/" in user:
            return None
        if self.key is not None:
            given = next((v for k, v in scope["headers"] if k == b"x-api-key"), None)
            if given is None or not hmac.compare_digest(given, self.key):
                return None
        k, include_seen, seen_keys = 10, False, set()
        query: bytes = scope.get("query_string", b"")
        for part in query.split(b"&") if query else ():
            name, _, value = part.partition(b"=")
            if name in seen_keys:
                return None
            seen_keys.add(name)
            if name == b"k":
                if not value.isdigit() or len(value) > 4:
                    return None
                k = int(value)
                if not 1 <= k <= MAX_K:
                    return None
            elif name == b"include_seen":
                flag = _TRUE_FALSE.get(value)
                if flag is None:
                    return None
                include_seen = flag
            elif name == b"explain":
                if _TRUE_FALSE.get(value) is not False:
                    return None
            else:
                return None
        return user, k, include_seen

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        params = self._params(scope) if scope["type"] == "http" else None
        if params is not None:
            try:
                body = json.dumps(self.owner.state.service.recommend_user(*params)).encode()
            except Exception:  # let the FastAPI route answer (and map) the error
                body = None
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [*_JSON_HEADERS,
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def create_app(model: Recommender | str | Path, *, api_key: str | None = None,
               events: str | Path | None = None, index: str = "exact",
               n_probe: int = 8) -> FastAPI:
    """A FastAPI app answering for ``model`` (a fitted model or a saved model directory).

    ``events``: path of the SQLite event store (``POST /interactions``,
    ``DELETE /users/{id}``); ``None`` serves without one. ``index="ivf"`` answers per-user
    requests from an approximate faiss index (dot-product models; ``n_probe`` lists).
    """
    store = None
    if events is not None:
        from recforge.serving.events import EventStore

        store = EventStore(events)
    service = RecommendationService(model, events=store, index=index, n_probe=n_probe)
    if api_key == "":
        raise ConfigError("an empty API key would lock every endpoint; leave it out to serve "
                          "without one")
    key = api_key if api_key is not None else os.environ.get("RECFORGE_API_KEY") or None
    app = FastAPI(title="recforge", version=__version__,
                  description=f"Recommendations from a trained {service.model.name!r} model.")
    app.state.service = service
    writes = threading.Lock()  # posts and deletes against the swap of a reload

    def check_key(x_api_key: str | None = Header(default=None)) -> None:
        # the header's bytes (HTTP headers arrive as latin-1) against the key's UTF-8 bytes,
        # as the fast path compares them: a non-ASCII key works on every endpoint alike
        if key is not None and (x_api_key is None or not hmac.compare_digest(
                x_api_key.encode("latin-1", errors="replace"), key.encode())):
            raise HTTPException(status_code=401, detail="missing or wrong X-API-Key header")

    # Without a key, no dependency at all: it would cost every request a resolution step.
    guarded = [Depends(check_key)] if key is not None else []

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Any, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, and a NaN / Infinity in it (valid for
        # Python's JSON parser, not for its encoder) would turn a 422 into a 500.
        return JSONResponse(status_code=422,
                            content={"detail": _finite(jsonable_encoder(exc.errors()))})

    @app.exception_handler(RecforgeError)
    async def recforge_error(_: Any, exc: RecforgeError) -> JSONResponse:
        if isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, (ConfigError, DataError)):
            status = 422
        else:
            status = 400
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    # The page needs no key (like /health): it asks for one when the server wants it.
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    if _KEY_MARKER not in page:  # pragma: no cover - guards edits of index.html
        raise RuntimeError(f"{STATIC / 'index.html'} lacks {_KEY_MARKER}")
    if key is not None:
        page = page.replace(_KEY_MARKER, _KEY_MARKER.replace("optional", "required"))

    @app.get("/", include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/model", dependencies=guarded)
    async def model_info() -> dict[str, Any]:
        return app.state.service.info()

    # Well-formed requests of this hot path are answered by _FastRecommendations before
    # routing; this route documents the endpoint and answers everything else.
    app.add_middleware(_FastRecommendations, owner=app, key=key)

    @app.get("/users/{user_id:path}/recommendations", dependencies=guarded)
    async def user_recommendations(user_id: str, k: int = Query(10, ge=1, le=MAX_K),
                                   include_seen: bool = False,
                                   explain: bool = False) -> Response:
        # The hot path: about a millisecond of scoring, run inline (a thread hop would
        # cost more than it frees), serialized once with json.dumps.
        svc: RecommendationService = app.state.service
        body = svc.recommend_user(user_id, k, include_seen)
        if explain:  # one item-similarity block (k x n_items): off the event loop
            body = await run_in_threadpool(svc.explain, user_id, body)
        return Response(json.dumps(body).encode(), media_type="application/json")

    @app.get("/users/{user_id:path}/history", dependencies=guarded)
    async def user_history(user_id: str,
                           limit: int = Query(50, ge=1, le=MAX_K)) -> dict[str, Any]:
        """Items posted since training, then training items (highest value first)."""
        return await run_in_threadpool(app.state.service.history, user_id, limit)

    @app.post("/recommendations", dependencies=guarded)
    async def recommendations(req: RecommendationsRequest) -> Response:
        svc: RecommendationService = app.state.service
        if req.users is None and not svc.model.supports_history:
            raise ModelError(f"model {svc.model.name!r} cannot score an anonymous history")

        if req.users is None:
            body = await run_in_threadpool(svc.recommend_history, list(req.history or []),
                                           req.k, req.values)
            return Response(json.dumps(body).encode(), media_type="application/json")
        # A batch of 10,000 users x 1,000 items is hundreds of MB of JSON. Built whole, its
        # millions of objects (and one json.dumps holding the GIL for seconds) would stall
        # the event loop, /health included, and hold it all in memory: it is answered 100
        # users at a time, each piece scored and encoded off the loop. A user whose answer
        # fails gets {"user", "error"} in its place (the status is sent with the first
        # piece, so an error further on could not change it, and must not cut the JSON).
        users, piece = list(req.users), 100
        k, include_seen = req.k, req.include_seen

        def answer(chunk: list[Any]) -> list[dict[str, Any]]:
            try:
                return svc.recommend_users(chunk, k, include_seen)
            except RecforgeError:  # find which: one by one
                out: list[dict[str, Any]] = []
                for u in chunk:
                    try:
                        out.extend(svc.recommend_users([u], k, include_seen))
                    except RecforgeError as exc:
                        out.append({"user": u, "error": str(exc)})
                return out

        first = await run_in_threadpool(answer, users[:piece])

        def encoded() -> Iterator[bytes]:
            yield ('{"results": [' + ", ".join(json.dumps(r) for r in first)).encode()
            for start in range(piece, len(users), piece):
                part = answer(users[start:start + piece])
                yield (", " + ", ".join(json.dumps(r) for r in part)).encode()
            yield b"]}"

        return StreamingResponse(encoded(), media_type="application/json")

    def reload(path: str | Path | None = None) -> dict[str, Any]:
        """Load the model again (from ``path``, or where the current one came from) and
        swap it in. Requests in flight keep the service they started with."""
        old: RecommendationService = app.state.service
        target = Path(path) if path is not None else old.path
        if target is None:
            raise ModelError("this app was built from an in-memory model; give a path")
        fresh = RecommendationService(target, events=store, index=index, n_probe=n_probe)
        with writes:  # no post or delete between the fresh service's read of the store
            fresh.sync_events()  # and the swap: none is lost, none undone
            app.state.service = fresh
        return fresh.info()

    def write(method: str, *args: Any) -> Any:
        """A post or a delete, applied to the service in place when it runs (a reload may
        have swapped it since the request came in)."""
        with writes:
            return getattr(app.state.service, method)(*args)

    app.state.reload = reload

    @app.post("/admin/reload", dependencies=guarded)
    async def admin_reload(req: ReloadRequest | None = Body(default=None)) -> dict[str, Any]:
        """Swap in the model saved at ``model`` (default: the current model's directory,
        e.g. after ``recforge train ... --out`` replaced it atomically)."""
        info = await run_in_threadpool(reload, req.model if req else None)
        return {"reloaded": True, "model": info}

    @app.post("/interactions", dependencies=guarded)
    async def post_interactions(req: EventsRequest) -> dict[str, Any]:
        """Append events; they count as seen items for their users at once. The answer
        comes after the events are durably stored."""
        rows = [(e.user, e.item, e.value, e.timestamp) for e in req.events]
        n = await run_in_threadpool(write, "add_events", rows)
        return {"stored": n}

    @app.delete("/users/{user_id:path}", dependencies=guarded)
    async def forget_user(user_id: str) -> dict[str, Any]:
        """Remove the user's events; from now on the user is answered as unknown."""
        n = await run_in_threadpool(write, "forget_user", user_id)
        return {"user": user_id, "deleted_events": n}

    @app.get("/items/{item_id:path}/similar", dependencies=guarded)
    async def similar(item_id: str, k: int = Query(10, ge=1, le=MAX_K)) -> dict[str, Any]:
        return await run_in_threadpool(app.state.service.similar, item_id, k)

    @app.get("/items", dependencies=guarded)
    async def search_items(query: str = Query(..., min_length=1, max_length=200),
                           limit: int = Query(10, ge=1, le=MAX_K)) -> dict[str, Any]:
        """Items whose title contains ``query`` (case-insensitive; ids without titles)."""
        return await run_in_threadpool(app.state.service.search_items, query, limit)

    return app
