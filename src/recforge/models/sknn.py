"""Session-based k-nearest neighbours: V-SKNN (Ludewig & Jannach 2018; Ludewig et al. 2021).

Training events are cut into *sessions*: the data's ``session`` column when it has one (a
session is a run of one user's events with one session id), else a user's events split
where more than ``session_gap`` seconds pass between two of them, else (``session_gap``
None) each user's whole ordered history is one session. The model keeps them as a sparse
session x item matrix whose values are each item's place in its session (1 the oldest, an
item repeated counts at its last place), rows ordered from the most recent session (by its
last timestamp; without timestamps, by the input position of its last event).

To score the next item of a *current session* ``c`` (``c_1 .. c_L``, oldest first, each
item once at its last place):

1. each item gets a position weight ``w(p, L)`` (``weighting``; ``b = L - p`` counts back
   from the most recent item, ``b = 0``): ``"linear"`` ``max(0, 1 - 0.1 b)``, ``"same"`` 1,
   ``"div"`` ``p / L``, ``"quadratic"`` ``(p / L)^2``, ``"log"`` ``1 / log10(b + 1.7)``;
   the most recent item weighs most;
2. the candidates are the ``sample_size`` most recent training sessions that share an
   item with ``c`` (0: all of them);
3. ``sim(c, s)`` is the cosine of the weighted current vector and the binary session
   vector, ``sum_{i in c & s} w_i / (||w|| sqrt(|s|))`` (``similarity="cosine"``), or the
   Jaccard index of the item sets ``|c & s| / |c | s|`` (``"jaccard"``);
4. the ``neighbors`` most similar candidates are kept (ties: the more recent first), each
   times a decay by the place of the most recent current item it shares
   (``weighting_score``, ``t = 1`` for the last item: ``"same"`` 1, ``"div"`` ``1 / t``,
   ``"linear"`` ``max(0, 1 - 0.1 t)``, ``"quadratic"`` ``1 / t^2``, ``"log"``
   ``1 / log10(t + 1.7)``; places beyond 500 count as 500);
5. ``score(c, j) = sum_{s in N(c), j in s} sim(c, s) decay(s) (1 + idf_weighting idf_j)``
   with ``idf_j = ln(n_sessions / sessions with j)``; the current session's own items
   score 0 unless ``remind`` (as in the reference code by default).

Differences from the reference code (session-rec's ``vsknn.py``): its ``linear`` position
weight is 0 for every place after the tenth (so the most recent item of a long session
weighs 0), here it is the linear decay over the last ten items that the paper describes;
its ``linear`` score decay goes negative after ten steps, here it stops at 0.

Scoring is batched: a block of current sessions is one sparse matrix, its overlaps with
the training sessions one sparse product with the item -> session index (only the sessions
that share an item with a row appear: no dense rows x sessions array), the candidate cut,
the similarities and the top-``neighbors`` array operations over those pairs at once, and
the scores one more sparse product (no Python loop per user or per session). A server
scores the anonymous sessions that arrive together as one block (``_score_histories``).

``recommend(users)`` scores each user's last training session, its own training sessions
that the current session contains left out of the neighbours (they are the session
itself, or a part of it); :meth:`score_sequences` the last session of each user's ordered
history (cut as in training); ``recommend_for_history`` the posted items, in order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recforge.data.interactions import Interactions
from recforge.data.sequences import Sequences
from recforge.errors import ConfigError, DataError, ModelError
from recforge.models.artifact import CSR, Array, StateSpec
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.params import (
    BOOL_RULE,
    MAX_COUNT,
    MAX_NUMBER,
    check_params,
    choice_rule,
    extra_value,
    int_rule,
    number_rule,
)

__all__ = ["SessionKNN", "position_weights", "score_decay"]

WEIGHTINGS = ("linear", "same", "div", "quadratic", "log")
SIMILARITIES = ("cosine", "jaccard")
#: Places back in the current session beyond which the score decay no longer changes.
MAX_DECAY_STEP = 500
#: Training sessions x current sessions held at once while scoring (bounds memory).
PAIR_BLOCK_ELEMENTS = 1 << 22

_RULES = {
    "neighbors": int_rule(1, MAX_COUNT),
    "sample_size": int_rule(0, MAX_COUNT),
    "weighting": choice_rule(*WEIGHTINGS),
    "weighting_score": choice_rule(*WEIGHTINGS),
    "similarity": choice_rule(*SIMILARITIES),
    "idf_weighting": number_rule(0, MAX_NUMBER),
    "session_gap": number_rule(0, MAX_NUMBER, optional=True),
    "remind": BOOL_RULE,
}


def position_weights(pos: np.ndarray, length: np.ndarray, weighting: str) -> np.ndarray:
    """The weight of the item at place ``pos`` (1 the oldest) of a current session of
    ``length`` items (see the module docstring)."""
    pos = np.asarray(pos, dtype=np.float64)
    length = np.asarray(length, dtype=np.float64)
    back = length - pos
    if weighting == "linear":
        return np.maximum(0.0, 1.0 - 0.1 * back)
    if weighting == "same":
        return np.ones_like(pos)
    if weighting == "div":
        return pos / length
    if weighting == "quadratic":
        return (pos / length) ** 2
    if weighting == "log":
        return 1.0 / np.log10(back + 1.7)
    raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, not {weighting!r}")


def score_decay(step: np.ndarray, weighting: str) -> np.ndarray:
    """The decay of a neighbour whose most recent shared item is ``step`` places back in
    the current session (1: the last item)."""
    step = np.asarray(step, dtype=np.float64)
    if weighting == "linear":
        return np.maximum(0.0, 1.0 - 0.1 * step)
    if weighting == "same":
        return np.ones_like(step)
    if weighting == "div":
        return 1.0 / step
    if weighting == "quadratic":
        return 1.0 / (step * step)
    if weighting == "log":
        return 1.0 / np.log10(step + 1.7)
    raise ConfigError(f"weighting_score must be one of {', '.join(WEIGHTINGS)}, "
                      f"not {weighting!r}")


def _ordered_rows(rows: np.ndarray, items: np.ndarray, n_rows: int, n_items: int
                  ) -> sp.csr_matrix:
    """Rows of items in order (``rows`` non-decreasing, each row's entries oldest first)
    as a CSR matrix whose values are each item's place in its row, 1..L, an item repeated
    counted once at its last place."""
    n = len(rows)
    key = rows.astype(np.int64) * n_items + items.astype(np.int64)
    order = np.lexsort((np.arange(n), key))
    last = np.ones(n, dtype=bool)
    last[:-1] = key[order][1:] != key[order][:-1]
    keep = np.sort(order[last])
    r = rows[keep].astype(np.int64)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
    place = np.arange(len(keep)) - indptr[r] + 1
    mat = sp.csr_matrix((place.astype(np.float32), items[keep].astype(np.int32), indptr),
                        shape=(n_rows, n_items))
    mat.sort_indices()
    return mat


def _row_of(mat: sp.csr_matrix) -> np.ndarray:
    """The row index of each stored entry of a CSR matrix."""
    return np.repeat(np.arange(mat.shape[0], dtype=np.int64), np.diff(mat.indptr))


def _rank_in_row(rows: np.ndarray) -> np.ndarray:
    """Each entry's place (0, 1, ...) among the entries of its row, ``rows`` sorted."""
    n = len(rows)
    if not n:
        return np.empty(0, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    return np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))


class SessionKNN(Recommender):
    """Session-based kNN (V-SKNN): neighbour sessions weighted by recency of position.

    Parameters
    ----------
    neighbors:
        Neighbour sessions that score the items (typical range 10 to 500).
    sample_size:
        Only the ``sample_size`` most recent training sessions sharing an item with the
        current session are candidates (0: all of them; typical range 500 to 10000).
    weighting:
        Position weight of the current session's items: ``"linear"``, ``"same"``,
        ``"div"``, ``"quadratic"`` or ``"log"`` (see the module docstring).
    weighting_score:
        Decay of a neighbour by the place of the most recent current item it shares (the
        same names; ``"same"``: none).
    similarity:
        ``"cosine"`` (of the weighted current vector and the binary session) or
        ``"jaccard"`` (of the item sets, weights unused).
    idf_weighting:
        Each item's score times ``1 + idf_weighting * idf`` (0: off; typical 1 to 10).
    session_gap:
        Seconds of inactivity that end a session when the data has no ``session`` column
        (None: each user's whole history is one session; data without timestamps needs
        None or a session column).
    remind:
        Score the current session's own items too (False: they score 0, as in the
        reference code's default, so that a ranking that keeps seen items does not fill
        up with them).
    """

    name = "sknn"
    capabilities = Capabilities(folds_in_history=True, reads_order=True)
    tuning_space = {"neighbors": ("logint", 10, 500), "sample_size": ("cat", [0, 500, 2000, 10000]),
                    "weighting": ("cat", list(WEIGHTINGS)),
                    "weighting_score": ("cat", list(WEIGHTINGS)),
                    "similarity": ("cat", list(SIMILARITIES)),
                    "idf_weighting": ("float", 0.0, 10.0)}
    #: the defaults are fast (seconds on ml-1m): quickstart runs them as they are
    quick_params: dict[str, Any] = {}
    #: every hyperparameter is read when scoring
    scoring_params = _RULES

    def __init__(self, neighbors: int = 50, sample_size: int = 0, weighting: str = "linear",
                 weighting_score: str = "same", similarity: str = "cosine",
                 idf_weighting: float = 1.0, session_gap: float | None = None,
                 remind: bool = False) -> None:
        self.neighbors = neighbors
        self.sample_size = sample_size
        self.weighting = weighting
        self.weighting_score = weighting_score
        self.similarity = similarity
        self.idf_weighting = idf_weighting
        self.session_gap = session_gap
        self.remind = remind

    def _validate_params(self) -> None:
        check_params(self, _RULES)

    # ----------------------------------------------------------------------------------
    # sessions
    def _session_starts(self, seq: Sequences, data: Interactions) -> np.ndarray:
        """Whether each entry of ``seq`` opens a session (a user's first entry does)."""
        new = np.zeros(len(seq), dtype=bool)
        new[seq.indptr[:-1][seq.lengths() > 0]] = True
        if seq.sessions is not None:
            new[1:] |= seq.sessions[1:] != seq.sessions[:-1]
        elif self.session_gap is not None:
            if seq.timestamps is None:
                raise DataError(f"sknn: session_gap={self.session_gap!r} cuts sessions by "
                                "time, but this data has no timestamps (pass "
                                "session_gap=None, or data with a session column)",
                                source=data.source)
            new[1:] |= np.diff(seq.timestamps) > float(self.session_gap)
        return new

    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        seq = train.sequences()
        n_items = self.n_items
        new = self._session_starts(seq, train)
        sid = np.cumsum(new) - 1
        n_sessions = int(sid[-1]) + 1
        sessions = _ordered_rows(sid, seq.items, n_sessions, n_items)
        # recency: the last event's timestamp, ties (and data without time) by input order
        last = np.append(np.flatnonzero(new)[1:] - 1, len(seq) - 1)
        when = seq.timestamps[last] if seq.timestamps is not None else seq.events[last]
        recent_first = np.lexsort((seq.events[last], when))[::-1]
        rank = np.empty(n_sessions, dtype=np.int64)
        rank[recent_first] = np.arange(n_sessions)
        owner = seq.users().astype(np.int64)[last]
        user_last = np.full(self.n_users, -1, dtype=np.int64)
        has = seq.lengths() > 0
        user_last[has] = rank[sid[seq.indptr[1:][has] - 1]]
        self._set_sessions(sessions[recent_first], owner[recent_first], user_last)

    def _set_sessions(self, sessions: sp.csr_matrix, owner: np.ndarray,
                      user_last: np.ndarray) -> None:
        #: sessions x items, values: each item's place in its session; row 0 most recent
        self.sessions_: sp.csr_matrix = sessions.astype(np.float32)
        self.session_user_: np.ndarray = owner
        #: each user's last training session (row of ``sessions_``), -1: none
        self.user_last_: np.ndarray = user_last
        # float64: the products with it are float64 (a float32 copy would be cast whole
        # at every product)
        binary = sessions.astype(np.float64)
        binary.data = np.ones_like(binary.data)
        self._binary = binary
        self._binary_t = binary.T.tocsr()
        self._session_len = np.diff(sessions.indptr).astype(np.float64)
        n_sessions = sessions.shape[0]
        self._user_sessions = sp.csr_matrix(
            (np.ones(n_sessions, dtype=np.float32), (owner, np.arange(n_sessions))),
            shape=(len(user_last), n_sessions))
        df = np.bincount(sessions.indices, minlength=sessions.shape[1]).astype(np.float64)
        self._idf = np.where(df > 0, np.log(sessions.shape[0] / np.maximum(df, 1)), 0.0)

    # ----------------------------------------------------------------------------------
    # scoring
    def _score_rows(self, current: sp.csr_matrix, owners: np.ndarray) -> torch.Tensor:
        """Scores ``[B, n_items]`` of current sessions (CSR rows, values: places 1..L),
        ``owners[b]`` the training user whose contained sessions are left out (-1: none)."""
        n_sessions = self.sessions_.shape[0]
        out = np.zeros(current.shape, dtype=np.float32)
        block = max(1, PAIR_BLOCK_ELEMENTS // max(1, n_sessions))
        for start in range(0, current.shape[0], block):
            stop = min(current.shape[0], start + block)
            out[start:stop] = self._score_block(current[start:stop], owners[start:stop])
        return torch.from_numpy(out)

    def _coded_rows(self, cur: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray, sp.csr_matrix]:
        """A block's rows coded for the neighbour search: each row's length, each entry's
        row, position weight ``w`` and the row's ``m``, and the matrix whose one float64
        product with the sessions gives both the overlap (the integer part) and the
        weighted dot product (the fraction, times ``m``): each entry is ``1 + w / m`` with
        ``m`` above the row's total weight, so the fraction stays below 1."""
        length = np.diff(cur.indptr)
        entry_row = _row_of(cur)
        w = position_weights(cur.data, length[entry_row], self.weighting)
        m = np.bincount(entry_row, weights=w, minlength=cur.shape[0]) + 1.0
        # with the cosine and no sample, an item of weight 0 (the linear decay's older
        # items) changes nothing: it is left out of the product (most of a long session)
        used = (w > 0) if self.similarity == "cosine" and not self.sample_size else (w >= 0)
        coded = sp.csr_matrix((1.0 + w[used] / m[entry_row[used]],
                               (entry_row[used], cur.indices[used])),
                              shape=cur.shape)
        return length, entry_row, w, m, coded

    def _score_block(self, cur: sp.csr_matrix, owners: np.ndarray) -> np.ndarray:
        """Scores of a block of current sessions. Only the sessions that share an item
        with a row are looked at: one sparse product with the item -> session index gives
        them (and their overlaps and weighted dot products), and the candidate cut, the
        similarities and the top ``neighbors`` are array operations over those pairs
        (sorted by row, then session), never a dense rows x sessions array; the scores
        are one more sparse product."""
        n_rows = cur.shape[0]
        n_sessions = self.sessions_.shape[0]
        length, entry_row, w, m, coded = self._coded_rows(cur)
        pairs = (coded @ self._binary_t).tocsr()
        if self.sample_size:
            pairs.sort_indices()  # each row's sessions most recent first
        b, s, both = _row_of(pairs), pairs.indices.astype(np.int64), pairs.data
        overlap = np.floor(both)
        keep = overlap > 0
        own = self._own_pairs(cur, owners)
        if len(own):
            keep &= ~np.isin(b * n_sessions + s, own)
        b, s, both, overlap = b[keep], s[keep], both[keep], overlap[keep]
        if self.sample_size:  # the most recent candidates of each row
            keep = _rank_in_row(b) < int(self.sample_size)
            b, s, both, overlap = b[keep], s[keep], both[keep], overlap[keep]
        slen = self._session_len[s]
        if self.similarity == "jaccard":
            sim = overlap / np.maximum(length[b].astype(np.float64) + slen - overlap, 1.0)
        else:
            dot = (both - overlap) * m[b]
            norm = np.sqrt(np.bincount(entry_row, weights=w * w, minlength=n_rows))
            denom = norm[b] * np.sqrt(slen)
            sim = np.where(denom > 0, dot / np.maximum(denom, 1e-300), 0.0)
        # similarities compared in float32 (ties included), as the scores are kept
        sim32 = np.where(sim > 0, sim, 0.0).astype(np.float32)
        keep = sim32 > 0
        b, s, sim32 = b[keep], s[keep], sim32[keep]
        # the top `neighbors` per row; equal similarities: the more recent session first.
        # One sort of one int64 key (row, similarity falling, session): a non-negative
        # float32's bits order as the float does, and the key fits in 63 bits while
        # rows x sessions is below 2^32 (a block is sized to PAIR_BLOCK_ELEMENTS)
        if n_rows * n_sessions < 1 << 32:
            falling = np.int64(0x7FFFFFFF) - sim32.view(np.int32).astype(np.int64)
            by_sim = np.argsort((b << 31 | falling) * n_sessions + s)
        else:  # (a single row over 2^32 sessions)
            by_sim = np.lexsort((s, -sim32, b))
        top = by_sim[_rank_in_row(b[by_sim]) < min(int(self.neighbors), n_sessions)]
        # back to (row, session) order: the product below sums in that order
        top = top[np.argsort(b[top] * n_sessions + s[top])]
        b, s = b[top], s[top]
        weight = sim32[top].astype(np.float64)
        if self.weighting_score != "same":
            weight *= score_decay(self._last_shared_step(cur, length, entry_row, b, s),
                                  self.weighting_score)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(b, minlength=n_rows), out=indptr[1:])
        weights = sp.csr_matrix((weight, s, indptr), shape=(n_rows, n_sessions))
        scores = np.asarray((weights @ self._binary).toarray(), dtype=np.float64)
        if self.idf_weighting:
            scores *= 1.0 + float(self.idf_weighting) * self._idf[None, :]
        if not self.remind:
            scores[entry_row, cur.indices] = 0.0
        return scores.astype(np.float32)

    def _own_pairs(self, cur: sp.csr_matrix, owners: np.ndarray) -> np.ndarray:
        """The sessions of user ``owners[b]`` that current session ``b`` contains (the
        session itself, or a part of it: never its neighbours), as keys
        ``b * n_sessions + session``."""
        if not (owners >= 0).any():
            return np.empty(0, dtype=np.int64)
        theirs = self._user_sessions[np.maximum(owners, 0)]
        theirs = (sp.diags((owners >= 0).astype(np.float32)) @ theirs).tocsr()
        theirs.eliminate_zeros()
        b, s = _row_of(theirs), theirs.indices.astype(np.int64)
        if not len(b):
            return np.empty(0, dtype=np.int64)
        ones = cur.copy()
        ones.data = np.ones(len(cur.data), dtype=np.float64)
        shared = np.asarray(ones[b].multiply(self._binary[s]).sum(axis=1)).ravel()
        inside = shared >= self._session_len[s]
        return b[inside] * self.sessions_.shape[0] + s[inside]

    def _last_shared_step(self, cur: sp.csr_matrix, length: np.ndarray,
                          entry_row: np.ndarray, b: np.ndarray, s: np.ndarray) -> np.ndarray:
        """For each (current row ``b``, session ``s``) pair, how many places back (1: the
        last item) the most recent current item that ``s`` holds is, capped at
        :data:`MAX_DECAY_STEP`: the sum over shared items of ``4^-step`` lies in
        ``[4^-t, 4^-t * 4/3)`` for the smallest step ``t``, so ``-log4`` of it rounds
        back to ``t`` exactly (in float64, ``4^-500`` is still a normal number)."""
        step = np.minimum(length[entry_row] - cur.data.astype(np.int64) + 1, MAX_DECAY_STEP)
        coded = cur.astype(np.float64)
        coded.data = np.power(4.0, -step.astype(np.float64))
        sums = (coded @ self._binary_t).tocsr()
        sums.sort_indices()
        n_sessions = self.sessions_.shape[0]
        keys = _row_of(sums) * n_sessions + sums.indices  # sorted: rows, then sessions
        total = sums.data[np.searchsorted(keys, b * n_sessions + s)]
        return np.rint(-np.log(total) / np.log(4.0) + 0.1)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        u = users.numpy().astype(np.int64)
        rows = self.user_last_[u]
        cur = self.sessions_[np.maximum(rows, 0)]
        if (rows < 0).any():
            cur = (sp.diags((rows >= 0).astype(np.float32)) @ cur).tocsr()
            cur.eliminate_zeros()
        return self._score_rows(cur, u)

    def score_sequences(self, users: np.ndarray, history: Interactions) -> torch.Tensor:
        """Scores ``[len(users), n_items]`` of the next item after the last session of
        each user's ordered history in ``history`` (sessions cut as in training)."""
        self.check_fitted()
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if len(users) and (int(users.min()) < 0 or int(users.max()) >= self.n_users):
            raise ModelError(f"user index out of range [0, {self.n_users})")
        if not isinstance(history, Interactions):
            raise DataError(f"score_sequences expects Interactions, got "
                            f"{type(history).__name__}")
        if history.users != self.users_ or history.items != self.items_:
            history = history.reindex(self.users_, self.items_, unknown="drop")
        seq = history.sequences()
        new = self._session_starts(seq, history)
        start = np.where(new, np.arange(len(seq)), -1)
        # the start of each user's last session: the last session start at or before
        # each entry, read at the user's last entry
        np.maximum.accumulate(start, out=start)
        lo, hi = seq.indptr[users], seq.indptr[users + 1]
        first = (np.where(hi > lo, start[np.maximum(hi - 1, 0)], hi) if len(seq)
                 else hi)
        first = np.maximum(first, lo)
        counts = hi - first
        rows = np.repeat(np.arange(len(users), dtype=np.int64), counts)
        offset = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        items = seq.items[np.repeat(first, counts) + offset]
        cur = _ordered_rows(rows, items, len(users), self.n_items)
        with torch.no_grad():
            return self._score_rows(cur, users).float()

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        return self._score_histories([items])[0]

    def _score_histories(self, histories: list[np.ndarray]) -> torch.Tensor:
        """Scores ``[len(histories), n_items]`` of anonymous current sessions (item
        indices, oldest first), as one block."""
        lengths = np.fromiter((len(h) for h in histories), dtype=np.int64,
                              count=len(histories))
        items = (np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
                 if histories else np.empty(0, np.int64))
        cur = _ordered_rows(np.repeat(np.arange(len(histories), dtype=np.int64), lengths),
                            items, len(histories), self.n_items)
        return self._score_rows(cur, np.full(len(histories), -1, dtype=np.int64))

    # ----------------------------------------------------------------------------------
    # persistence
    def _state(self) -> dict[str, torch.Tensor]:
        s = self.sessions_
        return {"sessions_indptr": torch.from_numpy(s.indptr.astype(np.int64)),
                "sessions_indices": torch.from_numpy(s.indices.astype(np.int32)),
                "sessions_data": torch.from_numpy(s.data.astype(np.float32)),
                "session_user": torch.from_numpy(self.session_user_),
                "user_last": torch.from_numpy(self.user_last_)}

    def _extra(self) -> dict[str, Any]:
        return {"n_sessions": int(self.sessions_.shape[0])}

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        n = int(extra_value(extra, "n_sessions", int_rule(1, MAX_COUNT)))
        return {"sessions": CSR((n, self.n_items)),
                "session_user": Array((n,), torch.int64, low=0, high=self.n_users),
                "user_last": Array((self.n_users,), torch.int64, low=-1, high=n)}

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        n = int(extra["n_sessions"])
        sessions = sp.csr_matrix(
            (state["sessions_data"].numpy(), state["sessions_indices"].numpy(),
             state["sessions_indptr"].numpy()), shape=(n, self.n_items))
        # each row's values are the places 1..L of its items, each once
        row = _row_of(sessions)
        order = np.lexsort((sessions.data, row))
        place = np.arange(len(row)) - sessions.indptr[row] + 1
        if not np.array_equal(sessions.data[order], place.astype(np.float32)):
            raise ModelError("weights.safetensors: sessions_data must give each session's "
                             "items the places 1..L, each once")
        if np.diff(sessions.indptr).min(initial=1) < 1:
            raise ModelError("weights.safetensors: sessions_indptr holds an empty session")
        owner = state["session_user"].numpy().astype(np.int64)
        user_last = state["user_last"].numpy().astype(np.int64)
        has = user_last >= 0
        if not np.array_equal(owner[user_last[has]], np.flatnonzero(has)):
            raise ModelError("weights.safetensors: user_last names a session of another "
                             "user (session_user)")
        self._set_sessions(sessions, owner, user_last)
