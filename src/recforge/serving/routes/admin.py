"""The admin route: ``POST /admin/reload`` swaps in a model saved again (admin key)."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations.
from fastapi import Body, FastAPI
from fastapi.responses import Response

from recforge.serving.context import AppContext
from recforge.serving.responses import json_response
from recforge.serving.schemas import Reloaded, errors

__all__ = ["add_admin_routes"]


def add_admin_routes(app: FastAPI, ctx: AppContext) -> None:
    """``POST /admin/reload``."""
    ReloadRequest = ctx.inputs.reload  # noqa: N806

    @app.post("/admin/reload", dependencies=ctx.admin_only, response_model=None,
              responses={200: {"model": Reloaded}, **errors(401, 403, 413, 415, 422, 503)})
    async def admin_reload(
            req: ReloadRequest | None = Body(default=None)) -> Response:  # type: ignore[valid-type]
        """Swap in the model saved at ``model`` (default: the current model's directory,
        e.g. after ``recforge train ... --out`` replaced it atomically). Admin key."""
        info = await ctx.with_files(ctx.reload, req.model if req else None)
        return json_response({"reloaded": True, "model": info})
