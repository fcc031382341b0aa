"""FairLock: first come, first served, reentrant, and an erasure never waits behind a
stream of posts."""

from __future__ import annotations

import threading
import time

import pytest

from recforge._locks import FairLock


def _wait_for_waiters(lock: FairLock, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(lock._waiters) < n:
        assert time.monotonic() < deadline, "threads never queued"
        time.sleep(0.001)


def test_waiters_get_the_lock_in_the_order_they_came() -> None:
    lock, order = FairLock(), []
    lock.acquire()
    threads = []
    for i in range(8):  # each queues before the next starts
        th = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i),
                                                  lock.release()))
        th.start()
        threads.append(th)
        _wait_for_waiters(lock, i + 1)
    lock.release()
    for th in threads:
        th.join(10)
    assert order == list(range(8))
    assert not lock.locked()


def test_a_thread_that_releases_and_asks_again_queues_behind_a_waiter() -> None:
    """The defect the lock exists for: ``threading.Lock`` lets a busy thread take the lock
    back at once while another waits. Here the holder releases only once the main thread
    is queued, then asks again at once: the waiter must be served first, every time."""
    def busy(lock: FairLock, order: list[str], holding: threading.Event) -> None:
        with lock:
            holding.set()
            _wait_for_waiters(lock, 1)  # the main thread is queued behind us
        with lock:  # asks again straight after releasing
            order.append("busy")

    for _ in range(20):
        lock, order, holding = FairLock(), [], threading.Event()
        th = threading.Thread(target=busy, args=(lock, order, holding))
        th.start()
        assert holding.wait(10)
        with lock:
            order.append("main")
        th.join(10)
        assert not th.is_alive()
        assert order == ["main", "busy"]


def test_reentrant_and_release_by_another_thread_refused() -> None:
    lock = FairLock()
    with lock, lock:
        assert lock.locked()
    assert not lock.locked()
    lock.acquire()
    errors = []

    def other() -> None:
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(exc)

    th = threading.Thread(target=other)
    th.start()
    th.join(10)
    assert errors and lock.locked()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_an_erasure_is_not_starved_by_a_stream_of_posts(tmp_path) -> None:
    """The server's write lock: a delete asked for while another thread posts events in a
    loop gets its turn after at most the post in progress (with ``threading.RLock`` it
    waited for dozens of posts, hundreds of milliseconds)."""
    import pandas as pd

    from recforge.data.events import EventStore
    from recforge.data.interactions import Interactions
    from recforge.models import create_model
    from recforge.serving.service import RecommendationService

    frame = pd.DataFrame({"user": [f"u{i}" for i in range(20)], "item": ["a", "b"] * 10})
    model = create_model("pop").fit(Interactions.from_frame(frame))
    store = EventStore(tmp_path / "ev.sqlite")
    svc = RecommendationService(model, events=store)
    svc.add_events([(f"u{i}", "b", None, None) for i in range(20)])
    stop, posted = threading.Event(), [0]

    def poster() -> None:
        k = 0
        while not stop.is_set():
            svc.add_events([(f"p{k % 7}", "a", None, None)])
            posted[0] += 1
            k += 1

    th = threading.Thread(target=poster)
    th.start()
    try:
        while posted[0] < 20:
            time.sleep(0.001)
        waited = []
        for i in range(10):
            before = posted[0]
            assert svc.forget_user(f"u{i}") == 1
            waited.append(posted[0] - before)
        # each erasure: the post in progress, then the store's own two turns (erase, then
        # empty the WAL), each behind at most one more post
        assert max(waited) <= 3, waited
    finally:
        stop.set()
        th.join(10)
    store.close()
