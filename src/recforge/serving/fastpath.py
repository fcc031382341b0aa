"""The fast path of the hottest endpoints: well-formed ``GET /users/{id}/recommendations``
requests, and ``POST /recommendations`` with a short anonymous ``history`` (a session's
next items), answered over ASGI before routing (the FastAPI routes document the endpoints
and answer every other form of them)."""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import FastAPI

from recforge.serving.batching import HistoryBatcher
from recforge.serving.responses import dumps, send_json
from recforge.serving.service import MAX_K

__all__ = ["FastRecommendations"]

_TRUE_FALSE = {b"true": True, b"false": False, b"1": True, b"0": False}
#: The longest history answered inline (on the event loop, by the fast path or the route):
#: a 50-item SASRec session costs about a millisecond, less than a thread hop adds; longer
#: histories go to the bounded heavy-work pool.
INLINE_HISTORY = 200


class FastRecommendations:
    """ASGI middleware answering well-formed ``GET /users/{id}/recommendations`` requests
    directly, before routing: no route matching, no dependency or parameter resolution.

    It only takes requests it can answer exactly as the FastAPI route would (``k`` a plain
    integer in 1..MAX_K, ``include_seen`` ``true``/``false``/``1``/``0``, ``explain`` not
    true, no other parameters, an id within the length limit, the right API key when one is
    required); every other request (and any error) goes on to FastAPI, which validates it,
    answers errors and documents the endpoint. (At 8 connections on 2 cores it raised
    throughput from 1,203-1,476 to 1,587-1,805 requests/s: docs/benchmarks.md.)

    It also answers ``POST /recommendations`` whose JSON body is ``{"history": [...]}``
    with an optional ``"k"`` and nothing else, the history of 1 to :data:`INLINE_HISTORY`
    ids (JSON integers, or strings within the length limit), for a model that folds a
    history in: the body is read whole (the guard has counted it) and, unless it is of
    that form, handed on to FastAPI unchanged. Concurrent such requests are scored
    together (:class:`~recforge.serving.batching.HistoryBatcher`: the ones that arrive in
    one turn of the event loop, one forward pass).

    ``owner``: the app whose ``state.service`` answers; ``key``: the read key, if any.
    """

    def __init__(self, app: Any, *, owner: FastAPI, key: str | None,
                 max_id_length: int, max_history: int = INLINE_HISTORY) -> None:
        self.app = app
        self.owner = owner
        self.key = key.encode() if key is not None else None
        self.max_id_length = max_id_length
        self.max_history = min(max_history, INLINE_HISTORY)
        #: the histories that arrive together are scored together (one forward pass)
        self.batcher = HistoryBatcher(lambda: owner.state.service)

    def _keyed(self, scope: dict[str, Any]) -> bool:
        """Whether the request carries the read key (or none is needed)."""
        if self.key is None:
            return True
        given = next((v for k, v in scope["headers"] if k == b"x-api-key"), None)
        return given is not None and hmac.compare_digest(given, self.key)

    def _history(self, body: bytes) -> tuple[list[Any], int] | None:
        """``(history, k)`` of a body the fast path answers; ``None`` for any other."""
        try:
            req = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or an integer of 4,300+ digits
            return None
        if type(req) is not dict or "history" not in req or not req.keys() <= {"history", "k"}:
            return None
        history, k = req["history"], req.get("k", 10)
        if type(history) is not list or not 1 <= len(history) <= self.max_history:
            return None
        if type(k) is not int or not 1 <= k <= MAX_K:  # (type: true is no k, as in strict)
            return None
        limit = self.max_id_length
        for x in history:
            kind = type(x)
            if not (kind is int or (kind is str and 0 < len(x) <= limit)):
                return None
        return history, k

    async def _post(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``POST /recommendations``: a short history answered here, anything else (and
        any error) by FastAPI, given the body as it came."""
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        service = self.owner.state.service
        parsed = self._history(body) if service.model.supports_history else None
        if parsed is not None:
            try:  # scored with the other sessions that arrived in this loop turn
                answer = dumps(await self.batcher.answer(*parsed))
            except Exception:  # let the FastAPI route answer (and map) the error
                answer = None
            if answer is not None:
                await send_json(send, 200, answer)
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

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
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] == "/recommendations" and self._keyed(scope)):
            await self._post(scope, receive, send)
            return
        params = self._params(scope) if scope["type"] == "http" else None
        if params is not None:
            try:
                body = dumps(self.owner.state.service.recommend_user(*params))
            except Exception:  # let the FastAPI route answer (and map) the error
                body = None
            if body is not None:
                await send_json(send, 200, body)
                return
        await self.app(scope, receive, send)
