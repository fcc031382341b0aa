"""A history posted for a user the model was not trained on, as item indices.

:meth:`recforge.models.base.Recommender.recommend_for_history` reads the history's
external item ids (and optional values) through :func:`history_index` before the model
scores it (:func:`history_index`); item-based models score it as a row
(:func:`history_row`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recforge.data.vocabulary import Vocabulary
from recforge.errors import ConfigError, DataError, ModelError

__all__ = ["history_index", "history_row"]


def history_index(vocabulary: Vocabulary, items: Any, values: Any, unknown: str
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A history's item indices in ``vocabulary`` (each once: a repeated item keeps its
    last value), its values (None: not given) and the item ids unknown to the model (left
    out with ``unknown="skip"``, a :class:`ModelError` with ``"error"``)."""
    ext = np.atleast_1d(np.asarray(items, dtype=object if not isinstance(items, np.ndarray)
                                   else None))
    vals = (None if values is None
            else np.atleast_1d(np.asarray(values, dtype=np.float32)).ravel())
    if vals is not None and len(vals) != len(ext):
        raise ConfigError(f"{len(vals)} values for {len(ext)} items")
    if vals is not None and not np.isfinite(vals).all():
        raise DataError("history values must be finite numbers")
    idx = vocabulary.index(ext) if len(ext) else np.empty(0, np.int64)
    bad = ext[idx < 0]
    if len(bad) and unknown == "error":
        raise ModelError(f"{len(bad)} item id(s) unknown to the model: {bad[:10].tolist()}"
                         " (pass unknown='skip' to leave them out)")
    keep = idx >= 0
    idx = idx[keep].astype(np.int64)
    vals = vals[keep] if vals is not None else None
    if not len(idx):
        raise ModelError("none of the history's items is known to the model"
                         + (f": {bad[:10].tolist()}" if len(bad) else " (empty history)"))
    _, last = np.unique(idx[::-1], return_index=True)
    pick = np.sort(len(idx) - 1 - last)
    return idx[pick], (vals[pick] if vals is not None else None), bad


def history_row(items: np.ndarray, values: np.ndarray | None, n_items: int,
                binary: bool = True) -> sp.csr_matrix:
    """The history as a ``1 x n_items`` CSR row (ones when ``binary`` or no values)."""
    data = (np.ones(len(items), np.float32) if binary or values is None
            else values.astype(np.float32))
    return sp.csr_matrix((data, (np.zeros(len(items), np.int64), items)),
                         shape=(1, n_items))
