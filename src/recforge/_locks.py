"""A lock that serves its waiters in the order they came.

``threading.Lock`` and ``RLock`` are not fair: a thread that releases one and asks for it
again at once (a poster in a loop, a busy request thread) usually gets it back before a
waiting thread has even woken, so the waiter can wait for hundreds of milliseconds. An
erasure waiting behind a stream of posted events is that waiter
(``benchmarks/bench_events.py``, "delete while posting": p50 78 ms and p99 572 ms with the
standard lock on a quiet 2-core machine). :class:`FairLock` hands the lock over on release
to the thread that has waited longest, so a waiter waits for the holders ahead of it, not
for whoever is fastest.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType

__all__ = ["FairLock"]


class FairLock:
    """A reentrant first-come, first-served lock (a ``with`` block or acquire/release).

    On release the lock passes straight to the oldest waiter, which is then its owner
    before it even runs; a thread that asks again after releasing queues behind it. The
    owner may acquire it again (released as many times); releasing a lock the calling
    thread does not hold raises ``RuntimeError``, as ``RLock`` does.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # guards the fields below; held only briefly
        self._owner: int | None = None
        self._depth = 0
        self._waiters: deque[tuple[int, threading.Lock]] = deque()

    def acquire(self) -> bool:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return True
            if self._owner is None:  # free: no waiters either (a release hands it over)
                self._owner, self._depth = me, 1
                return True
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append((me, gate))
        gate.acquire()  # opened by the release that made this thread the owner
        return True

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a lock this thread does not hold")
            self._depth -= 1
            if self._depth:
                return
            if self._waiters:
                self._owner, gate = self._waiters.popleft()
                self._depth = 1
                gate.release()
            else:
                self._owner = None

    def locked(self) -> bool:
        return self._owner is not None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
