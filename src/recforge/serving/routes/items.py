"""The routes about items: ``GET /items/{id}/similar``, ``GET /items?query=...`` and
``GET /explanations`` (why recommended items resemble a history, per modality)."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations.
from typing import Annotated, Literal

from fastapi import FastAPI, Query
from fastapi.responses import Response
from pydantic import AfterValidator, WithJsonSchema

from recforge.errors import ConfigError
from recforge.serving.context import AppContext
from recforge.serving.inputs import check_id_length
from recforge.serving.responses import json_response
from recforge.serving.schemas import Explanations, ItemSearch, SimilarItems, errors, link
from recforge.serving.service import MAX_EXPLAINED, MAX_K

__all__ = ["add_item_routes"]


def add_item_routes(app: FastAPI, ctx: AppContext) -> None:
    """``GET /items/{id}/similar``, ``GET /items`` and ``GET /explanations``."""
    PathId = ctx.inputs.path_id  # noqa: N806
    limits = app.state.limits

    def check_query_id(value: str) -> str:
        return check_id_length(value, limits.max_id_length)

    # an id in a query string: text of 1..max_id_length characters (as in a path)
    QueryId = Annotated[str, AfterValidator(check_query_id),  # noqa: N806
                        WithJsonSchema({"type": "string", "minLength": 1,
                                        "maxLength": limits.max_id_length})]

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
                           limit: int = Query(10, ge=1, le=MAX_K),
                           match: Literal["auto", "title", "text"] = "auto") -> Response:
        """Items whose title contains ``query`` (case-insensitive; ids without titles).
        When the model has item text vectors, ``match=auto`` follows the title matches with
        the items whose text vectors are nearest the query's (the bundled text encoder),
        ``match=text`` ranks by those alone (400 without text vectors), ``match=title``
        never uses them."""
        return json_response(await ctx.heavy.call(ctx.service.search_items, query, limit,
                                                  match))

    @app.get("/explanations", dependencies=ctx.guarded, operation_id="explanations",
             response_model=None,
             responses={200: {"model": Explanations, "links": {
                 "similar": link("similar_items",
                                 item_id="$response.body#/explanations/0/item")}},
                        **errors(401, 404, 422, 503)})
    async def explanations(
            item: list[QueryId] = Query(  # type: ignore[valid-type]
                ..., min_length=1, max_length=MAX_EXPLAINED,
                description="The items to explain (repeat: item=1&item=2)."),
            user: QueryId | None = Query(  # type: ignore[valid-type]
                None, description="Whose history: a user's training items and posted "
                "events (404 for a user the model does not know who posted nothing)."),
            history: list[QueryId] | None = Query(  # type: ignore[valid-type]
                None, max_length=limits.max_history,
                description="Or an anonymous history's item ids (unknown ones are listed "
                "and left out)."),
    ) -> Response:
        """For each recommended ``item``, the item of the history most similar to it by
        each of the model's feature groups alone ("because you watched X: similar text",
        "same genres: Comedy"). Feature models only (content, hybrid, hybrid_bpr, vbpr
        fitted with item features): 400 for any other. Exactly one of ``user`` and
        ``history``."""
        if (user is None) == (history is None):
            raise ConfigError("give exactly one of 'user' and 'history'")
        return json_response(await ctx.heavy.call(ctx.service.explanations, list(item),
                                                  user, history))
