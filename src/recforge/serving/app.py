"""The HTTP API: ``create_app(model)`` returns a FastAPI app; ``recforge serve`` runs it.

Endpoints (OpenAPI docs at ``/docs``, every answer and error described there):

- ``GET /health``, ``GET /model``;
- ``GET /users/{user_id}/recommendations?k=10&include_seen=false&explain=false``: unknown
  users get the most popular items, marked ``"fallback": "popular"``; ``explain=true`` adds
  to each item the history item most similar to it (``"because"``);
- ``GET /users/{user_id}/history?limit=50``: the items the model knows the user by;
- ``POST /recommendations``: ``{"users": [...], "k": 10}`` for a batch of users, or
  ``{"history": [...], "k": 10}`` for an anonymous session (fold-in, models that support
  it); unknown history items are listed in ``unknown_items``;
- ``GET /items/{item_id}/similar?k=10``;
- ``GET /items?query=...&limit=10&match=auto``: items by title (or id, for models without
  titles), then, for a model with item text vectors, by text similarity;
- ``GET /explanations?user=...&item=...``: per item feature group (modality), the history
  item most similar to each recommended item (feature models);
- ``POST /interactions`` (with an event store); ``DELETE /users/{user_id}`` and
  ``POST /admin/reload`` (admin routes);
- ``GET /``: a web page to explore all this (files under ``static/``, served at ``/static``);
- ``GET /docs`` (Swagger UI) and ``GET /redoc``: the API description, their scripts and
  styles served by this server (``/static-offline-docs``, from the fastapi-offline
  package), never from a CDN: they work offline.

Bad input answers 4xx with a JSON ``{"detail": ...}``: 422 for invalid parameters or bodies
(k outside 1..1000, malformed JSON, wrong types, an id or a request over a limit), 404 for
unknown items, 400 for requests the model cannot answer.

What protects the server (docs/serving.md, "Protection"):

- keys: with a read key (``api_key=`` or ``RECFORGE_API_KEY``) every endpoint but
  ``/health``, the page (``/``, ``/static``) and the API description (``/docs``,
  ``/openapi.json``) needs ``X-API-Key`` (401 otherwise); the admin routes need the admin
  key (``admin_key=`` or ``RECFORGE_ADMIN_KEY``) in ``X-Admin-Key`` instead, and are off
  (403) on a server that has a read key but no admin key. The page asks for the read key
  only;
- the ``Host`` header must name an allowed host (``allowed_hosts``; loopback names by
  default): 421 otherwise, 400 without one (DNS rebinding);
- a request that changes state (any method but GET, HEAD, OPTIONS) must say
  ``Content-Type: application/json`` (415 otherwise: a cross-site form or ``no-cors``
  fetch cannot);
- :class:`~recforge.serving.settings.Limits`: the body size (413, counted while it is read), id length, batch users x k,
  history length, events per post (422 naming the limit), and a bounded pool for the work
  that runs in threads (503 with ``Retry-After`` when its queue is full);
- no answer shows a server path (``/model`` gives the model directory's name; absolute
  paths in error messages are cut to their last part); no CORS headers are sent.

The app is put together here from modules of one concept each: ``settings`` (limits, hosts,
keys), ``guards`` (Host, content type, body size), ``fastpath`` (the hot path before
routing), ``heavy`` (the bounded thread pool), ``inputs`` (path ids and request bodies),
``schemas`` (answers, for the OpenAPI description), ``auth`` (key checks), ``responses``
(JSON encoding, error statuses), ``access`` (the access log), ``context`` (what the routes
share) and ``routes/`` (one module per resource).

When the app shuts down (uvicorn's lifespan, or a ``TestClient`` context that ends), the
event store is closed: its SQLite WAL is checkpointed into the database file and the
``-wal`` / ``-shm`` side files go away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TextIO

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from recforge._version import __version__
from recforge.data.events import EventStore
from recforge.errors import ConfigError
from recforge.models.base import Recommender
from recforge.serving.access import AccessLog
from recforge.serving.auth import key_dependencies
from recforge.serving.context import AppContext
from recforge.serving.fastpath import FastRecommendations
from recforge.serving.guards import Guard
from recforge.serving.heavy import HeavyWork
from recforge.serving.inputs import inputs
from recforge.serving.responses import add_error_handlers
from recforge.serving.routes.admin import add_admin_routes
from recforge.serving.routes.events import add_event_routes
from recforge.serving.routes.items import add_item_routes
from recforge.serving.routes.meta import add_meta_routes
from recforge.serving.routes.recommendations import add_recommendation_routes
from recforge.serving.service import RecommendationService
from recforge.serving.settings import Limits, allowed_host_names, server_keys

__all__ = ["create_app"]


def create_app(model: Recommender | str | Path, *, api_key: str | None = None,
               admin_key: str | None = None, events: str | Path | None = None,
               index: str = "exact", n_probe: int = 8,
               allowed_hosts: Iterable[str] | None = None,
               limits: Limits | None = None,
               access_log: bool | TextIO = False) -> FastAPI:
    """A FastAPI app answering for ``model`` (a fitted model or a saved model directory).

    ``events``: path of the SQLite event store (``POST /interactions``,
    ``DELETE /users/{id}``); ``None`` serves without one. ``index="ivf"`` answers per-user
    requests from an approximate faiss index (dot-product models; ``n_probe`` lists).
    ``api_key`` (default ``RECFORGE_API_KEY``): the read key, for every endpoint but the
    admin ones; ``admin_key`` (default ``RECFORGE_ADMIN_KEY``): the key of
    ``POST /admin/reload`` and ``DELETE /users/{id}``. ``allowed_hosts``: the names a
    ``Host`` header may give (default :data:`~recforge.serving.settings.LOOPBACK_HOSTS`;
    ``"*"``: any). ``limits``: :class:`~recforge.serving.settings.Limits` (its defaults
    when ``None``). ``access_log``: one line per request (method, path, status,
    milliseconds; :class:`~recforge.serving.access.AccessLog`) to standard error, or to the
    text stream given (``recforge serve`` turns it on unless ``--no-access-log``).
    """
    limits = limits if limits is not None else Limits()
    if not isinstance(limits, Limits):
        raise ConfigError(f"limits must be a recforge.serving.settings.Limits, got {limits!r}")
    key, admin = server_keys(api_key, admin_key)
    hosts = allowed_host_names(allowed_hosts)
    store = EventStore(events) if events is not None else None
    service = RecommendationService(model, events=store, index=index, n_probe=n_probe)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if store is not None:  # the WAL checkpointed away, the side files removed
            store.close()

    # FastAPI's own /docs and /redoc load their scripts from a CDN (a blank page offline):
    # fastapi-offline serves the same Swagger UI and ReDoc from its package files. The
    # OpenAPI description is FastAPI's, unchanged.
    app = FastAPIOffline(title="recforge", version=__version__, lifespan=lifespan,
                         description=f"Recommendations from a trained "
                                     f"{service.model.name!r} model.")
    app.state.service = service
    app.state.limits = limits
    heavy = HeavyWork(limits.heavy_workers, limits.heavy_queue, limits.retry_after)
    app.state.heavy = heavy
    guarded, admin_only = key_dependencies(key, admin)
    ctx = AppContext(app=app, heavy=heavy, inputs=inputs(limits), guarded=guarded,
                     admin_only=admin_only, store=store, index=index, n_probe=n_probe)
    app.state.reload = ctx.reload
    add_error_handlers(app)
    # in the order the OpenAPI description lists them
    add_meta_routes(app, ctx, key_required=key is not None)
    add_recommendation_routes(app, ctx)
    add_admin_routes(app, ctx)
    add_event_routes(app, ctx)
    add_item_routes(app, ctx)
    # Outermost last: the guard sees every request before the fast path answers one.
    app.add_middleware(FastRecommendations, owner=app, key=key,
                       max_id_length=limits.max_id_length, max_history=limits.max_history)
    app.add_middleware(Guard, hosts=hosts, max_body=limits.max_body_bytes)
    if access_log:  # outermost: the guards' refusals are logged too
        app.add_middleware(AccessLog, stream=None if access_log is True else access_log)
    return app
