"""The routes that answer what users are recommended and what they are known by:
``GET /users/{id}/recommendations``, ``GET /users/{id}/history`` and
``POST /recommendations`` (a batch of users, or an anonymous history)."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations.
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import Response

from recforge.errors import ModelError, RecforgeError
from recforge.serving.context import AppContext
from recforge.serving.fastpath import INLINE_HISTORY
from recforge.serving.heavy import HeavyWork
from recforge.serving.responses import HeldStream, dumps, json_response
from recforge.serving.schemas import (
    BatchRecommendations,
    SessionRecommendations,
    UserHistory,
    UserRecommendations,
    errors,
    link,
)
from recforge.serving.service import MAX_K, RecommendationService, Resolved

__all__ = ["add_recommendation_routes"]

_log = logging.getLogger(__name__)
#: Users of a batch scored, encoded and sent at a time.
_PIECE = 100


def add_recommendation_routes(app: FastAPI, ctx: AppContext) -> None:
    """``GET /users/{id}/recommendations``, ``GET /users/{id}/history`` and
    ``POST /recommendations``."""
    PathId = ctx.inputs.path_id  # noqa: N806
    RecommendationsRequest = ctx.inputs.recommendations  # noqa: N806
    heavy = ctx.heavy
    recs_links = {"similar": link("similar_items", item_id="$response.body#/items/0/item"),
                  "history": link("user_history", user_id="$request.path.user_id")}

    @app.get("/users/{user_id:recforge_id}/recommendations", dependencies=ctx.guarded,
             operation_id="user_recommendations", response_model=None,
             responses={200: {"model": UserRecommendations, "links": recs_links},
                        **errors(401, 422, 503)})
    async def user_recommendations(user_id: PathId, k: int = Query(10, ge=1, le=MAX_K),
                                   include_seen: bool = False,
                                   explain: bool = False) -> Response:
        # Well-formed requests of this hot path are answered by FastRecommendations before
        # routing; this route documents the endpoint and answers everything else. About a
        # millisecond of scoring, run inline (a thread hop would cost more than it frees).
        svc = ctx.service
        body = svc.recommend_user(user_id, k, include_seen)
        if explain:  # one item-similarity block (k x n_items): off the event loop
            body = await heavy.call(svc.explain, user_id, body)
        return json_response(body)

    @app.get("/users/{user_id:recforge_id}/history", dependencies=ctx.guarded,
             operation_id="user_history", response_model=None,
             responses={200: {"model": UserHistory, "links": {
                 "recommendations": link("user_recommendations",
                                         user_id="$request.path.user_id")}},
                        **errors(401, 422)})
    async def user_history(user_id: PathId,
                           limit: int = Query(50, ge=1, le=MAX_K)) -> Response:
        """Items posted since training, then training items (highest value first). Run
        inline: it costs what the user's own items cost."""
        return json_response(ctx.service.history(user_id, limit))

    @app.post("/recommendations", dependencies=ctx.guarded, operation_id="recommendations",
              response_model=None,
              responses={200: {"model": BatchRecommendations | SessionRecommendations},
                         **errors(401, 413, 415, 422, 503)})
    async def recommendations(req: RecommendationsRequest) -> Response:  # type: ignore[valid-type]
        svc = ctx.service
        if req.users is None and not svc.model.supports_history:
            raise ModelError(f"model {svc.model.name!r} cannot score an anonymous history")
        if req.users is None:
            history = list(req.history or [])
            if len(history) <= INLINE_HISTORY:  # a session: cheaper than a thread hop
                return json_response(svc.recommend_history(history, req.k, req.values))
            body = await heavy.call(svc.recommend_history, history, req.k, req.values)
            return json_response(body)
        return await _batch(heavy, svc, list(req.users), req.k, req.include_seen)


async def _batch(heavy: HeavyWork, svc: RecommendationService, users: list[Any], k: int,
                 include_seen: bool) -> Response:
    """A batch of 10,000 users x 10 items is megabytes of JSON: built whole, its objects
    (and one json.dumps holding the GIL) would stall the event loop, /health included.
    Every id is resolved first (an id that cannot be answered is a 4xx before the first
    byte); then the answer is scored, encoded and sent 100 users at a time, off the
    loop. A user whose answer fails gets ``{"user", "error"}`` in its place (the status
    went out with the first piece: an error further on must not cut the JSON)."""
    heavy.enter()
    try:
        resolved: list[Resolved] = await heavy.run(svc.resolve_users, users)
        first = await heavy.run(_answer, svc, resolved[:_PIECE], k, include_seen)
    except BaseException:
        heavy.leave()
        raise

    async def encoded() -> AsyncIterator[bytes]:
        yield b'{"results":[' + first
        for start in range(_PIECE, len(resolved), _PIECE):
            yield b"," + await heavy.run(_answer, svc, resolved[start:start + _PIECE], k,
                                         include_seen)
        yield b"]}"

    return HeldStream(encoded(), release=heavy.leave)


def _answer(svc: RecommendationService, chunk: list[Resolved], k: int,
            include_seen: bool) -> bytes:
    """The JSON of a piece of a batch, without its brackets; a user whose answer fails
    gets ``{"user", "error"}``."""
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
    return b",".join(dumps(r) for r in results)
