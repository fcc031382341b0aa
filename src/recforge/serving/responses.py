"""How the server's answers go out: compact strict JSON (one encoder, made once), sent by
the routes or straight over ASGI, and errors mapped to their status with a
``{"detail": ...}`` that never shows a server path or an invalid JSON token."""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from recforge.errors import ConfigError, DataError, RecforgeError
from recforge.serving.service import NotFound

__all__ = ["HeldStream", "add_error_handlers", "dumps", "http_status", "json_response",
           "public", "send_error", "send_json"]

_JSON_HEADERS = [(b"content-type", b"application/json")]
#: Answers as compact JSON, by one encoder made once (json.dumps with options builds one per
#: call: 22 us a recommendation list against 14 us); strict: a NaN is an error, never the
#: invalid JSON token ``NaN``.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any) -> bytes:
    """``value`` as compact, strict JSON bytes."""
    return _encode(value).encode()


def json_response(body: Any) -> Response:
    """A route's answer: ``body`` encoded by :func:`dumps`."""
    return Response(dumps(body), media_type="application/json")


async def send_json(send: Any, status: int, body: bytes,
                    headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``body`` (JSON bytes) with ``status`` over ASGI, without FastAPI."""
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Any, status: int, detail: str) -> None:
    """Answer ``{"detail": detail}`` with ``status`` over ASGI, without FastAPI."""
    await send_json(send, status, dumps({"detail": detail}))


class HeldStream(StreamingResponse):
    """A streamed answer that gives back its heavy-work place once it is sent (or cut)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="application/json")
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def http_status(exc: RecforgeError) -> int:
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


def public(message: str) -> str:
    """``message`` with every absolute path cut to its last part: answers never show where
    the server keeps its files."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], message)


async def _invalid_request(_: Any, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's own handler echoes the input, and a NaN / Infinity in it (valid for
    # Python's JSON parser, not for its encoder) would turn a 422 into a 500.
    return JSONResponse(status_code=422,
                        content={"detail": _finite(jsonable_encoder(exc.errors()))})


async def _recforge_error(_: Any, exc: RecforgeError) -> JSONResponse:
    return JSONResponse(status_code=http_status(exc), content={"detail": str(exc)})


def add_error_handlers(app: FastAPI) -> None:
    """Answer invalid requests 422 in strict JSON, and recforge errors with
    :func:`http_status`."""
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(RecforgeError, _recforge_error)  # type: ignore[arg-type]
