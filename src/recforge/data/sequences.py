"""Ordered views of events: each user's items in time order, and sessions.

The order of events is the one :meth:`Interactions.order` defines: by timestamp, ties broken
by input order (a stable sort); without timestamps, the input order alone. Everything here
is built with one stable sort over all events and array arithmetic (no Python loop over
users), so it scales to millions of events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recforge.errors import ConfigError, DataError

__all__ = ["Sequences", "event_order", "build_sequences", "cut_sessions"]


def event_order(user: np.ndarray | None, timestamp: np.ndarray | None,
                n: int | None = None) -> np.ndarray:
    """The permutation that orders events by user (when given), then timestamp (when
    given), ties broken by input position: one stable sort (``n``: the number of events,
    needed only when both are ``None``)."""
    if timestamp is None:
        if user is None:
            return np.arange(n or 0)
        return np.argsort(user, kind="stable")
    if user is None:
        return np.argsort(timestamp, kind="stable")
    # lexsort is stable: equal (user, timestamp) keys keep their input order
    return np.lexsort((timestamp, user))


@dataclass(frozen=True, eq=False)
class Sequences:
    """Each user's items in order, CSR-like.

    ``items[indptr[u]:indptr[u + 1]]`` are user ``u``'s items, oldest first (``u`` an
    internal user index; users with no events have empty rows). ``timestamps`` and
    ``sessions`` are aligned with ``items`` when the data has them; ``events`` gives each
    entry's position in the :class:`~recforge.data.interactions.Interactions` it came from.
    All arrays are read-only.
    """

    indptr: np.ndarray
    items: np.ndarray
    events: np.ndarray
    timestamps: np.ndarray | None = None
    sessions: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def __len__(self) -> int:
        return len(self.items)

    def lengths(self) -> np.ndarray:
        """Number of events per user."""
        return np.diff(self.indptr)

    def user(self, u: int) -> np.ndarray:
        """User ``u``'s items, oldest first."""
        if not 0 <= u < self.n_users:
            raise IndexError(f"user index {u} out of range (0..{self.n_users - 1})")
        return self.items[self.indptr[u]:self.indptr[u + 1]]

    def last(self, n: int, *, users: np.ndarray | None = None, pad: int = -1,
             offset: int = 0) -> np.ndarray:
        """The ``n`` most recent items of each user, ``[len(users), n]`` int64, left-padded
        with ``pad`` (the most recent item in the last column).

        ``users`` (internal indices, default all) picks the rows; ``offset`` adds a constant
        to every item (``offset=1, pad=0`` gives the 1-based, 0-padded layout of SASRec and
        GRU4Rec embeddings).
        """
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        rows = np.arange(self.n_users) if users is None else np.asarray(users, dtype=np.int64)
        end = self.indptr[rows + 1]
        length = np.minimum(end - self.indptr[rows], n)
        # column j of a row holds the event at end - n + j when that is inside the row
        col = np.arange(n, dtype=np.int64)
        pos = end[:, None] - n + col[None, :]
        valid = col[None, :] >= (n - length)[:, None]
        out = np.full((len(rows), n), pad, dtype=np.int64)
        out[valid] = self.items[pos[valid]].astype(np.int64) + offset
        return out

    def positions(self) -> np.ndarray:
        """Each entry's 0-based position within its user's sequence."""
        lengths = self.lengths()
        return np.arange(len(self.items)) - np.repeat(self.indptr[:-1], lengths)

    def users(self) -> np.ndarray:
        """The user index of each entry (``[len(self)]``)."""
        return np.repeat(np.arange(self.n_users, dtype=np.int32), self.lengths())


def build_sequences(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray | None,
                    session: np.ndarray | None, n_users: int) -> Sequences:
    """The :class:`Sequences` of events given as columns (see ``Interactions.sequences``)."""
    order = event_order(user, timestamp)
    counts = np.bincount(user, minlength=n_users)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])

    def ro(arr: np.ndarray | None) -> np.ndarray | None:
        if arr is None:
            return None
        arr = np.ascontiguousarray(arr)
        arr.flags.writeable = False
        return arr

    return Sequences(ro(indptr), ro(item[order]), ro(order.astype(np.int64)),
                     ro(None if timestamp is None else timestamp[order]),
                     ro(None if session is None else session[order]))


def cut_sessions(user: np.ndarray, timestamp: np.ndarray | None, gap: float,
                 source: str | None = None) -> np.ndarray:
    """A session id per event (int64, in input order): a user's events in time order start
    a new session when more than ``gap`` seconds pass since the previous one.

    Ids are ``0, 1, ...`` numbered by user, then time, so they are distinct across users.
    """
    if timestamp is None:
        raise DataError("cutting sessions by an inactivity gap needs timestamps; this data "
                        "has none (read a timestamp or a session column)", source=source)
    try:
        gap = float(gap)
    except (TypeError, ValueError):
        raise ConfigError(f"gap must be a number of seconds, not {gap!r}") from None
    if not np.isfinite(gap) or gap < 0:
        raise ConfigError(f"gap must be a finite number of seconds >= 0, not {gap!r}")
    n = len(user)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    order = event_order(user, timestamp)
    u = user[order]
    t = timestamp[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | ((t[1:] - t[:-1]) > gap)
    ids = np.empty(n, dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids
