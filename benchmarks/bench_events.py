"""Erasure latency of the event store: ``DELETE /users/{id}``'s path with a large store.

Usage: python benchmarks/bench_events.py [--events 1000000] [--users 20000]
        [--deletes 200] [--seed 0] [--dir DIR] [--out FILE]

Fills a SQLite event store with ``--events`` events of ``--users`` users (activity
log-normal, mean ``events / users`` per user, the events of all users interleaved as they
would arrive) by one bulk insert, starts the service on it (a ``pop`` model trained on the
first 10% of the events), then erases ``--deletes`` users drawn at random from those with
events, one by one, through ``RecommendationService.forget_user`` (the service's delete
path: the store's erasure, its WAL checkpoint, the in-memory state); wall time, and the
deleting thread's CPU time (which other work on the machine inflates less). Meanwhile a thread
posts single events through the service, one after another, while ``--busy-deletes``
more users are erased 10 ms apart, and the same thread runs again for as long without
deletes: the post latency with and without erasures alongside.
Also times a reload's two reads of the store (the full read of a fresh service, and the
read under the write lock just before the swap). Prints a table and writes JSON (default
``benchmarks/results/events.json``).

Runs against any version of ``recforge`` on ``PYTHONPATH`` (the store is filled with the
columns it has), so that ``PYTHONPATH=OLD/src`` measures an earlier one (with a few
``--deletes``: each cost a scan of the store).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if "PYTHONPATH" not in os.environ:
    sys.path.insert(0, str(REPO / "src"))


def fill(store: Any, n_events: int, n_users: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n_events`` events of ``n_users`` users into ``store`` in one transaction; returns
    the user ids and the items of the events, in their order."""
    import sqlalchemy as sa

    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.2, n_users)
    users = rng.choice(n_users, size=n_events, p=activity / activity.sum())
    items = rng.zipf(1.3, n_events) % 20_000
    user_ids = [f"user-{u}" for u in range(n_users)]
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("events")}
    tags = ([store.tag(u) for u in user_ids] if "user_tag" in columns else None)
    now = time.time()
    rows = ((user_ids[u], str(i), None, None, now) + ((tags[u],) if tags else ())
            for u, i in zip(users.tolist(), items.tolist(), strict=True))
    names = "user, item, value, timestamp, received" + (", user_tag" if tags else "")
    marks = ", ".join("?" * (6 if tags else 5))
    raw = store.engine.raw_connection()
    try:
        raw.executemany(f"INSERT INTO events ({names}) VALUES ({marks})", rows)
        raw.commit()
    finally:
        raw.close()
    return [user_ids[u] for u in users.tolist()], items


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2), "mean_ms": round(float(ms.mean()), 2)}


def fit(events: list[int], seconds: list[float]) -> dict[str, float]:
    """Least squares: milliseconds = fixed + per_event * (the user's events)."""
    per_event, fixed = np.polyfit(events, 1000 * np.asarray(seconds), 1)
    return {"fixed": round(float(fixed), 3), "per_event": round(float(per_event), 4)}


def _shown_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (results carry no machine paths)."""
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return str(path)


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    import recforge
    from recforge.data.events import EventStore
    from recforge.data.interactions import Interactions
    from recforge.models import create_model
    from recforge.serving.service import RecommendationService

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--deletes", type=int, default=200)
    ap.add_argument("--busy-deletes", type=int, default=100, help="more users erased while "
                    "a thread posts events (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="where the store goes "
                    "(default: a temporary directory, removed after)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/events.json")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(dir=args.dir)
    path = Path(tmp.name)
    store = EventStore(path / "ev.sqlite")
    t = time.perf_counter()
    order, items = fill(store, args.events, args.users, args.seed)
    fill_s = time.perf_counter() - t
    import pandas as pd

    head = pd.DataFrame({"user": order[: len(order) // 10], "item": items[: len(order) // 10]})
    model = create_model("pop").fit(Interactions.from_frame(head, duplicates="sum")).save(path / "pop")

    t = time.perf_counter()
    svc = RecommendationService(model, events=store)
    start_s = time.perf_counter() - t
    t = time.perf_counter()
    svc.sync_events()  # a reload's second read, under the write lock in the app
    resync_s = time.perf_counter() - t

    rng = np.random.default_rng(args.seed + 1)
    with_events = sorted(set(order))
    drawn = [with_events[i] for i in rng.choice(len(with_events),
                                                args.deletes + args.busy_deletes,
                                                replace=False)]
    victims, busy_victims = drawn[:args.deletes], drawn[args.deletes:]
    per_user = pd.Series(order).value_counts()

    def poster(stop: threading.Event, out: list[float]) -> None:
        k = 0
        while not stop.is_set():
            t = time.perf_counter()
            svc.add_events([(f"poster-{k % 50}", str(k % 1000), None, None)])
            out.append(time.perf_counter() - t)
            k += 1

    def with_poster(work: Any) -> list[float]:
        stop, posts = threading.Event(), []
        th = threading.Thread(target=poster, args=(stop, posts))
        th.start()
        try:
            work()
        finally:
            stop.set()
            th.join()
        return posts

    def erase(users: list[str], seconds: list[float], counts: list[int],
              pause: float = 0.0, cpu: list[float] | None = None) -> None:
        for user in users:
            t, c = time.perf_counter(), time.thread_time()
            counts.append(svc.forget_user(user))
            seconds.append(time.perf_counter() - t)
            if cpu is not None:
                cpu.append(time.thread_time() - c)
            time.sleep(pause)  # requests apart, as they come over HTTP

    deletes: list[float] = []
    erased: list[int] = []
    cpu: list[float] = []
    load_before = os.getloadavg()[0]
    erase(victims, deletes, erased, cpu=cpu)
    load_after = os.getloadavg()[0]
    busy_deletes: list[float] = []
    busy_erased: list[int] = []
    posts_during: list[float] = []
    posts_alone: list[float] = []
    if busy_victims:
        posts_during = with_poster(lambda: erase(busy_victims, busy_deletes, busy_erased,
                                                 pause=0.01))
        posts_alone = with_poster(lambda: time.sleep(sum(busy_deletes)
                                                     + 0.01 * len(busy_deletes)))
    assert erased + busy_erased == [int(per_user[u]) for u in victims + busy_victims], \
        "erased counts differ"
    store.close()
    tmp.cleanup()

    result = {
        "recforge": recforge.__version__, "recforge_path": _shown_path(Path(recforge.__file__).parent),
        "python": platform.python_version(), "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
        "events": args.events, "users": args.users, "seed": args.seed,
        "fill_seconds": round(fill_s, 1),
        "service_start_seconds": round(start_s, 2),
        "reload_read_under_lock_seconds": round(resync_s, 3),
        "deleted_users": len(victims),
        "events_per_deleted_user": {"median": statistics.median(erased),
                                    "p99": float(np.percentile(erased, 99)),
                                    "max": max(erased)},
        "delete": percentiles(deletes),
        "delete_cpu": percentiles(cpu),
        "delete_cpu_us_per_event": round(1e6 * sum(cpu) / max(1, sum(erased)), 1),
        "delete_ms_fit": fit(erased, deletes) if len(set(erased)) > 1 else None,
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "delete_while_posting": percentiles(busy_deletes) if busy_deletes else None,
        "post_during_deletes": percentiles(posts_during) if posts_during else None,
        "post_without_deletes": percentiles(posts_alone) if posts_alone else None,
    }
    table = Table(title=f"event store, {args.events:,} events, {args.users:,} users "
                        f"(recforge at {result['recforge_path']})")
    for col in ("", "n", "p50 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right" if col else "left")
    for name in ("delete", "delete_cpu", "delete_while_posting", "post_during_deletes",
                 "post_without_deletes"):
        r = result[name]
        if r is None:
            continue
        table.add_row(name.replace("_", " "), f"{r['n']:,}", f"{r['p50_ms']:.2f}",
                      f"{r['p99_ms']:.2f}", f"{r['max_ms']:.2f}")
    Console().print(table)
    print(f"fill {fill_s:.1f} s; service start (full read) {start_s:.2f} s; reload's read "
          f"under the lock {resync_s * 1000:.1f} ms; events per erased user: median "
          f"{result['events_per_deleted_user']['median']}, p99 "
          f"{result['events_per_deleted_user']['p99']:.0f}, max "
          f"{result['events_per_deleted_user']['max']}; delete CPU "
          f"{result['delete_cpu_us_per_event']} us per erased event; delete ms = "
          f"{(result['delete_ms_fit'] or {}).get('fixed')} + "
          f"{(result['delete_ms_fit'] or {}).get('per_event')} x events; load average "
          f"{load_before:.1f} / {load_after:.1f} (before / after the deletes) on "
          f"{os.cpu_count()} cores")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
