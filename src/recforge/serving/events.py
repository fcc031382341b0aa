"""The event store: interactions posted to the server, kept in SQLite.

One file (default: beside the model directory, ``MODEL.events.sqlite``) in WAL mode with
``synchronous=FULL``: an append returns only after its transaction is on disk, so every
acknowledged event survives a ``kill -9`` of the server. Events count as seen items for
their user at once; ``delete_user`` removes a user's events and remembers the user as
forgotten (the server then answers for them as for an unknown user). ``recforge train
--data events:PATH`` trains from the store.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge.errors import DataError

__all__ = ["EventStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    value REAL,
    timestamp INTEGER,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events(user);
CREATE TABLE IF NOT EXISTS forgotten (user TEXT PRIMARY KEY, at REAL NOT NULL);
"""


class EventStore:
    """Append-only interaction log in a SQLite file (thread-safe within a process)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"cannot open the event store: {exc}", source=str(self.path)
                            ) from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def append(self, events: Sequence[tuple[Any, Any, float | None, int | None]]) -> int:
        """Store ``(user, item, value, timestamp)`` tuples in one durable transaction."""
        now = time.time()
        rows = [(str(u), str(i), None if v is None else float(v),
                 None if t is None else int(t), now) for u, i, v, t in events]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO events (user, item, value, timestamp, "
                                     "received) VALUES (?, ?, ?, ?, ?)", rows)
                self._db.executemany("DELETE FROM forgotten WHERE user = ?",
                                     {(r[0],) for r in rows})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def user_items(self, user: Any) -> list[str]:
        with self._lock:
            cur = self._db.execute("SELECT DISTINCT item FROM events WHERE user = ?",
                                   (str(user),))
            return [r[0] for r in cur.fetchall()]

    def all_user_items(self) -> dict[str, list[str]]:
        """Every user's posted items (for an in-memory index at server start)."""
        out: dict[str, list[str]] = {}
        with self._lock:
            for user, item in self._db.execute("SELECT DISTINCT user, item FROM events"):
                out.setdefault(user, []).append(item)
        return out

    def delete_user(self, user: Any) -> int:
        """Remove every event of ``user`` and remember them as forgotten."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            n = self._db.execute("DELETE FROM events WHERE user = ?", (str(user),)).rowcount
            self._db.execute("INSERT OR REPLACE INTO forgotten (user, at) VALUES (?, ?)",
                             (str(user), time.time()))
            self._db.execute("COMMIT")
        return int(n)

    def is_forgotten(self, user: Any) -> bool:
        with self._lock:
            cur = self._db.execute("SELECT 1 FROM forgotten WHERE user = ?", (str(user),))
            return cur.fetchone() is not None

    def forgotten(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT user FROM forgotten")}

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def to_frame(self) -> pd.DataFrame:
        """All events: ``user, item, rating, timestamp`` (ids back as integers when every
        id of a column is an integer)."""
        with self._lock:
            frame = pd.read_sql_query("SELECT user, item, value AS rating, timestamp "
                                      "FROM events ORDER BY id", self._db)
        for col in ("user", "item"):
            as_int = pd.to_numeric(frame[col], errors="coerce")
            if len(frame) and as_int.notna().all() and (as_int % 1 == 0).all():
                frame[col] = as_int.astype(np.int64)
        if frame["rating"].isna().all():
            frame = frame.drop(columns="rating")
        if frame["timestamp"].isna().any():
            frame = frame.drop(columns="timestamp")
        return frame

    def to_interactions(self, duplicates: str = "last") -> Any:
        from recforge.data.interactions import Interactions

        frame = self.to_frame()
        if frame.empty:
            raise DataError("the event store holds no events", source=str(self.path))
        return Interactions.from_frame(frame, duplicates=duplicates,  # type: ignore[arg-type]
                                       source=str(self.path))

    @staticmethod
    def ids(values: Iterable[Any]) -> list[str]:
        return [str(v) for v in values]
