"""Micro-batching of concurrent anonymous-history requests on the event loop: the sessions
that arrive together are scored by one forward pass.

A served next-item answer is mostly fixed cost (a forward pass of a few dozen small
operations, a top-k, the ids): scoring 8 histories at once costs about a quarter of 8
passes (docs/serving.md, "Next-item answers"). :class:`HistoryBatcher` collects the
requests that reach it in one turn of the event loop and answers them with one call, in
the next turn: no timer and no thread, so a lone request waits for nothing (one loop turn,
microseconds), while under load the requests that queued up while the previous batch was
scored go together. Everything runs on the loop's thread (the answers are computed inline,
as a single history's answer was): nothing to shut down, no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["HistoryBatcher", "MAX_BATCH"]

#: The most requests scored by one call (a bigger group is split): beyond about 16 rows a
#: SASRec pass costs as much per row as alone, and the first answer would wait for all.
MAX_BATCH = 16

#: ``(history, k)``: one request.
Request = tuple[list[Any], int]


class HistoryBatcher:
    """Answers ``(history, k)`` requests in groups: ``many(requests) -> answers`` scores a
    group at once; ``one(history, k) -> answer`` answers a request alone, used for every
    request of a group whose ``many`` call raised (so that each gets its own answer or
    its own error). Both are looked up at each flush (``answerer()`` returns the object
    that has them: the app's current service, which a reload may replace)."""

    def __init__(self, answerer: Callable[[], Any], max_batch: int = MAX_BATCH) -> None:
        self._answerer = answerer
        self.max_batch = max(1, int(max_batch))
        self._pending: list[tuple[list[Any], int, asyncio.Future[Any]]] = []
        self._scheduled = False
        #: groups answered and requests in them (for the benchmark and tests)
        self.batches = 0
        self.requests = 0

    async def answer(self, history: list[Any], k: int) -> Any:
        """The answer to one request, scored with the others of this loop turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((history, k, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending:
            group = self._pending[:self.max_batch]
            del self._pending[:self.max_batch]
            self._answer(group)

    def _answer(self, group: list[tuple[list[Any], int, asyncio.Future[Any]]]) -> None:
        live = [g for g in group if not g[2].done()]  # a cancelled one: its client left
        if not live:
            return
        self.batches += 1
        self.requests += len(live)
        service = self._answerer()
        try:
            answers = service.recommend_histories([(h, k) for h, k, _ in live])
        except Exception:  # one bad request must not fail the others: each alone
            answers = None
        for j, (history, k, future) in enumerate(live):
            if answers is not None:
                future.set_result(answers[j])
                continue
            try:
                future.set_result(service.recommend_history(history, k))
            except Exception as exc:  # the caller maps it (the route answers the error)
                future.set_exception(exc)
