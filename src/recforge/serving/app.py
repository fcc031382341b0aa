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
- ``GET /items?query=...&limit=10``: items by title (or id, for models without titles);
- ``POST /interactions`` (with an event store); ``DELETE /users/{user_id}`` and
  ``POST /admin/reload`` (admin routes);
- ``GET /``: a web page to explore all this (files under ``static/``, served at ``/static``).

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
- :class:`Limits`: the body size (413, counted while it is read), id length, batch users x k,
  history length, events per post (422 naming the limit), and a bounded pool for the work
  that runs in threads (503 with ``Retry-After`` when its queue is full);
- no answer shows a server path (``/model`` gives the model directory's name; absolute
  paths in error messages are cut to their last part); no CORS headers are sent.
"""

# No ``from __future__ import annotations``: the routes' parameter types are built in
# create_app (their limits are the app's), and FastAPI reads them from the live objects.
import asyncio
import dataclasses
import hmac
import json
import logging
import math
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Security
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from starlette.convertors import Convertor, register_url_convertor

from recforge import __version__
from recforge.errors import ConfigError, DataError, ModelError, RecforgeError
from recforge.models.base import Recommender
from recforge.serving.service import MAX_K, NotFound, RecommendationService, Resolved

__all__ = ["create_app", "Limits", "LOOPBACK_HOSTS"]

_log = logging.getLogger(__name__)

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
#: The names a ``Host`` header may give by default: this machine's loopback names.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (``recforge serve --max-...``).

    A request over a limit is refused before any work, with a message that names the limit:
    413 for the body, 422 for the rest, 503 (with ``Retry-After``) when the heavy-work queue
    is full.
    """

    #: Bytes of a request body (counted as it arrives, not after it was read whole).
    max_body_bytes: int = 1 << 20
    #: Characters of one id (user or item), in a path or a body.
    max_id_length: int = 256
    #: Recommendations one batch may ask for: its users times ``k``.
    max_batch_results: int = 100_000
    #: Items of an anonymous history (``POST /recommendations {"history": ...}``).
    max_history: int = 1_000
    #: Events of one ``POST /interactions``.
    max_events: int = 10_000
    #: Heavy requests (batches, fold-ins, explanations, search, similar items, writes,
    #: reloads) that run at once, each in a thread of the server's heavy-work pool.
    heavy_workers: int = 4
    #: Heavy requests that may wait for a thread; one more is answered 503 at once.
    heavy_queue: int = 16
    #: Seconds a 503 asks the client to wait (``Retry-After``).
    retry_after: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            low = 0 if f.name == "heavy_queue" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"Limits.{f.name} must be an integer >= {low}, got {value!r}")


class _AnyId(Convertor[str]):
    """An id in a path: any characters, slashes and line breaks included (Starlette's
    ``path`` convertor, ``.*``, does not match a line break: such an id answered 404 from
    the router, where the same id in a body was answered)."""

    regex = "[\\s\\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("recforge_id", _AnyId())


# -- what answers look like (documentation only: the routes encode their own JSON) -----------
AnyId = int | str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a message, or (422 from validation) a list of errors."""

    detail: str | list[dict[str, Any]]


class Because(BaseModel):
    item: AnyId
    similarity: float
    title: str | None = None


class RecommendedItem(BaseModel):
    item: AnyId
    rank: int
    score: float
    title: str | None = Field(default=None, description="With item metadata only.")
    because: Because | None = Field(default=None, description="With explain=true only.")


class UserRecommendations(BaseModel):
    user: AnyId
    items: list[RecommendedItem]
    fallback: Literal["popular", "history"] | None


class UserError(BaseModel):
    """A user of a batch whose answer failed (the other users are answered)."""

    user: AnyId
    error: str


class BatchRecommendations(BaseModel):
    results: list[UserRecommendations | UserError]


class SessionRecommendations(BaseModel):
    items: list[RecommendedItem]
    unknown_items: list[AnyId]


class HistoryItem(BaseModel):
    item: AnyId
    value: float | None
    source: Literal["events", "training"]
    title: str | None = None


class UserHistory(BaseModel):
    user: AnyId
    known: bool
    total: int
    items: list[HistoryItem]


class SimilarItems(BaseModel):
    item: AnyId
    similar: list[RecommendedItem]


class FoundItem(BaseModel):
    item: AnyId
    title: str | None = None


class ItemSearch(BaseModel):
    query: str
    total: int
    items: list[FoundItem]


class ModelInfo(BaseModel):
    model: str
    params: dict[str, Any]
    n_users: int
    n_items: int
    recforge_version: str | None
    created: str | None
    train_fingerprint: str | None
    supports_history: bool
    directory: str | None = Field(description="The model directory's name (never its path).")


class Reloaded(BaseModel):
    reloaded: bool
    model: ModelInfo


class Stored(BaseModel):
    stored: int


class Forgotten(BaseModel):
    user: str
    deleted_events: int


class Health(BaseModel):
    status: str


_ERROR_TEXT = {
    400: "Malformed request (no Host header, a body that is not JSON) or one the model "
         "cannot answer.",
    401: "Missing or wrong key.",
    403: "Admin routes are off: the server has a read key but no admin key.",
    404: "Unknown item.",
    413: "The body is over the server's size limit.",
    415: "A request that changes state must be Content-Type: application/json.",
    421: "The Host header names a host this server does not serve.",
    422: "Invalid parameters or body, or over one of the server's limits.",
    503: "The server's heavy-work queue is full: retry after Retry-After seconds.",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in (400, 421, *codes):
        out[code] = {"model": ErrorBody, "description": _ERROR_TEXT[code]}
    if 503 in codes:
        out[503]["headers"] = {"Retry-After": {
            "description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
    return out


def _link(operation: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation, "parameters": parameters}


# -- request bodies: their limits come from the app's Limits -----------------------------------
def _check_id_length(value: str, limit: int) -> str:
    # An empty id is none (and in a path, /users//history, it would not survive URL
    # normalisation: the request would reach another route).
    if not value:
        raise ValueError("an id cannot be empty")
    if len(value) > limit:
        raise ValueError(f"an id of {len(value):,} characters is over this server's limit "
                         f"of {limit:,} (max_id_length)")
    return value


def _request_models(limits: Limits) -> dict[str, type[BaseModel]]:
    """The request body models of an app with ``limits``: the limits are checked with a
    message that names them, and the OpenAPI schema states them."""

    def check_id(value: Any) -> Any:
        if isinstance(value, bool):  # JSON true would pass as the id 1
            raise ValueError("an id is a number or a string, not true / false")
        if isinstance(value, str):
            _check_id_length(value, limits.max_id_length)
        return value

    Id = Annotated[int | str, BeforeValidator(check_id), WithJsonSchema(
        {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 1,
                                         "maxLength": limits.max_id_length}]})]

    class RecommendationsRequest(BaseModel):
        """Either ``users`` (known or not) or ``history`` (item ids of an anonymous
        session). At most ``max_batch_results`` recommendations per batch (users x k) and
        ``max_history`` history items."""

        # exactly one of users and history; values only with history (of its length).
        # strict: JSON types as the schema states them (true is no number, "5" no k)
        model_config = ConfigDict(strict=True, json_schema_extra={
            "oneOf": [{"required": ["users"]}, {"required": ["history"]}],
            "dependentRequired": {"values": ["history"]}})

        # None: not given (an explicit null is refused, as the schema says)
        users: list[Id] = Field(  # type: ignore[assignment]
            default=None, json_schema_extra={"maxItems": limits.max_batch_results})
        history: list[Id] = Field(  # type: ignore[assignment]
            default=None, min_length=1, json_schema_extra={"maxItems": limits.max_history})
        values: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(  # type: ignore[assignment]
            default=None, json_schema_extra={"maxItems": limits.max_history},
            description="Ratings / weights of the history items (same length).")
        k: int = Field(default=10, ge=1, le=MAX_K)
        include_seen: bool = False

        @model_validator(mode="after")
        def one_of(self) -> Any:
            if (self.users is None) == (self.history is None):
                raise ValueError("give exactly one of 'users' and 'history'")
            if self.values is not None and (self.history is None
                                            or len(self.values) != len(self.history)):
                raise ValueError("'values' needs 'history' of the same length")
            if self.users is not None and len(self.users) * self.k > limits.max_batch_results:
                raise ValueError(
                    f"a batch of {len(self.users):,} users x k={self.k} asks for "
                    f"{len(self.users) * self.k:,} recommendations; this server answers at "
                    f"most {limits.max_batch_results:,} per request (max_batch_results): "
                    "split the batch or ask for fewer per user")
            if self.history is not None and len(self.history) > limits.max_history:
                raise ValueError(f"a history of {len(self.history):,} items is over this "
                                 f"server's limit of {limits.max_history:,} (max_history)")
            return self

    class ReloadRequest(BaseModel):
        model_config = ConfigDict(strict=True)

        # "" would be the working directory
        model: str | None = Field(default=None, min_length=1, max_length=4096)

    class Event(BaseModel):
        model_config = ConfigDict(strict=True)  # "value": true was stored as 1.0

        user: Id
        item: Id
        value: float | None = Field(default=None, allow_inf_nan=False)
        timestamp: int | None = Field(default=None, ge=-(2**62), le=2**62)

    def check_events(events: list[Event]) -> list[Event]:
        if len(events) > limits.max_events:
            raise ValueError(f"{len(events):,} events are over this server's limit of "
                             f"{limits.max_events:,} per request (max_events)")
        return events

    class EventsRequest(BaseModel):
        model_config = ConfigDict(strict=True)

        events: Annotated[list[Event], AfterValidator(check_events)] = Field(
            min_length=1, json_schema_extra={"maxItems": limits.max_events})

    return {"recommendations": RecommendationsRequest, "reload": ReloadRequest,
            "events": EventsRequest}


def _status(exc: RecforgeError) -> int:
    """The HTTP status of a recforge error: 404 unknown item, 422 bad input, 400 else."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, (ConfigError, DataError)):
        return 422
    return 400


def _finite(value: Any) -> Any:
    """``value`` with non-finite floats replaced by their text (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


#: An absolute POSIX path (two parts or more) in a message about files; kept: its last part.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:/[^\s/'\"`:;,()\[\]{}<>]+){2,}/?")


def _public(message: str) -> str:
    """``message`` with every absolute path cut to its last part: answers never show where
    the server keeps its files."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], message)


# -- the ASGI layers ---------------------------------------------------------------------------
_JSON_HEADERS = [(b"content-type", b"application/json")]
#: Answers as compact JSON, by one encoder made once (json.dumps with options builds one per
#: call: 22 us a recommendation list against 14 us); strict: a NaN is an error, never the
#: invalid JSON token ``NaN``.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _dumps(value: Any) -> bytes:
    return _encode(value).encode()

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _send_json(send: Any, status: int, body: bytes,
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Any, status: int, detail: str) -> None:
    await _send_json(send, status, _dumps({"detail": detail}))


def host_name(value: str) -> str | None:
    """The host name of a ``Host`` header (or of an allowed-host setting), lower case,
    without port, brackets or trailing dot; ``None`` when it is not one."""
    text = value.strip().lower()
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        rest = text[end + 1:] if end > 0 else "x"
        if rest and not (rest[0] == ":" and rest[1:].isdigit()):
            return None
        name = text[1:end]
    elif text.count(":") == 1:  # name:port
        name, port = text.split(":")
        if not port.isdigit():
            return None
    else:  # a name, or (in a setting) a bare IPv6 address
        name = text
    name = name.rstrip(".")
    return name if name and not any(c in name for c in " /\\@?#[]") else None


class _Guard:
    """Pure ASGI middleware in front of everything: the ``Host`` check (DNS rebinding), a
    JSON content type on every request that changes state (cross-site forms and ``no-cors``
    fetches), and the body size limit, counted while the body arrives. (Pure ASGI: a
    ``BaseHTTPMiddleware`` would cost every request a task and a body copy.)"""

    def __init__(self, app: Any, *, hosts: frozenset[str] | None, max_body: int) -> None:
        self.app = app
        self.hosts = hosts
        self.max_body = max_body
        self._too_large = (f"the request body is over this server's limit of {max_body:,} "
                           "bytes (max_body_bytes)")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = content_type = length = None
        hosts = 0
        for name, value in scope["headers"]:
            if name == b"host":
                host, hosts = value, hosts + 1
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        if self.hosts is not None:
            if hosts != 1:
                await _send_error(send, 400, "a request needs exactly one Host header")
                return
            name = host_name(host.decode("latin-1"))  # type: ignore[union-attr]
            if name not in self.hosts:
                await _send_error(send, 421, "this server does not answer for that Host "
                                             "(recforge serve --allowed-host NAME adds one)")
                return
        if scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        if content_type is None or content_type.split(b";", 1)[0].strip().lower() \
                != b"application/json":
            await _send_error(send, 415, f"a {scope['method']} request must say Content-Type: "
                                         "application/json")
            return
        if length is not None:
            digits = length.strip()
            if not digits.isdigit():
                await _send_error(send, 400, "Content-Length is not a number")
                return
            # (more than 18 digits is over any limit: never parsed, so Python's refusal of
            # integers of over 4,300 digits cannot turn it into a 500)
            if len(digits) > 18 or int(digits) > self.max_body:
                await _send_error(send, 413, self._too_large)
                return
        seen = 0
        started = False

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:  # FastAPI answers it (413) like any HTTPException
                    raise HTTPException(413, detail=self._too_large)
            return message

        async def watched(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except HTTPException as exc:  # read by something that does not map it
            if exc.status_code != 413 or started:
                raise
            await _send_error(send, 413, self._too_large)


_TRUE_FALSE = {b"true": True, b"false": False, b"1": True, b"0": False}


class _FastRecommendations:
    """ASGI middleware answering well-formed ``GET /users/{id}/recommendations`` requests
    directly, before routing: no route matching, no dependency or parameter resolution.

    It only takes requests it can answer exactly as the FastAPI route would (``k`` a plain
    integer in 1..MAX_K, ``include_seen`` ``true``/``false``/``1``/``0``, ``explain`` not
    true, no other parameters, an id within the length limit, the right API key when one is
    required); every other request (and any error) goes on to FastAPI, which validates it,
    answers errors and documents the endpoint. (At 8 connections on 2 cores it raised
    throughput from 1,203-1,476 to 1,587-1,805 requests/s: docs/benchmarks.md.)
    """

    def __init__(self, app: Any, *, owner: FastAPI, key: str | None,
                 max_id_length: int) -> None:
        self.app = app
        self.owner = owner
        self.key = key.encode() if key is not None else None
        self.max_id_length = max_id_length

    def _params(self, scope: dict[str, Any]) -> tuple[str, int, bool] | None:
        path: str = scope["path"]
        if (scope["type"] != "http" or scope["method"] != "GET"
                or not path.startswith("/users/") or not path.endswith("/recommendations")):
            return None
        user = path[7:-16]
        if not user or "/" in user or len(user) > self.max_id_length:
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
                body = _dumps(self.owner.state.service.recommend_user(*params))
            except Exception:  # let the FastAPI route answer (and map) the error
                body = None
            if body is not None:
                await _send_json(send, 200, body)
                return
        await self.app(scope, receive, send)


class _HeavyWork:
    """The work that runs in threads: at most ``workers`` requests' work at once, in a pool
    of the app's own (not the thread pool every other endpoint shares), and at most
    ``queue`` more requests waiting; one more is answered 503 with ``Retry-After`` at once,
    so that a flood of batches neither exhausts a shared pool nor queues without bound,
    and the endpoints that need no thread (``/health``, one user's recommendations, a
    user's history) keep answering.

    A request holds its place from :meth:`enter` to :meth:`leave`; a place is counted free
    again only once its work has finished (a client that went away does not free a thread
    still working for it)."""

    def __init__(self, workers: int, queue: int, retry_after: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="recforge-heavy")
        self._places = workers + queue
        self._lock = threading.Lock()
        self._busy = f"the server is busy ({workers} heavy requests running, {queue} waiting)"
        self._retry = str(retry_after)

    def enter(self) -> None:
        with self._lock:
            if self._places == 0:
                raise HTTPException(503, detail=self._busy, headers={"Retry-After": self._retry})
            self._places -= 1

    def leave(self) -> None:
        with self._lock:
            self._places += 1

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the pool, for a request that holds a place."""
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the pool, holding a place until it has run."""
        self.enter()

        def job() -> Any:
            try:
                return fn(*args)
            finally:
                self.leave()

        try:
            future: Future[Any] = self._pool.submit(job)
        except BaseException:  # e.g. the pool shut down with the interpreter
            self.leave()
            raise
        # cancelled before it ran (the client went away while it waited): job never runs
        future.add_done_callback(lambda f: self.leave() if f.cancelled() else None)
        return await asyncio.wrap_future(future)


class _HeldStream(StreamingResponse):
    """A streamed answer that gives back its heavy-work place once it is sent (or cut)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="application/json")
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _json(body: Any) -> Response:
    return Response(_dumps(body), media_type="application/json")


def create_app(model: Recommender | str | Path, *, api_key: str | None = None,
               admin_key: str | None = None, events: str | Path | None = None,
               index: str = "exact", n_probe: int = 8,
               allowed_hosts: Iterable[str] | None = None,
               limits: Limits | None = None) -> FastAPI:
    """A FastAPI app answering for ``model`` (a fitted model or a saved model directory).

    ``events``: path of the SQLite event store (``POST /interactions``,
    ``DELETE /users/{id}``); ``None`` serves without one. ``index="ivf"`` answers per-user
    requests from an approximate faiss index (dot-product models; ``n_probe`` lists).
    ``api_key`` (default ``RECFORGE_API_KEY``): the read key, for every endpoint but the
    admin ones; ``admin_key`` (default ``RECFORGE_ADMIN_KEY``): the key of
    ``POST /admin/reload`` and ``DELETE /users/{id}``. ``allowed_hosts``: the names a
    ``Host`` header may give (default :data:`LOOPBACK_HOSTS`; ``"*"``: any).
    ``limits``: :class:`Limits` (its defaults when ``None``).
    """
    limits = limits if limits is not None else Limits()
    if not isinstance(limits, Limits):
        raise ConfigError(f"limits must be a recforge.serving.app.Limits, got {limits!r}")
    for given, which in ((api_key, "API key"), (admin_key, "admin key")):
        if given == "":
            raise ConfigError(f"an empty {which} would lock every endpoint it guards; leave "
                              "it out to serve without one")
    key = api_key if api_key is not None else os.environ.get("RECFORGE_API_KEY") or None
    admin = admin_key if admin_key is not None else (
        os.environ.get("RECFORGE_ADMIN_KEY") or None)
    if key is not None and admin is not None and key == admin:
        raise ConfigError("the admin key must differ from the read key (the read key is "
                          "handed to every client and to the web page's users)")
    hosts = _allowed_hosts(allowed_hosts)
    store = None
    if events is not None:
        from recforge.serving.events import EventStore

        store = EventStore(events)
    service = RecommendationService(model, events=store, index=index, n_probe=n_probe)
    app = FastAPI(title="recforge", version=__version__,
                  description=f"Recommendations from a trained {service.model.name!r} model.")
    app.state.service = service
    app.state.limits = limits
    heavy = _HeavyWork(limits.heavy_workers, limits.heavy_queue, limits.retry_after)
    app.state.heavy = heavy
    writes = threading.Lock()  # posts and deletes against the swap of a reload
    bodies = _request_models(limits)
    RecommendationsRequest = bodies["recommendations"]  # noqa: N806
    ReloadRequest = bodies["reload"]  # noqa: N806
    EventsRequest = bodies["events"]  # noqa: N806

    def check_path_id(value: str) -> str:
        return _check_id_length(value, limits.max_id_length)

    PathId = Annotated[str, PathParam(), AfterValidator(check_path_id),  # noqa: N806
                       WithJsonSchema({"type": "string", "minLength": 1,
                                       "maxLength": limits.max_id_length})]

    read_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ReadKey",
                               description="The read key (recforge serve --api-key).")
    admin_header = APIKeyHeader(name="X-Admin-Key", auto_error=False, scheme_name="AdminKey",
                                description="The admin key (recforge serve --admin-key).")

    def matches(given: str | None, expected: str) -> bool:
        # the header's bytes (HTTP headers arrive as latin-1) against the key's UTF-8 bytes,
        # as the fast path compares them: a non-ASCII key works on every endpoint alike
        return given is not None and hmac.compare_digest(
            given.encode("latin-1", errors="replace"), expected.encode())

    def check_key(x_api_key: str | None = Security(read_header)) -> None:
        if key is not None and not matches(x_api_key, key):
            raise HTTPException(status_code=401, detail="missing or wrong X-API-Key header")

    def check_admin(x_admin_key: str | None = Security(admin_header)) -> None:
        if admin is not None:
            if not matches(x_admin_key, admin):
                raise HTTPException(status_code=401,
                                    detail="missing or wrong X-Admin-Key header")
        elif key is not None:
            raise HTTPException(status_code=403, detail=(
                "admin routes are off on a server with a read key but no admin key "
                "(recforge serve --admin-key, or RECFORGE_ADMIN_KEY)"))

    # Without a key, no dependency at all: it would cost every request a resolution step.
    guarded = [Depends(check_key)] if key is not None else []
    admin_only = [Depends(check_admin)] if (key is not None or admin is not None) else []

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Any, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, and a NaN / Infinity in it (valid for
        # Python's JSON parser, not for its encoder) would turn a 422 into a 500.
        return JSONResponse(status_code=422,
                            content={"detail": _finite(jsonable_encoder(exc.errors()))})

    @app.exception_handler(RecforgeError)
    async def recforge_error(_: Any, exc: RecforgeError) -> JSONResponse:
        return JSONResponse(status_code=_status(exc), content={"detail": str(exc)})

    async def with_files(fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` as heavy work, for the routes that open files (a model directory,
        the event store): their errors may name the server's paths, which are cut to their
        last part before they are answered."""
        try:
            return await heavy.call(fn, *args)
        except RecforgeError as exc:
            raise HTTPException(_status(exc), detail=_public(str(exc))) from None

    @app.get("/health", responses=_errors())
    async def health() -> Health:
        return Health(status="ok")

    # The page needs no key (like /health): it asks for the read key when the server wants
    # it, and never gets, sends or asks for the admin key.
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    if _KEY_MARKER not in page:  # pragma: no cover - guards edits of index.html
        raise RuntimeError(f"{STATIC / 'index.html'} lacks {_KEY_MARKER}")
    if key is not None:
        page = page.replace(_KEY_MARKER, _KEY_MARKER.replace("optional", "required"))

    @app.get("/", include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/model", dependencies=guarded, response_model=None,
             responses={200: {"model": ModelInfo}, **_errors(401)})
    async def model_info() -> Response:
        return _json(app.state.service.info())

    recs_links = {"similar": _link("similar_items", item_id="$response.body#/items/0/item"),
                  "history": _link("user_history", user_id="$request.path.user_id")}

    @app.get("/users/{user_id:recforge_id}/recommendations", dependencies=guarded,
             operation_id="user_recommendations", response_model=None,
             responses={200: {"model": UserRecommendations, "links": recs_links},
                        **_errors(401, 422, 503)})
    async def user_recommendations(user_id: PathId, k: int = Query(10, ge=1, le=MAX_K),
                                   include_seen: bool = False,
                                   explain: bool = False) -> Response:
        # Well-formed requests of this hot path are answered by _FastRecommendations before
        # routing; this route documents the endpoint and answers everything else. About a
        # millisecond of scoring, run inline (a thread hop would cost more than it frees).
        svc: RecommendationService = app.state.service
        body = svc.recommend_user(user_id, k, include_seen)
        if explain:  # one item-similarity block (k x n_items): off the event loop
            body = await heavy.call(svc.explain, user_id, body)
        return _json(body)

    @app.get("/users/{user_id:recforge_id}/history", dependencies=guarded,
             operation_id="user_history", response_model=None,
             responses={200: {"model": UserHistory, "links": {
                 "recommendations": _link("user_recommendations",
                                          user_id="$request.path.user_id")}},
                        **_errors(401, 422)})
    async def user_history(user_id: PathId,
                           limit: int = Query(50, ge=1, le=MAX_K)) -> Response:
        """Items posted since training, then training items (highest value first). Run
        inline: it costs what the user's own items cost."""
        return _json(app.state.service.history(user_id, limit))

    @app.post("/recommendations", dependencies=guarded, operation_id="recommendations",
              response_model=None,
              responses={200: {"model": BatchRecommendations | SessionRecommendations},
                         **_errors(401, 413, 415, 422, 503)})
    async def recommendations(req: RecommendationsRequest) -> Response:  # type: ignore[valid-type]
        svc: RecommendationService = app.state.service
        if req.users is None and not svc.model.supports_history:
            raise ModelError(f"model {svc.model.name!r} cannot score an anonymous history")
        if req.users is None:
            body = await heavy.call(svc.recommend_history, list(req.history or []),
                                    req.k, req.values)
            return _json(body)
        return await batch(svc, list(req.users), req.k, req.include_seen)

    async def batch(svc: RecommendationService, users: list[Any], k: int,
                    include_seen: bool) -> Response:
        """A batch of 10,000 users x 10 items is megabytes of JSON: built whole, its objects
        (and one json.dumps holding the GIL) would stall the event loop, /health included.
        Every id is resolved first (an id that cannot be answered is a 4xx before the first
        byte); then the answer is scored, encoded and sent 100 users at a time, off the
        loop. A user whose answer fails gets ``{"user", "error"}`` in its place (the status
        went out with the first piece: an error further on must not cut the JSON)."""
        piece = 100
        heavy.enter()
        try:
            resolved: list[Resolved] = await heavy.run(svc.resolve_users, users)

            def answer(chunk: list[Resolved]) -> bytes:
                try:
                    results = svc.recommend_resolved(chunk, k, include_seen)
                except Exception:  # find which: one by one
                    results = []
                    for who in chunk:
                        try:
                            results.extend(svc.recommend_resolved([who], k, include_seen))
                        except RecforgeError as exc:
                            results.append({"user": who.user, "error": str(exc)})
                        except Exception:
                            _log.exception("recommendations for user %r failed", who.user)
                            results.append({"user": who.user, "error": "internal error"})
                return b",".join(_dumps(r) for r in results)

            first = await heavy.run(answer, resolved[:piece])
        except BaseException:
            heavy.leave()
            raise

        async def encoded() -> AsyncIterator[bytes]:
            yield b'{"results":[' + first
            for start in range(piece, len(resolved), piece):
                yield b"," + await heavy.run(answer, resolved[start:start + piece])
            yield b"]}"

        return _HeldStream(encoded(), release=heavy.leave)

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

    @app.post("/admin/reload", dependencies=admin_only, response_model=None,
              responses={200: {"model": Reloaded}, **_errors(401, 403, 413, 415, 422, 503)})
    async def admin_reload(
            req: ReloadRequest | None = Body(default=None)) -> Response:  # type: ignore[valid-type]
        """Swap in the model saved at ``model`` (default: the current model's directory,
        e.g. after ``recforge train ... --out`` replaced it atomically). Admin key."""
        info = await with_files(reload, req.model if req else None)
        return _json({"reloaded": True, "model": info})

    @app.post("/interactions", dependencies=guarded, operation_id="post_interactions",
              response_model=None,
              responses={200: {"model": Stored, "links": {
                  "history": _link("user_history", user_id="$request.body#/events/0/user"),
                  "forget": _link("forget_user", user_id="$request.body#/events/0/user")}},
                         **_errors(401, 413, 415, 422, 503)})
    async def post_interactions(req: EventsRequest) -> Response:  # type: ignore[valid-type]
        """Append events; they count as seen items for their users at once. The answer
        comes after the events are durably stored. Read key (the client that asks for
        recommendations reports what its users did)."""
        rows = [(e.user, e.item, e.value, e.timestamp) for e in req.events]
        n = await with_files(write, "add_events", rows)
        return _json({"stored": n})

    @app.delete("/users/{user_id:recforge_id}", dependencies=admin_only,
                operation_id="forget_user", response_model=None,
                openapi_extra={"requestBody": {"required": False, "description": (
                    "None: the request says Content-Type: application/json, like every "
                    "request that changes state (415 otherwise); a body is ignored."),
                    "content": {"application/json": {"schema": {}}}}},
                responses={200: {"model": Forgotten, "links": {
                    "history": _link("user_history", user_id="$request.path.user_id")}},
                           **_errors(401, 403, 413, 415, 422, 503)})
    async def forget_user(user_id: PathId) -> Response:
        """Remove the user's events; from now on the user is answered as unknown. Admin
        key; ``Content-Type: application/json`` like every request that changes state."""
        n = await with_files(write, "forget_user", user_id)
        return _json({"user": user_id, "deleted_events": n})

    @app.get("/items/{item_id:recforge_id}/similar", dependencies=guarded,
             operation_id="similar_items", response_model=None,
             responses={200: {"model": SimilarItems, "links": {
                 "similar": _link("similar_items",
                                  item_id="$response.body#/similar/0/item")}},
                        **_errors(401, 404, 422, 503)})
    async def similar(item_id: PathId, k: int = Query(10, ge=1, le=MAX_K)) -> Response:
        return _json(await heavy.call(app.state.service.similar, item_id, k))

    @app.get("/items", dependencies=guarded, operation_id="search_items", response_model=None,
             responses={200: {"model": ItemSearch, "links": {
                 "similar": _link("similar_items", item_id="$response.body#/items/0/item")}},
                        **_errors(401, 422, 503)})
    async def search_items(query: str = Query(..., min_length=1, max_length=200),
                           limit: int = Query(10, ge=1, le=MAX_K)) -> Response:
        """Items whose title contains ``query`` (case-insensitive; ids without titles)."""
        return _json(await heavy.call(app.state.service.search_items, query, limit))

    # Outermost last: the guard sees every request before the fast path answers one.
    app.add_middleware(_FastRecommendations, owner=app, key=key,
                       max_id_length=limits.max_id_length)
    app.add_middleware(_Guard, hosts=hosts, max_body=limits.max_body_bytes)
    return app


def _allowed_hosts(names: Iterable[str] | None) -> frozenset[str] | None:
    """The host names a request may give (``None``: any, for ``"*"``)."""
    given = list(LOOPBACK_HOSTS if names is None else ([names] if isinstance(names, str)
                                                       else names))
    if "*" in given:
        return None
    out = set()
    for name in given:
        parsed = host_name(str(name))
        if parsed is None:
            raise ConfigError(f"not a host name: {name!r} (allowed hosts are names or "
                              "addresses, without scheme or path)")
        out.add(parsed)
    if not out:
        raise ConfigError("no allowed host: give at least one name, or '*' for any")
    return frozenset(out)
