"""The :class:`Interactions` type: who interacted with what, how much, and when.

Immutable: every column is a read-only numpy array, and every operation (subset, filter,
split) returns a new object that shares the parent's vocabularies, so indices mean the same
thing in a training set, its test set and a model fitted on either.

Order: events are stored in input order, and every operation keeps the relative order of
the events it keeps (``concat`` puts each part after the one before). The order of events
in time (:meth:`Interactions.order`, :meth:`Interactions.sequences`) is by timestamp, ties
broken by that input order (a stable sort); without timestamps it is the input order.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recforge.data.frames import (
    DuplicatePolicy,
    IndexedEvents,
    UnknownPolicy,
    dedupe,
    events_from_frame,
)
from recforge.data.parsing import plain
from recforge.data.sequences import Sequences, build_sequences, cut_sessions, event_order
from recforge.data.vocabulary import Vocabulary
from recforge.errors import DataError

_log = logging.getLogger(__name__)

def _readonly(arr: np.ndarray | None) -> np.ndarray | None:
    """A read-only view of ``arr`` (the caller's own array keeps its flags)."""
    if arr is None:
        return None
    view = np.ascontiguousarray(arr).view()
    view.flags.writeable = False
    return view


class Interactions:
    """A log of (user, item, value, timestamp) events over fixed user and item vocabularies.

    Most users build one with :meth:`from_frame` or the readers in :mod:`recforge.data.readers`.

    Parameters
    ----------
    user, item:
        Internal indices (``0 <= user < len(users)``), one per event.
    value:
        The event's strength (a rating, a play count), or ``None`` for implicit feedback
        (every event counts as 1).
    timestamp:
        Seconds since the epoch (int64), or ``None``.
    session:
        A session id per event (int64), or ``None``.
    users, items:
        The vocabularies mapping external ids to the indices above.
    source:
        Where the data came from (a file name), used in error messages.
    """

    def __init__(self, user: Any, item: Any, value: Any = None, timestamp: Any = None, *,
                 users: Vocabulary, items: Vocabulary, source: str | None = None,
                 check: bool = True, session: Any = None):
        user = np.asarray(user, dtype=np.int32)
        item = np.asarray(item, dtype=np.int32)
        if user.shape != item.shape or user.ndim != 1:
            raise ValueError("user and item must be 1-d arrays of the same length")
        if value is not None:
            value = np.asarray(value, dtype=np.float32)
            if value.shape != user.shape:
                raise ValueError("value must have one entry per interaction")
        if timestamp is not None:
            timestamp = np.asarray(timestamp, dtype=np.int64)
            if timestamp.shape != user.shape:
                raise ValueError("timestamp must have one entry per interaction")
        if session is not None:
            session = np.asarray(session, dtype=np.int64)
            if session.shape != user.shape:
                raise ValueError("session must have one entry per interaction")
        if check and len(user):
            if user.min() < 0 or user.max() >= len(users):
                raise ValueError("user index out of range of the user vocabulary")
            if item.min() < 0 or item.max() >= len(items):
                raise ValueError("item index out of range of the item vocabulary")
        self._user = _readonly(user)
        self._item = _readonly(item)
        self._value = _readonly(value)
        self._timestamp = _readonly(timestamp)
        self._session = _readonly(session)
        self._users = users
        self._items = items
        self.source = source

    # ----------------------------------------------------------------------------------
    # columns and shape
    @property
    def user(self) -> np.ndarray:
        """Internal user index of each event (int32, read-only)."""
        return self._user

    @property
    def item(self) -> np.ndarray:
        """Internal item index of each event (int32, read-only)."""
        return self._item

    @property
    def value(self) -> np.ndarray | None:
        """Event values (float32), or ``None`` for implicit feedback."""
        return self._value

    @property
    def timestamp(self) -> np.ndarray | None:
        """Event times in seconds (int64), or ``None``."""
        return self._timestamp

    @property
    def session(self) -> np.ndarray | None:
        """The session id of each event (int64) when the data has a session column, or
        ``None``; see :meth:`sessions` for sessions cut by an inactivity gap."""
        return self._session

    @property
    def users(self) -> Vocabulary:
        return self._users

    @property
    def items(self) -> Vocabulary:
        return self._items

    @property
    def n_users(self) -> int:
        return len(self._users)

    @property
    def n_items(self) -> int:
        return len(self._items)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_users, self.n_items)

    @property
    def has_values(self) -> bool:
        return self._value is not None

    @property
    def has_timestamps(self) -> bool:
        return self._timestamp is not None

    def __len__(self) -> int:
        return len(self._user)

    def values_or_ones(self) -> np.ndarray:
        """Event values, or ones for implicit feedback."""
        if self._value is None:
            return np.ones(len(self), dtype=np.float32)
        return self._value

    def __repr__(self) -> str:
        extra = []
        if self.has_values:
            extra.append("values")
        if self.has_timestamps:
            extra.append("timestamps")
        if self._session is not None:
            extra.append("sessions")
        src = f", source={self.source!r}" if self.source else ""
        return (f"Interactions({len(self):,} events, {self.n_users:,} users x {self.n_items:,} items"
                f"{', ' + '+'.join(extra) if extra else ''}{src})")

    # ----------------------------------------------------------------------------------
    # derived structures (built lazily, cached: the object is immutable)
    @cached_property
    def csr(self) -> sp.csr_matrix:
        """Users x items CSR matrix of values (ones for implicit feedback), float32."""
        mat = sp.csr_matrix((self.values_or_ones(), (self._user, self._item)),
                            shape=self.shape, dtype=np.float32)
        mat.sum_duplicates()
        mat.sort_indices()
        return mat

    @cached_property
    def binary_csr(self) -> sp.csr_matrix:
        """Users x items CSR matrix with a 1 wherever there is an event."""
        mat = self.csr.copy()
        mat.data = np.ones_like(mat.data)
        return mat

    def user_counts(self) -> np.ndarray:
        """Number of events per user index (length ``n_users``)."""
        return np.bincount(self._user, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        """Number of events per item index (length ``n_items``)."""
        return np.bincount(self._item, minlength=self.n_items)

    def active_users(self) -> np.ndarray:
        """Indices of users with at least one event, sorted."""
        return np.flatnonzero(self.user_counts())

    def active_items(self) -> np.ndarray:
        """Indices of items with at least one event, sorted."""
        return np.flatnonzero(self.item_counts())

    # ----------------------------------------------------------------------------------
    # new objects from this one
    def subset(self, selection: Any) -> Interactions:
        """Events selected by a boolean mask or an index array; vocabularies are shared.

        The events keep their input order whatever the order of an index array (it is
        sorted), so ties in time are broken alike in a subset and in its parent.
        """
        sel = np.asarray(selection)
        if sel.dtype == bool:
            if sel.shape != self._user.shape:
                raise ValueError("boolean mask must have one entry per interaction")
        elif sel.ndim == 1 and len(sel) > 1 and (np.diff(sel) < 0).any():
            sel = np.sort(np.where(sel < 0, sel + len(self), sel), kind="stable")
        return Interactions(
            self._user[sel], self._item[sel],
            None if self._value is None else self._value[sel],
            None if self._timestamp is None else self._timestamp[sel],
            users=self._users, items=self._items, source=self.source, check=False,
            session=None if self._session is None else self._session[sel])

    def with_values(self, value: Any) -> Interactions:
        """The same events with new values (``None`` makes them implicit)."""
        return Interactions(self._user, self._item, value, self._timestamp,
                            users=self._users, items=self._items, source=self.source,
                            check=False, session=self._session)

    def concat(self, *others: Interactions,
               duplicates: DuplicatePolicy | None = None) -> Interactions:
        """These events followed by the events of ``others`` (same vocabularies required).

        ``duplicates``: ``None`` keeps every event, so a (user, item) pair found in two parts
        appears twice; a policy (``"error"``, ``"first"``, ``"last"``, ``"sum"``, ``"max"``,
        ``"mean"``) treats pairs across the parts as the readers treat them within a file
        (``"error"`` names the pair and the two parts' sources).
        """
        parts = [self, *others]
        for o in others:
            if o.users != self.users or o.items != self.items:
                raise ValueError("can only concatenate Interactions that share vocabularies")
        value = _joined(parts, "value", "joining parts with and without ratings: the events "
                        "of %s count as 1.0", fill_ones=True)
        timestamp = _joined(parts, "timestamp", "joining parts with and without timestamps: "
                            "the result has none (%s lack them)", fill_ones=False)
        session = _joined(parts, "session", "joining parts with and without sessions: the "
                          "result has none (%s lack them)", fill_ones=False)
        user = np.concatenate([p.user for p in parts])
        item = np.concatenate([p.item for p in parts])
        if duplicates is not None:
            key = user.astype(np.int64) * self.n_items + item
            order = np.argsort(key, kind="stable")
            dup = np.flatnonzero(key[order][1:] == key[order][:-1])
            if len(dup) and duplicates == "error":
                first, second = order[dup[0]], order[dup[0] + 1]
                part = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
                names = [p.source or f"part {k + 1}" for k, p in enumerate(parts)]
                pair = (self.users.ids[user[first]], self.items.ids[item[first]])
                where = (f"in {names[part[first]]} and {names[part[second]]}"
                         if part[first] != part[second] else f"twice in {names[part[first]]}")
                raise DataError(
                    f"duplicate (user, item) pair ({plain(pair[0])!r}, {plain(pair[1])!r}) "
                    f"{where}; choose a policy for repeated pairs: last (re-ratings), sum "
                    "(counts), first, max or mean")
            if len(dup):
                user, item, value, timestamp, session = dedupe(
                    user, item, value, timestamp, key, duplicates, session)
        return Interactions(user, item, value, timestamp,
                            users=self.users, items=self.items, source=self.source, check=False,
                            session=session)

    def compact(self) -> Interactions:
        """Drop users and items with no events from the vocabularies (re-indexing)."""
        u = self.active_users()
        i = self.active_items()
        if len(u) == self.n_users and len(i) == self.n_items:
            return self
        umap = np.full(self.n_users, -1, dtype=np.int32)
        umap[u] = np.arange(len(u), dtype=np.int32)
        imap = np.full(self.n_items, -1, dtype=np.int32)
        imap[i] = np.arange(len(i), dtype=np.int32)
        return Interactions(umap[self._user], imap[self._item], self._value, self._timestamp,
                            users=self._users.take(u), items=self._items.take(i),
                            source=self.source, check=False, session=self._session)

    def reindex(self, users: Vocabulary, items: Vocabulary,
                unknown: UnknownPolicy = "error") -> Interactions:
        """Express these events in other vocabularies (e.g. a fitted model's).

        Events whose user or item is not in the new vocabularies raise :class:`DataError`
        with ``unknown="error"`` or are dropped with ``unknown="drop"``.
        """
        if users == self._users and items == self._items:
            return self
        new_u = users.index(self._users.ids)[self._user]
        new_i = items.index(self._items.ids)[self._item]
        ok = (new_u >= 0) & (new_i >= 0)
        if not ok.all():
            if unknown == "error":
                bad = int(np.flatnonzero(~ok)[0])
                what = ("user", self._users.ids[self._user[bad]]) if new_u[bad] < 0 else (
                    "item", self._items.ids[self._item[bad]])
                raise DataError(f"{int((~ok).sum())} events refer to ids unknown to the target "
                                f"vocabulary, e.g. {what[0]} {what[1]!r}", source=self.source)
        sel = ok
        return Interactions(new_u[sel], new_i[sel],
                            None if self._value is None else self._value[sel],
                            None if self._timestamp is None else self._timestamp[sel],
                            users=users, items=items, source=self.source, check=False,
                            session=None if self._session is None else self._session[sel])

    # ----------------------------------------------------------------------------------
    # conversion
    def to_frame(self, external: bool = True) -> pd.DataFrame:
        """A DataFrame with columns ``user, item[, rating][, timestamp]``.

        ``external=True`` gives the original ids; ``False`` gives internal indices.
        """
        cols: dict[str, Any] = {
            "user": self._users.ids[self._user] if external else self._user,
            "item": self._items.ids[self._item] if external else self._item,
        }
        if self._value is not None:
            cols["rating"] = self._value
        if self._timestamp is not None:
            cols["timestamp"] = self._timestamp
        if self._session is not None:
            cols["session"] = self._session
        return pd.DataFrame(cols)

    def fingerprint(self) -> str:
        """A short hash of the events and vocabularies (recorded with trained models)."""
        h = hashlib.sha256()
        h.update(self._users.fingerprint().encode())
        h.update(self._items.fingerprint().encode())
        for arr in (self._user, self._item, self._value, self._timestamp):
            if arr is not None:
                h.update(arr.tobytes())
        if self._session is not None:  # data without sessions keeps its old fingerprint
            h.update(b"session")
            h.update(self._session.tobytes())
        return h.hexdigest()[:16]

    # ----------------------------------------------------------------------------------
    # order, sequences and sessions
    def order(self) -> np.ndarray:
        """The permutation putting the events in time order: by timestamp, ties broken by
        input order (a stable sort); the input order itself when there are no timestamps."""
        return event_order(None, self._timestamp, len(self))

    def sequences(self) -> Sequences:
        """Each user's items in time order, CSR-like (see :class:`Sequences`); built with
        one stable sort, cached."""
        return self._sequences

    @cached_property
    def _sequences(self) -> Sequences:
        return build_sequences(self._user, self._item, self._timestamp, self._session,
                               self.n_users)

    def sessions(self, gap: float | None = None) -> np.ndarray:
        """A session id per event (int64, aligned with the events).

        With ``gap`` (seconds), sessions are cut anew: a user's next event opens a new
        session when more than ``gap`` seconds passed since the previous one (ids numbered
        by user, then time; a ``session`` column is ignored). Without it, the ``session``
        column; data with neither is an error.
        """
        if gap is None:
            if self._session is None:
                raise DataError("this data has no session column; pass gap=<seconds> to cut "
                                "sessions by inactivity", source=self.source)
            return self._session
        return cut_sessions(self._user, self._timestamp, gap, self.source)

    # ----------------------------------------------------------------------------------
    # construction
    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, columns: Mapping[str, str] | None = None,
                   users: Vocabulary | None = None, items: Vocabulary | None = None,
                   unknown: UnknownPolicy = "error", duplicates: DuplicatePolicy = "error",
                   source: str | None = None, line_numbers: Sequence[int] | None = None,
                   ) -> Interactions:
        """Build from a DataFrame with a user column, an item column and optionally a rating
        and a timestamp column.

        Parameters
        ----------
        columns:
            Map from the canonical names ``user``, ``item``, ``rating``, ``timestamp`` to the
            frame's column names, e.g. ``{"user": "userId", "item": "movieId"}``. Columns not
            named are looked up among common aliases (``user_id``, ``movieId``, ``ts``...).
        users, items:
            Existing vocabularies to map ids into (e.g. a training set's). Ids not in them
            raise :class:`DataError` (``unknown="error"``) or are dropped (``"drop"``).
            When omitted, vocabularies are built from the sorted distinct ids.
        duplicates:
            What to do with repeated (user, item) pairs: ``"error"`` (default: raise,
            naming both lines), ``"first"`` / ``"last"`` (keep the earliest / latest event,
            by timestamp when present, else by position), ``"sum"``, ``"max"``, ``"mean"``
            (aggregate the values; the timestamp kept is the latest).
        source, line_numbers:
            Used in error messages: the file name and each row's line in it.
        """
        return cls.from_events(events_from_frame(
            frame, columns=columns, users=users, items=items, unknown=unknown,
            duplicates=duplicates, source=source, line_numbers=line_numbers))

    @classmethod
    def from_events(cls, events: IndexedEvents) -> Interactions:
        """Wrap validated index arrays (what the readers in :mod:`recforge.data.frames`,
        :mod:`recforge.data.formats` and :mod:`recforge.data.parquet` return) without
        copying or checking them again."""
        return cls(events.user, events.item, events.value, events.timestamp,
                   users=events.users, items=events.items, source=events.source, check=False,
                   session=events.session)

    @classmethod
    def from_csv(cls, path: Any, **kwargs: Any) -> Interactions:
        """Read a CSV / TSV file; see :func:`recforge.data.readers.read_csv`."""
        # lazy: the file readers stay out of `import recforge` (and `recforge --help`)
        from recforge.data.formats import csv_events

        return cls.from_events(csv_events(path, **kwargs))

    @classmethod
    def from_parquet(cls, path: Any, **kwargs: Any) -> Interactions:
        """Read a Parquet file; see :func:`recforge.data.readers.read_parquet`."""
        # lazy: pyarrow.parquet stays out of `import recforge` (and `recforge --help`)
        from recforge.data.parquet import parquet_events

        return cls.from_events(parquet_events(path, **kwargs))

    @classmethod
    def from_adjacency(cls, path: Any, **kwargs: Any) -> Interactions:
        """Read ``user item item ...`` lines; see :func:`recforge.data.readers.read_adjacency`."""
        # lazy: the file readers stay out of `import recforge` (and `recforge --help`)
        from recforge.data.formats import adjacency_events

        return cls.from_events(adjacency_events(path, **kwargs))

    @classmethod
    def from_sequences(cls, path: Any, **kwargs: Any) -> Interactions:
        """Read ordered ``user item item ...`` lines (oldest first); see
        :func:`recforge.data.readers.read_sequences`."""
        # lazy: the file readers stay out of `import recforge` (and `recforge --help`)
        from recforge.data.formats import sequences_events

        return cls.from_events(sequences_events(path, **kwargs))


def _joined(parts: Sequence[Interactions], column: str, message: str,
            fill_ones: bool) -> np.ndarray | None:
    """The parts' ``value`` or ``timestamp`` columns joined. When only some parts have it,
    ``message`` is logged naming the others, and the result has ones in their place
    (``fill_ones``) or no such column."""
    arrays = [getattr(p, column) for p in parts]
    lacking = [p.source or "a part" for p, a in zip(parts, arrays, strict=True) if a is None]
    if not lacking:
        return np.concatenate(arrays)
    if len(lacking) == len(parts):
        return None
    _log.warning(message, ", ".join(lacking))
    return np.concatenate([p.values_or_ones() for p in parts]) if fill_ones else None
