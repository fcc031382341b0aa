"""The bounded thread pool of an app's heavy work (batches, fold-ins, explanations, search,
similar items, writes, reloads): 503 with ``Retry-After`` when its queue is full."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fastapi import HTTPException

__all__ = ["HeavyWork"]


class HeavyWork:
    """The work that runs in threads: at most ``workers`` requests' work at once, in a pool
    of the app's own (not the thread pool every other endpoint shares), and at most
    ``queue`` more requests waiting; one more is answered 503 with ``Retry-After`` at once,
    so that a flood of batches neither exhausts a shared pool nor queues without bound,
    and the endpoints that need no thread (``/health``, one user's recommendations, a
    user's history) keep answering.

    A request holds its place from :meth:`enter` to :meth:`leave`; a place is counted free
    again only once its work has finished (a client that went away does not free a thread
    still working for it)."""

    def __init__(self, workers: int, queue: int, retry_after: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="recforge-heavy")
        self._places = workers + queue
        self._lock = threading.Lock()
        self._busy = f"the server is busy ({workers} heavy requests running, {queue} waiting)"
        self._retry = str(retry_after)

    def enter(self) -> None:
        """Take a place (503 when none is free)."""
        with self._lock:
            if self._places == 0:
                raise HTTPException(503, detail=self._busy, headers={"Retry-After": self._retry})
            self._places -= 1

    def leave(self) -> None:
        """Give a place back."""
        with self._lock:
            self._places += 1

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the pool, for a request that holds a place."""
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the pool, holding a place until it has run."""
        self.enter()

        def job() -> Any:
            try:
                return fn(*args)
            finally:
                self.leave()

        try:
            future: Future[Any] = self._pool.submit(job)
        except BaseException:  # e.g. the pool shut down with the interpreter
            self.leave()
            raise
        # cancelled before it ran (the client went away while it waited): job never runs
        future.add_done_callback(lambda f: self.leave() if f.cancelled() else None)
        return await asyncio.wrap_future(future)
