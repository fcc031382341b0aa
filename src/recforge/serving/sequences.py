"""What an order-reading model (``capabilities.reads_order``) knows of a user's order, and
the ordered history the server scores: the user's training sequence as the model keeps it,
then the items the user posted since training, in the order they were posted.

The model keeps its training sequences in its own form: next-item networks
(:class:`~recforge.models.sequential.SequentialRecommender`) each user's last ``max_len``
items, right-padded and 1-based (``sequences_``); session-kNN
(:class:`~recforge.models.sknn.SessionKNN`) each user's last training session
(``user_last_``, a row of ``sessions_`` whose values are the items' places). A model that
keeps neither contributes no training items: its posted items alone are its sequence.

Everything is array arithmetic over a batch of users (no Python loop over users): one
gather of the training rows, one stable sort that puts each user's training items before
its posted ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recforge.data.interactions import Interactions

__all__ = ["training_sequences", "ordered_history"]

_EMPTY = np.empty(0, dtype=np.int64)


def training_sequences(model: Any, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(row, items)``: the training items of each of ``users`` (internal indices), oldest
    first, as flat arrays (``row[j]`` the position in ``users`` of ``items[j]``)."""
    users = np.asarray(users, dtype=np.int64)
    windows = getattr(model, "sequences_", None)
    if windows is not None:  # [n_users, max_len], right-padded, 1-based
        rows = np.asarray(windows[users], dtype=np.int64)
        b, j = np.nonzero(rows)  # row-major: each row's items in order
        return b.astype(np.int64), rows[b, j] - 1
    last = getattr(model, "user_last_", None)
    sessions = getattr(model, "sessions_", None)
    if last is not None and isinstance(sessions, sp.csr_matrix):
        at = np.asarray(last)[users]
        lo = sessions.indptr[np.maximum(at, 0)]
        n = np.where(at >= 0, sessions.indptr[np.maximum(at, 0) + 1] - lo, 0)
        row = np.repeat(np.arange(len(users), dtype=np.int64), n)
        pos = np.repeat(lo, n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        # a session row's values are its items' places: order each row by them
        order = np.lexsort((sessions.data[pos], row))
        return row[order], sessions.indices[pos][order].astype(np.int64)
    return _EMPTY, _EMPTY


def ordered_history(model: Any, users: np.ndarray, posted: list[np.ndarray]
                    ) -> Interactions:
    """The history :meth:`~recforge.models.base.Recommender.score_sequences` reads for
    ``users`` (distinct internal indices): each user's training sequence, then
    ``posted[b]`` (item indices in the order posted), newest last. The events carry one
    session id per user (what was posted continues the user's last training session) and
    no timestamps: their order is the input order."""
    users = np.asarray(users, dtype=np.int64)
    t_row, t_items = training_sequences(model, users)
    counts = np.fromiter((len(p) for p in posted), dtype=np.int64, count=len(posted))
    p_row = np.repeat(np.arange(len(users), dtype=np.int64), counts)
    p_items = np.concatenate(posted).astype(np.int64) if len(posted) else _EMPTY
    row = np.concatenate([t_row, p_row])
    items = np.concatenate([t_items, p_items])
    order = np.argsort(row, kind="stable")  # stable: training items before posted ones
    row, items = row[order], items[order]
    return Interactions(users[row], items, users=model.users_, items=model.items_,
                        session=users[row], check=False, source="posted events")
