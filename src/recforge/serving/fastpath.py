"""The fast path of the hottest endpoint: well-formed ``GET /users/{id}/recommendations``
requests answered over ASGI before routing (the FastAPI route documents the endpoint and
answers every other form of it)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI

from recforge.serving.responses import dumps, send_json
from recforge.serving.service import MAX_K

__all__ = ["FastRecommendations"]

_TRUE_FALSE = {b"true": True, b"false": False, b"1": True, b"0": False}


class FastRecommendations:
    """ASGI middleware answering well-formed ``GET /users/{id}/recommendations`` requests
    directly, before routing: no route matching, no dependency or parameter resolution.

    It only takes requests it can answer exactly as the FastAPI route would (``k`` a plain
    integer in 1..MAX_K, ``include_seen`` ``true``/``false``/``1``/``0``, ``explain`` not
    true, no other parameters, an id within the length limit, the right API key when one is
    required); every other request (and any error) goes on to FastAPI, which validates it,
    answers errors and documents the endpoint. (At 8 connections on 2 cores it raised
    throughput from 1,203-1,476 to 1,587-1,805 requests/s: docs/benchmarks.md.)

    ``owner``: the app whose ``state.service`` answers; ``key``: the read key, if any.
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
                body = dumps(self.owner.state.service.recommend_user(*params))
            except Exception:  # let the FastAPI route answer (and map) the error
                body = None
            if body is not None:
                await send_json(send, 200, body)
                return
        await self.app(scope, receive, send)
