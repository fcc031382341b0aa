"""The routes that write the event store: ``POST /interactions`` (read key) and the
erasure of a user, ``DELETE /users/{id}`` (admin key)."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations.
from fastapi import FastAPI
from fastapi.responses import Response

from recforge.serving.context import AppContext
from recforge.serving.forgetting import ModelForgetter
from recforge.serving.responses import json_response
from recforge.serving.schemas import Forgotten, Stored, errors, link

__all__ = ["add_event_routes"]


def add_event_routes(app: FastAPI, ctx: AppContext) -> None:
    """``POST /interactions`` and ``DELETE /users/{id}``."""
    PathId = ctx.inputs.path_id  # noqa: N806
    EventsRequest = ctx.inputs.events  # noqa: N806
    forgetter = ModelForgetter(ctx)  # exact forgetting by the served model, off the path
    app.state.forgetter = forgetter
    forgetter.catch_up()  # users erased before the model was saved

    @app.post("/interactions", dependencies=ctx.guarded, operation_id="post_interactions",
              response_model=None,
              responses={200: {"model": Stored, "links": {
                  "history": link("user_history", user_id="$request.body#/events/0/user"),
                  "forget": link("forget_user", user_id="$request.body#/events/0/user")}},
                         **errors(401, 413, 415, 422, 503)})
    async def post_interactions(req: EventsRequest) -> Response:  # type: ignore[valid-type]
        """Append events; they count as seen items for their users at once. The answer
        comes after the events are durably stored. Read key (the client that asks for
        recommendations reports what its users did)."""
        rows = [(e.user, e.item, e.value, e.timestamp) for e in req.events]
        n = await ctx.with_files(ctx.write, "add_events", rows)
        return json_response({"stored": n})

    @app.delete("/users/{user_id:recforge_id}", dependencies=ctx.admin_only,
                operation_id="forget_user", response_model=None,
                openapi_extra={"requestBody": {"required": False, "description": (
                    "None: the request says Content-Type: application/json, like every "
                    "request that changes state (415 otherwise); a body is ignored."),
                    "content": {"application/json": {"schema": {}}}}},
                responses={200: {"model": Forgotten, "links": {
                    "history": link("user_history", user_id="$request.path.user_id")}},
                           **errors(401, 403, 413, 415, 422, 503)})
    async def forget_user(user_id: PathId) -> Response:
        """Remove the user's events; from now on the user is answered as unknown. A
        model that forgets exactly (pop, itemknn, userknn, ease, als, gfcf, bspm) is replaced,
        in the background, by a copy without the user (``"model": "forgetting"``); other
        models keep the user's row unused (``"cut_off"``). Admin key;
        ``Content-Type: application/json`` like every request that changes state."""
        n = await ctx.with_files(ctx.write, "forget_user", user_id)
        return json_response({"user": user_id, "deleted_events": n,
                              "model": forgetter.submit(user_id)})
