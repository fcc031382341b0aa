"""Next-item evaluation: rank each target event among all items, from the events before it.

:func:`evaluate_next_item` takes a model, the *history* (the events each user's input is
made of, e.g. :attr:`recforge.data.split.Split.history`) and the *targets* (the events to
predict, e.g. ``split.test``). For every target it scores all items with
``model.score_sequences(users, history)`` (in blocks of users; a model that does not read
order answers with its ordinary user scores, so sequential and non-sequential models are
compared on the same call) and counts the items that score strictly higher than the
target: that count is the target's 0-based rank. :func:`evaluate_sessions` does the same
for each event of held-out sessions, from the session's prefix.

Per target, with ``r`` its 0-based rank and ``K`` the cutoff::

    HitRate@K = 1[r < K]      NDCG@K = 1[r < K] / log2(r + 2)      MRR@K = 1[r < K] / (r + 1)

(with one relevant item, NDCG's ideal DCG is 1 and Recall@K is HitRate@K). Figures are
means over targets.

* **Ties** (``ties=``): ``"expected"`` (default) averages the metric over every place the
  target could take among the items with its exact score, i.e. its expected value under a
  uniformly random order of ties (a constant scorer gets chance level, HitRate@K ~ K / n);
  ``"pessimistic"`` puts the target after all of them; ``"optimistic"`` before them
  (never use it to compare models: a model scoring every item alike would be perfect).
  NaN scores rank as ``-inf``.
* **Seen items** (``exclude_seen=``, default off: people re-watch and re-buy, and the
  next item is often one they had before): when on, the items of the user's input are
  left out of the ranking, except the target itself, which is always ranked.
* **Several targets of one user** (``targets="all"`` splits): each is ranked on its own
  against the items that are not targets of that user.
* **Protocols**: ``sampled=None`` ranks against every item (full ranking, the default and
  the only protocol whose figures mean what they say); ``sampled=100`` ranks each target
  against 100 items drawn uniformly (seeded, with replacement) among those outside the
  user's input and targets, as older papers did; its labels say ``(sampled 1+100)``
  (Krichene & Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020).
* **Intervals**: a 95% normal interval of each mean, users (sessions in
  :func:`evaluate_sessions`) taken as the independent units: the delta-method variance of
  a ratio of sums, which is the ordinary ``1.96 * sd / sqrt(n)`` when every user has one
  target; clipped to [0, 1].
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recforge.data.interactions import Interactions
from recforge.data.sampling import sample_negatives
from recforge.data.vocabulary import Vocabulary
from recforge.errors import ConfigError, DataError, ModelError
from recforge.evaluation.metrics import MAX_CUTOFF, Metric

log = logging.getLogger(__name__)

__all__ = ["NextItemModel", "NextItemResult", "evaluate_next_item", "evaluate_sessions",
           "DEFAULT_LENGTH_BINS"]

#: The history-length bins of the breakdown: 1-5, 6-20, 21-50, 51-200, 201+ events.
DEFAULT_LENGTH_BINS: tuple[int, ...] = (1, 6, 21, 51, 201)

Ties = Literal["expected", "pessimistic", "optimistic"]
_NAMES = ("hit_rate", "ndcg", "mrr")


class NextItemModel(Protocol):
    """What next-item evaluation needs from a fitted model (every recforge
    ``Recommender`` has it)."""

    users_: Vocabulary
    items_: Vocabulary

    @property
    def name(self) -> str: ...

    @property
    def n_items(self) -> int: ...

    def check_fitted(self) -> None:
        """Raise unless the model is fitted."""

    def score_sequences(self, users: np.ndarray, history: Interactions) -> torch.Tensor:
        """Scores ``[len(users), n_items]`` of each user's next item given ``history``."""

    def score_block_size(self, batch_size: int | None = None) -> int:
        """Users to score at once (``batch_size`` when given)."""


@dataclass
class NextItemResult:
    """Mean metrics over targets, their 95% intervals, one row per target, and the
    breakdown by history length."""

    summary: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    per_target: pd.DataFrame
    by_length: pd.DataFrame | None
    protocol: str
    n_users: int
    n_targets: int
    seconds: float
    ties: str = "expected"
    notes: list[str] = field(default_factory=list)

    def _label(self, label: str) -> str:
        if label in self.summary:
            return label
        base, _, rest = label.partition(" ")
        canon = Metric.parse(base).label
        for key in self.summary:
            if key.split(" ")[0] == canon and (not rest or key.endswith(rest)):
                return key
        raise KeyError(label)

    def __getitem__(self, label: str) -> float:
        """A mean by its label or any spelling of it (``"ndcg@10"``, ``"hr@10"``)."""
        return self.summary[self._label(label)]

    def interval(self, label: str) -> tuple[float, float]:
        """The 95% interval of a metric's mean."""
        return self.intervals[self._label(label)]

    def to_frame(self) -> pd.DataFrame:
        """Columns ``metric, value, ci_low, ci_high``."""
        return pd.DataFrame({"metric": list(self.summary),
                             "value": list(self.summary.values()),
                             "ci_low": [self.intervals[m][0] for m in self.summary],
                             "ci_high": [self.intervals[m][1] for m in self.summary]})

    def __repr__(self) -> str:
        vals = ", ".join(f"{k}={v:.4f}" for k, v in self.summary.items())
        return (f"NextItemResult({self.protocol}, users={self.n_users}, "
                f"targets={self.n_targets}, {vals})")


# ----------------------------------------------------------------------------------------
# parameters
def _parse_metrics(metrics: str | Sequence[str | Metric], k: int | Sequence[int]
                   ) -> list[Metric]:
    ks = [k] if isinstance(k, (int, np.integer)) and not isinstance(k, bool) else k
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or not ks:
        raise ConfigError(f"k must be an integer or a list of integers, not {k!r}")
    for v in ks:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not (
                1 <= v <= MAX_CUTOFF):
            raise ConfigError(f"k must be integers in 1..{MAX_CUTOFF}, got {v!r}")
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m.strip()]
    if not metrics:
        raise ConfigError("no metrics given")
    out: list[Metric] = []
    for m in metrics:
        if isinstance(m, Metric):
            parsed = [m]
        elif isinstance(m, str) and "@" in m:
            parsed = [Metric.parse(m)]
        elif isinstance(m, str):
            parsed = [Metric.parse(f"{m.strip()}@{int(v)}") for v in ks]
        else:
            raise ConfigError(f"a metric is a name such as 'ndcg', not {m!r}")
        for p in parsed:
            if p.name not in _NAMES:
                raise ConfigError(f"{p.label} is not a next-item metric; next-item metrics "
                                  "are hit_rate (hr), ndcg and mrr (with one target, recall "
                                  "is hit_rate)")
            if p not in out:
                out.append(p)
    return out


def _check_options(ties: str, sampled: int | None, by_length: Any) -> None:
    if ties not in ("expected", "pessimistic", "optimistic"):
        raise ConfigError(f"ties must be 'expected', 'pessimistic' or 'optimistic', "
                          f"not {ties!r}")
    if sampled is not None and (isinstance(sampled, bool) or not isinstance(
            sampled, (int, np.integer)) or sampled < 1):
        raise ConfigError(f"sampled must be None (full ranking) or a number of negatives "
                          f">= 1, not {sampled!r}")
    if by_length is None or isinstance(by_length, str) and by_length == "quantiles":
        return
    if isinstance(by_length, (int, np.integer)) and not isinstance(by_length, bool):
        if by_length < 1:
            raise ConfigError(f"by_length as a number of quantile bins must be >= 1, "
                              f"not {by_length}")
        return
    edges = np.asarray(by_length)
    if edges.ndim != 1 or len(edges) == 0 or edges.dtype.kind not in "iu" or (
            edges < 1).any() or (np.diff(edges) <= 0).any():
        raise ConfigError(f"by_length must be increasing bin starts >= 1 such as "
                          f"{list(DEFAULT_LENGTH_BINS)}, a number of quantile bins, or None; "
                          f"got {by_length!r}")


# ----------------------------------------------------------------------------------------
# ranking
def _score_block(model: NextItemModel, users: np.ndarray, history: Interactions,
                 n_items: int) -> np.ndarray:
    """The model's scores of a block of users as float32 numpy (NaN as ``-inf``)."""
    with torch.no_grad():
        s = model.score_sequences(users, history)
    if not isinstance(s, torch.Tensor) or tuple(s.shape) != (len(users), n_items):
        shape = tuple(s.shape) if hasattr(s, "shape") else type(s).__name__
        raise ModelError(f"{model.name}.score_sequences returned {shape} for "
                         f"{len(users)} users; expected ({len(users)}, {n_items})")
    out = s.detach().to("cpu", torch.float32).numpy()  # may share the model's memory
    nan = np.isnan(out)
    return np.where(nan, np.float32(-np.inf), out) if nan.any() else out


def _rank(model: NextItemModel, users: np.ndarray, history: Interactions, row: np.ndarray,
          item: np.ndarray, *, exclude_seen: bool, negatives: np.ndarray | None,
          block: int) -> tuple[np.ndarray, np.ndarray]:
    """For each target (``row``: index into the sorted unique ``users``; ``item``: the
    target's item index, -1 unknown): the number of counted items scoring strictly higher
    and the number scoring the same. Counted: every item but the user's targets (and the
    user's input items with ``exclude_seen``), or the target's sampled ``negatives``.

    The comparisons run in numpy: single-threaded, they do not pay torch's thread pool on
    the many small blocks of the session protocol."""
    n_items = model.n_items
    higher = np.full(len(row), n_items, dtype=np.int64)  # unknown items: never retrieved
    tied = np.zeros(len(row), dtype=np.int64)
    seen = history.binary_csr if exclude_seen and negatives is None else None
    starts = np.searchsorted(row, np.arange(0, len(users) + block, block))
    for b, lo in enumerate(range(0, len(users), block)):
        ub = users[lo:lo + block]
        scores = _score_block(model, ub, history, n_items)
        sel = np.arange(starts[b], starts[b + 1])
        sel = sel[item[sel] >= 0]
        if not len(sel):
            continue
        r = row[sel] - lo
        it = item[sel]
        target = scores[r, it]
        if negatives is not None:
            other = np.take_along_axis(scores[r], negatives[sel], axis=1)
            higher[sel] = (other > target[:, None]).sum(1)
            tied[sel] = (other == target[:, None]).sum(1)
            continue
        counted = np.ones((len(ub), n_items), dtype=bool)
        counted[r, it] = False  # the target and the user's other targets
        if seen is not None:
            rows = seen[ub]
            counted[np.repeat(np.arange(len(ub)), np.diff(rows.indptr)), rows.indices] = False
        if len(sel) == len(ub) and (r == np.arange(len(ub))).all():
            # one target per user (the usual case): no copies of the rows
            tc = target[:, None]
            higher[sel] = ((scores > tc) & counted).sum(1)
            tied[sel] = ((scores == tc) & counted).sum(1)
            continue
        for c in range(0, len(sel), len(ub)):  # at most a block of rows at once
            rc, tc = r[c:c + len(ub)], target[c:c + len(ub), None]
            s, m = scores[rc], counted[rc]
            higher[sel[c:c + len(ub)]] = ((s > tc) & m).sum(1)
            tied[sel[c:c + len(ub)]] = ((s == tc) & m).sum(1)
    return higher, tied


def _negatives(history: Interactions, users: np.ndarray, row: np.ndarray, item: np.ndarray,
               n: int, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """``[len(row), n]`` items outside each target user's input and targets."""
    h = history.binary_csr[users]
    ok = item >= 0
    t = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (row[ok], item[ok])),
                      shape=(len(users), n_items))
    pos = (h + t).tocsr()
    pos.sort_indices()
    if (np.diff(pos.indptr) >= n_items).any():
        raise DataError("a user's input and targets hold every item: no negative to sample")
    return sample_negatives(pos, row, n, rng=rng)


def _values(higher: np.ndarray, tied: np.ndarray, m: Metric, ties: str) -> np.ndarray:
    """The metric of each target, from its rank among the strictly higher and tied items."""
    k = int(m.k)
    p = np.arange(k, dtype=np.float64)
    f = {"hit_rate": np.ones(k), "ndcg": 1.0 / np.log2(p + 2.0), "mrr": 1.0 / (p + 1.0)}
    cum = np.concatenate([[0.0], np.cumsum(f[m.name])])  # cum[x] = sum of f over places < x
    lo = higher + (tied if ties == "pessimistic" else 0)
    hi = higher + (0 if ties == "optimistic" else tied)
    return (cum[np.minimum(hi + 1, k)] - cum[np.minimum(lo, k)]) / (hi - lo + 1)


def _interval(values: np.ndarray, unit: np.ndarray) -> tuple[float, float]:
    """95% normal interval of the mean over targets, the units (users, sessions) taken as
    independent: delta method for the ratio sum(values) / sum(counts)."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    _, u = np.unique(unit, return_inverse=True)
    s = np.bincount(u, weights=values)
    c = np.bincount(u).astype(np.float64)
    n = len(s)
    mean = s.sum() / c.sum()
    if n < 2:
        return (float("nan"), float("nan"))
    d = s - mean * c
    se = np.sqrt((d ** 2).sum() / (n * (n - 1))) / c.mean()
    # every metric here lies in [0, 1]: so does its interval
    return (float(max(0.0, mean - 1.959964 * se)), float(min(1.0, mean + 1.959964 * se)))


def _length_table(length: np.ndarray, cols: dict[str, np.ndarray], by_length: Any
                  ) -> pd.DataFrame | None:
    if by_length is None or len(length) == 0:
        return None
    if isinstance(by_length, str) or isinstance(by_length, (int, np.integer)):
        q = 4 if isinstance(by_length, str) else int(by_length)
        edges = np.unique(np.quantile(length, np.linspace(0, 1, q + 1)[:-1],
                                      method="lower").astype(np.int64))
        edges[0] = min(edges[0], int(length.min()))
    else:
        edges = np.asarray(by_length, dtype=np.int64)
    b = np.searchsorted(edges, length, side="right") - 1
    labels = [f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}"
              for lo, hi in zip(edges[:-1], edges[1:], strict=True)] + [f"{edges[-1]}+"]
    if (b < 0).any():  # inputs shorter than the first bin start
        labels = [f"<{edges[0]}", *labels]
        b = b + 1
    n = np.bincount(b, minlength=len(labels))
    out = {"length": labels, "n_targets": n}
    for label, v in cols.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            out[label] = np.bincount(b, weights=v, minlength=len(labels)) / np.where(
                n > 0, n, np.nan)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------------------
# public functions
def _in_model_space(model: NextItemModel, data: Interactions, what: str, notes: list[str]
                    ) -> Interactions:
    mapped = data.reindex(model.users_, model.items_, unknown="drop")
    if len(mapped) < len(data):
        notes.append(f"{len(data) - len(mapped)} {what} events of users or items unknown to "
                     "the model were left out")
    return mapped


def _finish(model: NextItemModel, frame: pd.DataFrame, higher: np.ndarray, tied: np.ndarray,
            unit: np.ndarray, mets: list[Metric], ties: str, sampled: int | None,
            by_length: Any, notes: list[str], start: float) -> NextItemResult:
    suffix = f" (sampled 1+{sampled})" if sampled is not None else ""
    summary: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    frame["higher"] = higher
    frame["tied"] = tied
    cols: dict[str, np.ndarray] = {}
    for m in mets:
        label = m.label + suffix
        v = _values(higher, tied, m, ties)
        frame[label] = v
        cols[label] = v
        summary[label] = float(v.mean()) if len(v) else 0.0
        intervals[label] = _interval(v, unit)
    for n in notes:
        log.info(n)
    return NextItemResult(
        summary=summary, intervals=intervals, per_target=frame,
        by_length=_length_table(frame["length"].to_numpy(), cols, by_length),
        protocol=f"sampled 1+{sampled}" if sampled is not None else "full",
        n_users=int(len(np.unique(frame["user"].to_numpy()))) if len(frame) else 0,
        n_targets=len(frame), seconds=time.perf_counter() - start, ties=ties, notes=notes)


def evaluate_next_item(model: NextItemModel, history: Interactions, targets: Interactions, *,
                       k: int | Sequence[int] = 10,
                       metrics: str | Sequence[str | Metric] = ("hr", "ndcg", "mrr"),
                       exclude_seen: bool = False, sampled: int | None = None,
                       batch_size: int | None = None,
                       by_length: Sequence[int] | int | str | None = DEFAULT_LENGTH_BINS,
                       ties: Ties = "expected", seed: int = 0) -> NextItemResult:
    """Next-item HitRate@K, NDCG@K and MRR@K of ``model`` (see the module's docstring).

    Parameters
    ----------
    history:
        The events each user's input is made of, in their order (``split.history`` of
        :func:`~recforge.data.split.leave_last_out` and
        ``temporal_split(..., next_item=True)``): passed whole to
        ``model.score_sequences``, mapped to the model's vocabularies (events of unknown
        users or items left out, counted in ``notes``).
    targets:
        The events to predict (``split.test``). Targets of users unknown to the model or
        without any input event are skipped (``notes``); targets of items unknown to the
        model count as misses.
    k, metrics:
        Cutoffs (an int or a list) and metric names (``"hr"``/``"hit_rate"``, ``"ndcg"``,
        ``"mrr"``; a name with ``@K`` keeps its own cutoff).
    exclude_seen:
        Leave the user's input items out of the ranking (never the target itself).
    sampled:
        ``None``: full ranking; a number ``N``: the sampled protocol, 1 target against
        ``N`` negatives drawn with ``seed``, labelled ``(sampled 1+N)``.
    by_length:
        The breakdown by input length: bin starts (default 1-5, 6-20, 21-50, 51-200,
        201+), a number of quantile bins (``"quantiles"``: 4), or ``None``.
    ties:
        ``"expected"`` (default), ``"pessimistic"`` or ``"optimistic"``.
    """
    model.check_fitted()
    start = time.perf_counter()
    mets = _parse_metrics(metrics, k)
    _check_options(ties, sampled, by_length)
    for name, d in (("history", history), ("targets", targets)):
        if not isinstance(d, Interactions):
            raise DataError(f"{name} must be Interactions, not {type(d).__name__}")
    if len(targets) == 0:
        raise DataError("there are no targets to evaluate", source=targets.source)
    notes: list[str] = []
    hist = _in_model_space(model, history, "history", notes)
    tu = model.users_.index(targets.users.ids)[targets.user]
    ti = model.items_.index(targets.items.ids)[targets.item]
    length_of = hist.user_counts()
    ok = tu >= 0
    if (~ok).any():
        notes.append(f"{int((~ok).sum())} targets of users unknown to the model were skipped")
    empty = ok & (length_of[np.maximum(tu, 0)] == 0)
    if empty.any():
        notes.append(f"{int(empty.sum())} targets of users without any history event were "
                     "skipped")
    keep = np.flatnonzero(ok & ~empty)
    if not len(keep):
        raise DataError("no target has a user known to the model with a history",
                        source=targets.source)
    if (ti[keep] < 0).any():
        notes.append(f"{int((ti[keep] < 0).sum())} targets are items unknown to the model: "
                     "they count as misses")
    # targets grouped by user (stable: each user's targets keep their order)
    keep = keep[np.argsort(tu[keep], kind="stable")]
    users, row = np.unique(tu[keep], return_inverse=True)
    item = ti[keep].astype(np.int64)
    negatives = None
    if sampled is not None:
        negatives = _negatives(hist, users, row, item, int(sampled), model.n_items,
                               np.random.default_rng(seed))
    higher, tied = _rank(model, users, hist, row, item, exclude_seen=exclude_seen,
                         negatives=negatives, block=model.score_block_size(batch_size))
    frame = pd.DataFrame({"user": model.users_.ids[users[row]],
                          "item": targets.items.ids[targets.item[keep]],
                          "length": length_of[users[row]]})
    return _finish(model, frame, higher, tied, users[row], mets, ties, sampled, by_length,
                   notes, start)


def evaluate_sessions(model: NextItemModel, sessions: Interactions, *,
                      k: int | Sequence[int] = 10,
                      metrics: str | Sequence[str | Metric] = ("hr", "ndcg", "mrr"),
                      exclude_seen: bool = False, sampled: int | None = None,
                      batch_size: int | None = None, gap: float | None = None,
                      by_length: Sequence[int] | int | str | None = DEFAULT_LENGTH_BINS,
                      ties: Ties = "expected", seed: int = 0) -> NextItemResult:
    """The session protocol: every event of every session but its first is a target,
    predicted from the session's earlier events alone (its prefix).

    ``sessions`` holds whole sessions (``split.test`` of
    :func:`~recforge.data.split.last_sessions_split`), identified by their ``session``
    column (or cut by an inactivity ``gap`` in seconds) together with their user. For a
    prefix of length ``t``, ``model.score_sequences(users, prefixes)`` gets an
    :class:`Interactions` that holds, for each session, its user and the first ``t``
    events; calls go over prefix lengths (and, for users with several held-out sessions,
    over those sessions one at a time), never over users. The rows of ``per_target`` add
    the ``session`` and the input ``length`` is the prefix's. Options as in
    :func:`evaluate_next_item`.
    """
    model.check_fitted()
    start = time.perf_counter()
    mets = _parse_metrics(metrics, k)
    _check_options(ties, sampled, by_length)
    if not isinstance(sessions, Interactions):
        raise DataError(f"sessions must be Interactions, not {type(sessions).__name__}")
    sid = sessions.sessions(gap)
    notes: list[str] = []
    data = Interactions(sessions.user, sessions.item, sessions.value, sessions.timestamp,
                        users=sessions.users, items=sessions.items, source=sessions.source,
                        check=False, session=sid)
    data = _in_model_space(model, data, "session", notes)
    if len(data) == 0:
        raise DataError("no session event is of a user and item known to the model",
                        source=sessions.source)
    n = len(data)
    key = data.timestamp if data.timestamp is not None else np.zeros(n, dtype=np.int8)
    order = np.lexsort((np.arange(n), key, data.session, data.user))
    u, s = data.user[order], data.session[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (s[1:] != s[:-1])
    group = np.cumsum(new) - 1
    gstart = np.flatnonzero(new)
    pos = np.arange(n) - gstart[group]
    glen = np.diff(np.append(gstart, n))
    # a user's held-out sessions take turns (slot 0, 1, ...): one row per user per call
    guser = u[gstart]
    first_of_user = np.ones(len(gstart), dtype=bool)
    first_of_user[1:] = guser[1:] != guser[:-1]
    ustart = np.flatnonzero(first_of_user)
    slot = np.arange(len(gstart)) - ustart[np.cumsum(first_of_user) - 1]
    if (glen < 2).any():
        notes.append(f"{int((glen < 2).sum())} sessions of one event have nothing to predict")
    rng = np.random.default_rng(seed)
    block = model.score_block_size(batch_size)
    n_t = int((pos >= 1).sum())
    if n_t == 0:
        raise DataError("no session has two events: nothing to predict", source=sessions.source)
    higher = np.empty(n_t, dtype=np.int64)
    tied = np.empty(n_t, dtype=np.int64)
    rows_out = np.empty(n_t, dtype=np.int64)  # the target's place in ``order``
    filled = 0
    for sl in range(int(slot.max()) + 1):
        in_slot = slot[group] == sl
        for t in range(1, int(glen[slot == sl].max())):
            target = in_slot & (pos == t)
            if not target.any():
                continue
            live = in_slot & (glen[group] > t)
            prefix = data.subset(order[live & (pos < t)])
            tgt = np.flatnonzero(target)  # one per live session, sorted by user
            users = u[tgt].astype(np.int64)
            row = np.arange(len(tgt))
            item = data.item[order[tgt]].astype(np.int64)
            negs = (None if sampled is None else
                    _negatives(prefix, users, row, item, int(sampled), model.n_items, rng))
            h, c = _rank(model, users, prefix, row, item, exclude_seen=exclude_seen,
                         negatives=negs, block=block)
            higher[filled:filled + len(tgt)] = h
            tied[filled:filled + len(tgt)] = c
            rows_out[filled:filled + len(tgt)] = tgt
            filled += len(tgt)
    back = np.argsort(rows_out, kind="stable")  # targets in session order
    higher, tied, rows_out = higher[back], tied[back], rows_out[back]
    frame = pd.DataFrame({"user": model.users_.ids[u[rows_out]],
                          "session": s[rows_out],
                          "item": model.items_.ids[data.item[order[rows_out]]],
                          "length": pos[rows_out]})
    return _finish(model, frame, higher, tied, group[rows_out], mets, ties, sampled,
                   by_length, notes, start)
