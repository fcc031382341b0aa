"""Preprocessing filters: k-core, rating threshold to implicit feedback.

``k_core`` changes which users and items exist and returns data with compacted
vocabularies (ids with no events removed); ``to_implicit`` keeps the vocabularies unless
``compact=True``. Apply them before splitting.
"""

from __future__ import annotations

import logging

import numpy as np

from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["k_core", "to_implicit", "min_value"]


def k_core(data: Interactions, min_user: int = 5, min_item: int = 5, *,
           compact: bool = True, max_iter: int = 100) -> Interactions:
    """Keep the largest subset where every user has >= ``min_user`` events and every item
    >= ``min_item`` events (removing one side can push the other below, so iterate)."""
    if min_user < 0 or min_item < 0:
        raise ConfigError("min_user and min_item must be >= 0")
    keep = np.ones(len(data), dtype=bool)
    for _ in range(max_iter):
        uc = np.bincount(data.user[keep], minlength=data.n_users)
        ic = np.bincount(data.item[keep], minlength=data.n_items)
        new_keep = keep & (uc[data.user] >= min_user) & (ic[data.item] >= min_item)
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
    log.info("k-core (%d users, %d items): kept %d of %d events", min_user, min_item,
             int(keep.sum()), len(data))
    out = data.subset(keep)
    return out.compact() if compact else out


def min_value(data: Interactions, threshold: float, *, compact: bool = False) -> Interactions:
    """Keep events whose value is >= ``threshold`` (values are kept)."""
    if data.value is None:
        raise DataError("this data has no values (ratings) to threshold", source=data.source)
    out = data.subset(data.value >= threshold)
    return out.compact() if compact else out


def to_implicit(data: Interactions, threshold: float | None = None, *,
                compact: bool = False) -> Interactions:
    """Implicit feedback: keep events with value >= ``threshold`` (all when ``None``) and
    drop the values, so every kept event counts as one positive."""
    if threshold is not None:
        data = min_value(data, threshold, compact=compact)
    return data.with_values(None)
