"""The routes about items: ``GET /items/{id}/similar`` and ``GET /items?query=...``."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations.
from fastapi import FastAPI, Query
from fastapi.responses import Response

from recforge.serving.context import AppContext
from recforge.serving.responses import json_response
from recforge.serving.schemas import ItemSearch, SimilarItems, errors, link
from recforge.serving.service import MAX_K

__all__ = ["add_item_routes"]


def add_item_routes(app: FastAPI, ctx: AppContext) -> None:
    """``GET /items/{id}/similar`` and ``GET /items``."""
    PathId = ctx.inputs.path_id  # noqa: N806

    @app.get("/items/{item_id:recforge_id}/similar", dependencies=ctx.guarded,
             operation_id="similar_items", response_model=None,
             responses={200: {"model": SimilarItems, "links": {
                 "similar": link("similar_items",
                                 item_id="$response.body#/similar/0/item")}},
                        **errors(401, 404, 422, 503)})
    async def similar(item_id: PathId, k: int = Query(10, ge=1, le=MAX_K)) -> Response:
        return json_response(await ctx.heavy.call(ctx.service.similar, item_id, k))

    @app.get("/items", dependencies=ctx.guarded, operation_id="search_items",
             response_model=None,
             responses={200: {"model": ItemSearch, "links": {
                 "similar": link("similar_items", item_id="$response.body#/items/0/item")}},
                        **errors(401, 422, 503)})
    async def search_items(query: str = Query(..., min_length=1, max_length=200),
                           limit: int = Query(10, ge=1, le=MAX_K)) -> Response:
        """Items whose title contains ``query`` (case-insensitive; ids without titles)."""
        return json_response(await ctx.heavy.call(ctx.service.search_items, query, limit))

