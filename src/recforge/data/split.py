"""Leak-free splits of :class:`~recforge.data.interactions.Interactions`.

Every function returns :class:`Split` objects whose parts share the input's vocabularies and
are disjoint as sets of events. Every random choice takes a ``seed``.

What each split guarantees (tested as properties in ``tests/test_split.py``):

* ``random_split`` / ``kfold``: every user and item of the test (and validation) part also
  appears in the training part; test events that would break this are moved to training.
* ``temporal_split``: every training event happened strictly before every test event; test
  events of users or items never seen before the cut are dropped (they would need the future).
* ``user_temporal_split`` / ``leave_last_out``: per user, the held-out events are the user's
  latest (by timestamp, ties and data without timestamps by input order); a user keeps at
  least one training event.
* ``cold_start_items``: the held-out items have no training events at all (that is the point).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = [
    "Split",
    "random_split",
    "temporal_split",
    "user_temporal_split",
    "leave_last_out",
    "leave_one_out",
    "cold_start_items",
    "kfold",
]


@dataclass(frozen=True)
class Split:
    """Train / (optional) validation / test parts over the same vocabularies."""

    train: Interactions
    test: Interactions
    valid: Interactions | None = None

    def __iter__(self):
        yield self.train
        yield self.test

    def __repr__(self) -> str:
        v = f", valid={len(self.valid):,}" if self.valid is not None else ""
        return f"Split(train={len(self.train):,}{v}, test={len(self.test):,})"


def _fraction(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def _part(assign: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of events assigned to train (0), valid (1) and test (2)."""
    return tuple(np.flatnonzero(assign == k) for k in (0, 1, 2))  # type: ignore[return-value]


def _make(data: Interactions, assign: np.ndarray, with_valid: bool) -> Split:
    tr, va, te = _part(assign)
    return Split(train=data.subset(tr), test=data.subset(te),
                 valid=data.subset(va) if with_valid else None)


def _reassign_unknown(data: Interactions, assign: np.ndarray, to: int) -> np.ndarray:
    """Held-out events whose user or item has no training event, sent back to training
    (``to=0``) or dropped (``to=-1``)."""
    assign = assign.copy()
    train = assign == 0
    u_known = np.bincount(data.user[train], minlength=data.n_users) > 0
    i_known = np.bincount(data.item[train], minlength=data.n_items) > 0
    cold = (~train) & ~(u_known[data.user] & i_known[data.item])
    if cold.any():
        # Moving one event per cold item / user would make it known; all are moved for
        # simplicity: they are few, and a test event with no training signal is noise.
        log.info("moved %d held-out events of users/items absent from training to training"
                 if to == 0 else "dropped %d held-out events of users/items not seen before "
                 "the cut", int(cold.sum()))
        assign[cold] = to
    return assign


def _rank_within_user(data: Interactions, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each event: its 0-based rank among its user's events ordered by ``key``
    (ascending, ties by position), and its user's event count."""
    order = np.lexsort((np.arange(len(data)), key, data.user))
    counts = data.user_counts()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(data), dtype=np.int64)
    rank[order] = np.arange(len(data)) - starts[data.user[order]]
    return rank, counts[data.user]


def random_split(data: Interactions, test_size: float = 0.2, valid_size: float = 0.0, *,
                 by_user: bool = False, seed: int | None = 0) -> Split:
    """Hold out a random fraction of events.

    ``by_user=False`` samples events globally; ``by_user=True`` holds out the fraction of
    each user's events (rounded; a user keeps at least one training event). Held-out events
    of users or items that end up with no training event are moved back to training.
    """
    test_size = _fraction("test_size", test_size)
    valid_size = _fraction("valid_size", valid_size)
    if test_size + valid_size >= 1.0:
        raise ConfigError("test_size + valid_size must be < 1")
    rng = np.random.default_rng(seed)
    n = len(data)
    if by_user:
        rank, count = _rank_within_user(data, rng.random(n))
        n_test = np.minimum(np.rint(count * test_size), count - 1)
        n_valid = np.minimum(np.rint(count * valid_size), count - 1 - n_test)
        assign = np.where(rank < n_test, 2, np.where(rank < n_test + n_valid, 1, 0))
    else:
        perm = rng.permutation(n)
        n_test = int(round(n * test_size))
        n_valid = int(round(n * valid_size))
        assign = np.zeros(n, dtype=np.int8)
        assign[perm[:n_test]] = 2
        assign[perm[n_test:n_test + n_valid]] = 1
    assign = _reassign_unknown(data, assign.astype(np.int8), to=0)
    return _make(data, assign, valid_size > 0)


def temporal_split(data: Interactions, test_size: float | None = 0.2, *,
                   cutoff: int | None = None, valid_size: float = 0.0) -> Split:
    """A global time cut: events at or after the cut are held out.

    Give either ``test_size`` (the fraction of the latest events to hold out) or an explicit
    ``cutoff`` timestamp. With ``valid_size`` a second, earlier cut makes a validation part.
    Every training event is strictly earlier than every held-out event; events tied at a
    cut all fall on the later side. Held-out events of users or items not seen in training
    are dropped.
    """
    if data.timestamp is None:
        raise DataError("temporal_split needs timestamps; this data has none", source=data.source)
    ts = data.timestamp
    valid_size = _fraction("valid_size", valid_size)
    if cutoff is None:
        if test_size is None:
            raise ConfigError("give test_size or cutoff")
        test_size = _fraction("test_size", test_size)
        if test_size + valid_size >= 1.0:
            raise ConfigError("test_size + valid_size must be < 1")
        cutoff = int(np.quantile(ts, 1.0 - test_size, method="higher")) if test_size > 0 else (
            int(ts.max()) + 1)
    assign = np.where(ts >= cutoff, 2, 0).astype(np.int8)
    held_out = float(np.mean(assign == 2))  # the test part's share, however the cut was given
    if valid_size > 0:
        if held_out + valid_size >= 1.0:
            raise ConfigError(f"the test part ({held_out:.0%} of the events) and valid_size="
                              f"{valid_size} leave no events for training")
        # the latest (held_out + valid_size) of all events are held out: the validation part
        # is valid_size of all events, just before the test cut
        vcut = int(np.quantile(ts, 1.0 - held_out - valid_size, method="higher"))
        assign[(ts >= vcut) & (ts < cutoff)] = 1
    if not (assign == 0).any():
        why = ("every event has the same timestamp" if ts.min() == ts.max()
               else "every event is held out")
        raise DataError(f"no training events before the time cut ({why}); a temporal split "
                        "needs earlier events to train on", source=data.source)
    assign = _reassign_unknown(data, assign, to=-1)
    return _make(data, assign, valid_size > 0)


def user_temporal_split(data: Interactions, n_test: int = 1, n_valid: int = 0, *,
                        min_train: int = 1) -> Split:
    """Per user, hold out the ``n_test`` latest events (and the ``n_valid`` before them).

    Users with fewer than ``min_train + n_test + n_valid`` events keep all of them in
    training. The order is the data's (``Interactions.order``): by timestamp, ties broken by
    position in the data; without timestamps, the position alone (an ordered sequences
    file, whose line order is the order).
    """
    if data.timestamp is None:
        log.info("%s has no timestamps: the latest events are the last in input order",
                 data.source or "the data")
        key = np.zeros(len(data), dtype=np.int8)
    else:
        key = data.timestamp
    return _per_user_holdout(data, key, n_test, n_valid, min_train)


def _per_user_holdout(data: Interactions, key: np.ndarray, n_test: int, n_valid: int,
                      min_train: int) -> Split:
    if n_test < 1 or n_valid < 0 or min_train < 1:
        raise ConfigError("need n_test >= 1, n_valid >= 0 and min_train >= 1")
    rank, count = _rank_within_user(data, key)
    from_end = count - 1 - rank  # 0 for the user's latest event
    eligible = count >= min_train + n_test + n_valid
    assign = np.zeros(len(data), dtype=np.int8)
    assign[eligible & (from_end < n_test)] = 2
    assign[eligible & (from_end >= n_test) & (from_end < n_test + n_valid)] = 1
    # The test items of a user are the user's latest; an item seen only there is cold.
    assign = _reassign_unknown(data, assign, to=-1)
    return _make(data, assign, n_valid > 0)


def leave_last_out(data: Interactions, *, valid: bool = False) -> Split:
    """Each user's latest event is the test set (and the one before, the validation set)."""
    return user_temporal_split(data, n_test=1, n_valid=1 if valid else 0)


def leave_one_out(data: Interactions, *, strategy: Literal["last", "random"] = "last",
                  valid: bool = False, seed: int | None = 0) -> Split:
    """Hold out one event per user: the latest (``"last"``) or a random one (``"random"``)."""
    if strategy == "last":
        return leave_last_out(data, valid=valid)
    if strategy != "random":
        raise ConfigError(f"strategy must be 'last' or 'random', not {strategy!r}")
    key = np.random.default_rng(seed).random(len(data))
    return _per_user_holdout(data, key, 1, 1 if valid else 0, 1)


def cold_start_items(data: Interactions, test_size: float = 0.2, valid_size: float = 0.0, *,
                     seed: int | None = 0) -> Split:
    """Hold out a random fraction of *items* with all of their events.

    The held-out items have no training events: use it to measure how content-based and
    hybrid models place new items.
    """
    test_size = _fraction("test_size", test_size)
    valid_size = _fraction("valid_size", valid_size)
    if test_size + valid_size >= 1.0:
        raise ConfigError("test_size + valid_size must be < 1")
    rng = np.random.default_rng(seed)
    items = data.active_items()
    perm = rng.permutation(items)
    n_test = int(round(len(items) * test_size))
    n_valid = int(round(len(items) * valid_size))
    item_assign = np.zeros(data.n_items, dtype=np.int8)
    item_assign[perm[:n_test]] = 2
    item_assign[perm[n_test:n_test + n_valid]] = 1
    assign = item_assign[data.item]
    # Held-out events of users left with no training event cannot be scored by anyone.
    train = assign == 0
    u_known = np.bincount(data.user[train], minlength=data.n_users) > 0
    assign = np.where((assign > 0) & ~u_known[data.user], -1, assign).astype(np.int8)
    return _make(data, assign, valid_size > 0)


def kfold(data: Interactions, k: int = 5, *, by_user: bool = False,
          seed: int | None = 0) -> Iterator[Split]:
    """Yield ``k`` splits; each event is in the test part of exactly one of the folds
    (save events moved to training because their user or item would be unknown)."""
    if k < 2:
        raise ConfigError(f"k must be >= 2, got {k}")
    rng = np.random.default_rng(seed)
    if by_user:
        rank, _ = _rank_within_user(data, rng.random(len(data)))
        # Rotate each user's folds by a random offset so small users spread over folds.
        offset = rng.integers(0, k, size=data.n_users)
        fold = (rank + offset[data.user]) % k
    else:
        fold = rng.permutation(len(data)) % k
    for f in range(k):
        assign = np.where(fold == f, 2, 0).astype(np.int8)
        assign = _reassign_unknown(data, assign, to=0)
        yield _make(data, assign, False)
