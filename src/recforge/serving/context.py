"""What the routes of one app share: its heavy-work pool, its parameter types, the key
checks of its routes, and the model swap of a reload against the writes of the event
store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException

from recforge.data.events import EventStore
from recforge.errors import ModelError, RecforgeError
from recforge.serving.heavy import HeavyWork
from recforge.serving.inputs import Inputs
from recforge.serving.responses import http_status, public
from recforge.serving.service import RecommendationService

__all__ = ["AppContext"]


@dataclass(frozen=True)
class AppContext:
    """One app's shared parts. ``guarded``: the dependencies of a route that needs the read
    key; ``admin_only``: of an admin route; ``store``, ``index``, ``n_probe``: what a reload
    builds its fresh service with. The service itself is ``app.state.service`` (a reload
    swaps it)."""

    app: FastAPI
    heavy: HeavyWork
    inputs: Inputs
    guarded: list[Any]
    admin_only: list[Any]
    store: EventStore | None
    index: str
    n_probe: int
    #: Posts and deletes against the swap of a reload.
    writes: threading.Lock = field(default_factory=threading.Lock)

    @property
    def service(self) -> RecommendationService:
        """The service answering now."""
        return self.app.state.service  # type: ignore[no-any-return]

    async def with_files(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` as heavy work, for the routes that open files (a model directory,
        the event store): their errors may name the server's paths, which are cut to their
        last part before they are answered."""
        try:
            return await self.heavy.call(fn, *args)
        except RecforgeError as exc:
            raise HTTPException(http_status(exc), detail=public(str(exc))) from None

    def reload(self, path: str | Path | None = None) -> dict[str, Any]:
        """Load the model again (from ``path``, or where the current one came from) and
        swap it in. Requests in flight keep the service they started with."""
        old = self.service
        target = Path(path) if path is not None else old.path
        if target is None:
            raise ModelError("this app was built from an in-memory model; give a path")
        fresh = RecommendationService(target, events=self.store, index=self.index,
                                      n_probe=self.n_probe)
        with self.writes:  # no post or delete between the fresh service's read of the store
            fresh.sync_events()  # and the swap: none is lost, none undone
            self.app.state.service = fresh
        forgetter = getattr(self.app.state, "forgetter", None)
        if forgetter is not None:  # erased users the reloaded model still holds
            forgetter.catch_up()
        return fresh.info()

    def write(self, method: str, *args: Any) -> Any:
        """A post or a delete, applied to the service in place when it runs (a reload may
        have swapped it since the request came in)."""
        with self.writes:
            return getattr(self.service, method)(*args)
