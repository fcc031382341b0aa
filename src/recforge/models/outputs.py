"""What the model API's answers hold: the ids a caller passed, as they were passed.

:meth:`~recforge.models.base.Recommender.recommend` and ``similar_items`` return their
requested ids in the dtype the caller used (:func:`passed_ids`), so that the answer merges
with the caller's frame; :func:`check_k` checks how many items a call asks for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from recforge.errors import ConfigError

__all__ = ["check_k", "passed_ids"]


def passed_ids(ids: Any) -> Any:
    """External ids as the caller passed them, 1-d, in their own dtype: what the id columns
    of :meth:`~recforge.models.base.Recommender.recommend` and :meth:`~recforge.models.base.Recommender.similar_items` hold, so a merge
    with the caller's frame works. A numpy array keeps its dtype (text: ``object``), a
    pandas Series or Index its dtype (extension dtypes too), a list (or a scalar) becomes
    ``int64`` when every id is an int, else (text, mixed, empty) ``object``."""
    if isinstance(ids, (pd.Series, pd.Index)):
        return ids.array
    if isinstance(ids, np.ndarray):
        arr = np.atleast_1d(ids).ravel()
        return arr.astype(object) if arr.dtype.kind in "US" else arr
    if not isinstance(ids, (list, tuple)):
        is_many = isinstance(ids, Iterable) and not isinstance(ids, (str, bytes))
        ids = list(ids) if is_many else [ids]
    arr = np.asarray(ids)  # Python ints -> int64; mixed, str or bool -> not an int kind
    if arr.ndim == 1 and arr.dtype.kind in "iu" and len(arr):
        return arr.astype(np.int64, copy=False)
    return np.asarray(ids, dtype=object).ravel()


def check_k(k: Any) -> None:
    """Raise :class:`ConfigError` unless ``k`` (how many items to return) is an integer >= 1."""
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
