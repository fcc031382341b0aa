"""The served model's side of ``DELETE /users/{id}``: exact forgetting, off the request path.

The erasure itself (the user's events leave the event store, and the served model's row
of the user is no longer answered from) happens in the request, under the write lock, as
before. When the model forgets exactly (:func:`recforge.models.unlearning.unlearning_kind`
``"exact"``: ``pop``, ``itemknn``, ``userknn``, ``ease``, ``als``, ``gfcf``, ``bspm``), a worker
then makes a copy of the model without the user (``forget_users``: a Woodbury update for
``ease``, a refit for the others: seconds on MovieLens-1M, ``benchmarks/
bench_unlearning.py``), builds a fresh service around it and swaps it in as a reload
does: requests in flight finish on the service they started with, and the swap itself is
one assignment under the write lock. Erasures that arrive while the worker runs are
applied together in its next round. The model directory on disk is not rewritten: run
``recforge forget`` on it (see docs/privacy.md).
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import TYPE_CHECKING, Any

from recforge.models.unlearning import EXACT, unlearning_kind
from recforge.serving.service import RecommendationService

if TYPE_CHECKING:
    from recforge.serving.context import AppContext

__all__ = ["ModelForgetter"]

log = logging.getLogger(__name__)

#: What ``DELETE /users/{id}`` answers as ``"model"``.
FORGETTING = "forgetting"  # exact forgetting scheduled; the user is cut off meanwhile
NOT_IN_MODEL = "not_in_model"  # the model never had the user
CUT_OFF = "cut_off"  # the model cannot forget exactly: its row of the user is not used


class ModelForgetter:
    """Applies erasures to the served model in a worker thread (see the module docstring)."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._pending: list[Any] = []
        self._scan = False  # catch_up asked for: look for erased users in the model
        self._worker: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        #: The last round's report (counts, seconds, method; never ids), or its error.
        self.last: dict[str, Any] | None = None

    def submit(self, user: Any) -> str:
        """Schedule ``user`` (an external id, as the request gave it) for exact forgetting
        by the served model; returns what the answer's ``"model"`` says."""
        model = self._ctx.service.model
        if unlearning_kind(model) != EXACT:
            return CUT_OFF
        if model.users_.index([user])[0] < 0:
            return NOT_IN_MODEL
        with self._lock:
            self._pending.append(user)
            self._start()
        return FORGETTING

    def _start(self) -> None:
        """Start the worker unless it runs (under ``_lock``)."""
        if self._worker is None:
            self._idle.clear()
            self._worker = threading.Thread(target=self._run, name="recforge-forget",
                                            daemon=True)
            self._worker.start()

    def catch_up(self) -> None:
        """Schedule, in the worker thread, every user the served model still holds but the
        event store has erased: a server started on, or reloaded from, a directory saved
        before the erasure (such users are already cut off: ``RecommendationService.resolve``
        answers them as unknown). One keyed hash per user of the model."""
        if self._ctx.store is None:
            return
        with self._lock:
            self._scan = True
            self._start()

    def _erased_in_model(self) -> list[Any]:
        """The served model's users that the store has erased (and that are cut off)."""
        service = self._ctx.service
        if unlearning_kind(service.model) != EXACT or not service.events.erasure_state()[0]:
            return []
        return [u for u in service.model.users_.ids.tolist() if service.resolve(u).index < 0]

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no erasure is pending (tests, a clean shutdown); False on timeout."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                users, self._pending = self._pending, []
                scan, self._scan = self._scan, False
            if scan:
                try:
                    users += self._erased_in_model()
                except Exception:  # the users stay cut off
                    log.exception("looking for erased users in the served model failed")
            with self._lock:
                if not users:
                    if self._pending or self._scan:
                        continue
                    self._worker = None
                    self._idle.set()
                    return
            try:
                self._apply(users)
            except Exception as exc:  # the users stay cut off (answered as unknown)
                log.exception("forgetting %d user(s) in the served model failed", len(users))
                self.last = {"error": f"{type(exc).__name__}: {exc}"}

    def _apply(self, users: list[Any]) -> None:
        """A copy of the served model without ``users``, swapped in as a reload swaps; if a
        reload (or another swap) came first, again on the service it swapped in."""
        ctx = self._ctx
        while True:
            old = ctx.service
            if unlearning_kind(old.model) != EXACT:
                return
            model = copy.deepcopy(old.model)
            report = model.forget_users(users)
            if not report.users_removed:
                return
            fresh = RecommendationService(model, events=ctx.store, index=ctx.index,
                                          n_probe=ctx.n_probe)
            fresh.path = old.path
            fresh.meta = {**old.meta, "train_fingerprint": model.train_fingerprint_,
                          "training_data": model.training_data_}
            with ctx.writes:
                if ctx.service is not old:
                    continue
                fresh.sync_events()  # what was posted or erased since the copy was made
                ctx.app.state.service = fresh
            summary = report.to_dict()
            summary.pop("unknown", None)
            self.last = summary
            log.info("served model forgot %d user(s) in %.2f s (%s)", report.users_removed,
                     report.seconds, report.method)
            return
