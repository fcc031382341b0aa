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

Next-item splits (see ``docs/evaluation.md``) also set :attr:`Split.history`, the events a
next-item model reads to predict the test targets:

* ``leave_last_out`` / ``user_temporal_split``: each user's whole earlier sequence, the
  validation events included (``history`` = ``train`` + ``valid`` plus any validation
  event dropped as cold, in time order); the validation item never enters ``train``.
* ``temporal_split(..., next_item=True)``: a global time cut; a test user's input is every
  event before the cut, the target the user's first event after it (``targets="all"``:
  every event after it).
* ``last_sessions_split``: the latest sessions of the log (by the time their last event
  happened) are held out whole; the next-item protocol predicts each event of a test
  session from the session's prefix (:func:`recforge.evaluation.evaluate_sessions`).
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
    "last_sessions_split",
    "cold_start_items",
    "kfold",
]


@dataclass(frozen=True)
class Split:
    """Train / (optional) validation / test parts over the same vocabularies.

    ``history`` (next-item splits only, else ``None``): the events a model reads to predict
    the ``test`` targets (the input of :func:`recforge.evaluation.evaluate_next_item`); it
    shares the vocabularies and never holds a test event. The validation targets' input is
    ``train`` itself in every next-item split. :meth:`test_input` gives the test input of
    any split (``history``, or ``train`` + ``valid``).
    """

    train: Interactions
    test: Interactions
    valid: Interactions | None = None
    history: Interactions | None = None

    def test_input(self) -> Interactions:
        """The events that precede the test targets: ``history`` when the split sets it,
        else ``train`` followed by ``valid`` (their order in time is by timestamp, then
        this order)."""
        if self.history is not None:
            return self.history
        return self.train if self.valid is None else self.train.concat(self.valid)

    def __iter__(self):
        yield self.train
        yield self.test

    def __repr__(self) -> str:
        v = f", valid={len(self.valid):,}" if self.valid is not None else ""
        h = f", history={len(self.history):,}" if self.history is not None else ""
        return f"Split(train={len(self.train):,}{v}, test={len(self.test):,}{h})"


def _fraction(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def _part(assign: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of events assigned to train (0), valid (1) and test (2)."""
    return tuple(np.flatnonzero(assign == k) for k in (0, 1, 2))  # type: ignore[return-value]


def _make(data: Interactions, assign: np.ndarray, with_valid: bool,
          history: np.ndarray | None = None) -> Split:
    tr, va, te = _part(assign)
    return Split(train=data.subset(tr), test=data.subset(te),
                 valid=data.subset(va) if with_valid else None,
                 history=None if history is None else data.subset(history))


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
                   cutoff: int | None = None, valid_size: float = 0.0,
                   next_item: bool = False,
                   targets: Literal["first", "all"] = "first") -> Split:
    """A global time cut: events at or after the cut are held out.

    Give either ``test_size`` (the fraction of the latest events to hold out) or an explicit
    ``cutoff`` timestamp. With ``valid_size`` a second, earlier cut makes a validation part.
    Every training event is strictly earlier than every held-out event; events tied at a
    cut all fall on the later side. Held-out events of users or items not seen in training
    are dropped.

    ``next_item=True`` makes it a next-item split: ``train`` is every event before the
    (validation) cut; ``test`` holds, for each user with at least one event before the test
    cut, the user's first event after it (``targets="all"``: every event after it), and
    ``history`` every event before the test cut (the validation period included), which
    is the input a model reads for the test targets. ``valid`` likewise holds each user's
    first (or every) event between the two cuts, for users with a training event (its
    input is ``train``). Targets of items without a training event are dropped, and a
    user whose first event after the cut is such an item has no target (the next item is
    not replaced by a later one). No event of any user after the cut is in ``train`` or
    ``history``: the model never sees the future of the test period.
    """
    if targets not in ("first", "all"):
        raise ConfigError(f"targets must be 'first' or 'all', not {targets!r}")
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
    if next_item:
        return _next_item_cut(data, assign, valid_size > 0, targets)
    assign = _reassign_unknown(data, assign, to=-1)
    return _make(data, assign, valid_size > 0)


def _first_per_user(data: Interactions, mask: np.ndarray) -> np.ndarray:
    """Indices of each user's first event (in time order, ties by position) among ``mask``."""
    idx = np.flatnonzero(mask)
    key = (data.timestamp[idx] if data.timestamp is not None
           else np.zeros(len(idx), dtype=np.int8))
    idx = idx[np.lexsort((idx, key, data.user[idx]))]
    u = data.user[idx]
    first = np.ones(len(idx), dtype=bool)
    first[1:] = u[1:] != u[:-1]
    return idx[first]


def _next_item_cut(data: Interactions, period: np.ndarray, with_valid: bool,
                   targets: str) -> Split:
    """The next-item split of a time cut: ``period`` is 0 before the validation cut, 1
    between the cuts, 2 after the test cut."""
    train = period == 0
    item_known = np.bincount(data.item[train], minlength=data.n_items) > 0
    assign = np.where(train, 0, -1).astype(np.int8)
    for part, inputs in ((2, period < 2), (1, train)):
        if part == 1 and not with_valid:
            continue
        has_input = np.bincount(data.user[inputs], minlength=data.n_users) > 0
        cand = (period == part) & has_input[data.user]
        chosen = (_first_per_user(data, cand) if targets == "first" else np.flatnonzero(cand))
        known = item_known[data.item[chosen]]
        if not known.all():
            log.info("dropped %d %s targets of items without a training event",
                     int((~known).sum()), "test" if part == 2 else "validation")
        assign[chosen[known]] = part
    return _make(data, assign, with_valid, history=np.flatnonzero(period < 2))


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
                      min_train: int, ordered: bool = True) -> Split:
    if n_test < 1 or n_valid < 0 or min_train < 1:
        raise ConfigError("need n_test >= 1, n_valid >= 0 and min_train >= 1")
    rank, count = _rank_within_user(data, key)
    from_end = count - 1 - rank  # 0 for the user's latest event
    eligible = count >= min_train + n_test + n_valid
    assign = np.zeros(len(data), dtype=np.int8)
    test = eligible & (from_end < n_test)
    assign[test] = 2
    assign[eligible & (from_end >= n_test) & (from_end < n_test + n_valid)] = 1
    # The test items of a user are the user's latest; an item seen only there is cold.
    assign = _reassign_unknown(data, assign, to=-1)
    # a random holdout has no "before": only the latest-events splits set a history
    return _make(data, assign, n_valid > 0, history=np.flatnonzero(~test) if ordered else None)


def leave_last_out(data: Interactions, *, valid: bool = False) -> Split:
    """Each user's latest event is the test set (and the one before, the validation set).

    The next-item split of sequential-recommendation papers (SASRec, BERT4Rec): fit on
    ``train`` (everything but each user's last one or two events), validate on ``valid``
    with ``train`` as the input, and evaluate the test targets with ``split.history`` as
    the input (each user's whole earlier sequence, the validation event included)::

        split = leave_last_out(data, valid=True)
        model.fit(split.train, split.valid)
        evaluate_next_item(model, split.history, split.test)

    Users with fewer than three events (two without ``valid``) keep them all in training.
    Every user's test event is later than the user's other events, but not later than
    other users' training events: see "Leakage on a global timeline" in
    ``docs/evaluation.md`` and ``temporal_split(..., next_item=True)``.
    """
    return user_temporal_split(data, n_test=1, n_valid=1 if valid else 0)


def leave_one_out(data: Interactions, *, strategy: Literal["last", "random"] = "last",
                  valid: bool = False, seed: int | None = 0) -> Split:
    """Hold out one event per user: the latest (``"last"``) or a random one (``"random"``)."""
    if strategy == "last":
        return leave_last_out(data, valid=valid)
    if strategy != "random":
        raise ConfigError(f"strategy must be 'last' or 'random', not {strategy!r}")
    key = np.random.default_rng(seed).random(len(data))
    return _per_user_holdout(data, key, 1, 1 if valid else 0, 1, ordered=False)


def last_sessions_split(data: Interactions, test_size: float = 0.1, valid_size: float = 0.0,
                        *, gap: float | None = None, min_length: int = 2) -> Split:
    """Hold out the latest sessions of the log, whole (session-based next-item evaluation).

    Sessions are the data's ``session`` column (a session is a (user, session id) pair),
    or, with ``gap``, cut anew by an inactivity gap of ``gap`` seconds
    (:meth:`Interactions.sessions`). A session's time is its last event's place in
    :meth:`Interactions.order` (by timestamp, ties by input order; the input order alone
    without timestamps). The latest ``test_size`` of the sessions (a fraction of their
    number) are the test part, the ``valid_size`` before them the validation part, the
    rest is ``train``. Events of held-out sessions whose item has no training event are
    dropped, then held-out sessions shorter than ``min_length`` (nothing to predict from).

    Every part carries the session ids (``session``; the gap-cut ones with ``gap``), which
    :func:`recforge.evaluation.evaluate_sessions` reads: each event of a test session is
    predicted from the session's prefix. Sessions are ordered by their end, as in the
    GRU4Rec evaluation, so a training session may still be going on when a test session
    starts; no event of a held-out session is in ``train``.
    """
    test_size = _fraction("test_size", test_size)
    valid_size = _fraction("valid_size", valid_size)
    if test_size + valid_size >= 1.0:
        raise ConfigError("test_size + valid_size must be < 1")
    if isinstance(min_length, bool) or not isinstance(min_length, (int, np.integer)) or (
            min_length < 2):
        raise ConfigError(f"min_length must be an integer >= 2 (a session needs an event to "
                          f"predict from), not {min_length!r}")
    session = data.sessions(gap)
    if gap is not None:
        data = Interactions(data.user, data.item, data.value, data.timestamp,
                            users=data.users, items=data.items, source=data.source,
                            check=False, session=session)
    n = len(data)
    if n == 0:
        raise DataError("cannot split an empty log into sessions", source=data.source)
    # one group per (user, session): ids need not be unique across users
    _, group = np.unique(np.stack([data.user.astype(np.int64), session]), axis=1,
                         return_inverse=True)
    group = group.ravel()
    n_groups = int(group.max()) + 1
    place = np.empty(n, dtype=np.int64)
    place[data.order()] = np.arange(n)
    end = np.full(n_groups, -1, dtype=np.int64)
    np.maximum.at(end, group, place)
    by_end = np.argsort(end)
    n_test = int(round(n_groups * test_size))
    n_valid = int(round(n_groups * valid_size))
    if n_groups - n_test - n_valid < 1:
        raise DataError(f"{n_groups} session(s): holding out {n_test + n_valid} leaves none "
                        "to train on", source=data.source)
    part = np.zeros(n_groups, dtype=np.int8)
    part[by_end[n_groups - n_test:]] = 2
    part[by_end[n_groups - n_test - n_valid:n_groups - n_test]] = 1
    assign = part[group]
    item_known = np.bincount(data.item[assign == 0], minlength=data.n_items) > 0
    cold = (assign > 0) & ~item_known[data.item]
    assign[cold] = -1
    left = np.bincount(group[assign > 0], minlength=n_groups)
    short = (assign > 0) & (left[group] < min_length)
    if cold.any() or short.any():
        log.info("dropped %d held-out events of items without a training event and %d "
                 "events of held-out sessions shorter than %d", int(cold.sum()),
                 int(short.sum()), min_length)
    assign[short] = -1
    return _make(data, assign, valid_size > 0)


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
