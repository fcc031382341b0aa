"""Why an item resembles a history, one modality (feature group) at a time.

A feature model's item features (:class:`~recforge.data.features.Features`) hold one group
per source: ``genres`` (categories), ``text`` (vectors of the bundled text encoder),
``image`` (precomputed vectors), ``title`` (TF-IDF words), ``year`` (bins). For a
recommended item, the history item most similar to it *by each group alone* says why in
words a person reads: "because you watched X: similar text", "same genres: Comedy".

:func:`group_blocks` splits the features into per-group blocks with unit-length rows
(built once per model); :func:`best_in_history` finds, for many recommended items at once,
the nearest history item in every group (one sparse product per group, no loop over
items); :func:`shared_features` names what two items have in common in a group of
categories or words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recforge.data.features import Features

__all__ = ["GroupBlock", "Kind", "best_in_history", "feature_kind", "group_blocks",
           "shared_features"]

#: What a group's columns are: dense ``vectors`` (``image:0`` ... ``image:511``, text
#: vectors), ``categories`` (``genres=Comedy``, binned numbers ``year=[1990, 2000)``),
#: ``words`` (TF-IDF, ``title:star``) or one ``number`` (a z-scored column ``year``).
Kind = Literal["vectors", "categories", "words", "number"]


@dataclass(frozen=True)
class GroupBlock:
    """One feature group: its name, kind, column labels (the value part of each feature
    name: ``Comedy`` for ``genres=Comedy``) and its ``[n_items, n_columns]`` block with
    unit-length rows (all-zero rows: items without this feature)."""

    group: str
    kind: Kind
    labels: np.ndarray
    block: sp.csr_matrix


def feature_kind(group: str, names: np.ndarray) -> Kind:
    """The kind of a group from its feature names (see :data:`Kind`)."""
    names = np.asarray(names, dtype=object)
    if len(names) == 1 and names[0] == group:
        return "number"
    if len(names) and all(n == f"{group}:{j}" for j, n in enumerate(names.tolist())):
        return "vectors"
    if all(str(n).startswith(f"{group}=") for n in names.tolist()):
        return "categories"
    return "words"


def _labels(group: str, names: np.ndarray) -> np.ndarray:
    cut = len(group) + 1
    return np.array([str(n)[cut:] if str(n).startswith((f"{group}=", f"{group}:")) else str(n)
                     for n in names.tolist()], dtype=object)


def group_blocks(features: Features) -> list[GroupBlock]:
    """Every group of ``features`` as a :class:`GroupBlock`, in the order the groups first
    appear."""
    out = []
    for group in pd.unique(features.groups):
        cols = np.flatnonzero(features.groups == group)
        names = features.names[cols]
        block = features.select_groups([group]).normalized().tocsr().astype(np.float32)
        out.append(GroupBlock(str(group), feature_kind(str(group), names),
                              _labels(str(group), names), block))
    return out


def best_in_history(blocks: list[GroupBlock], items: np.ndarray, history: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """For each recommended item (model indices ``items``) and each group of ``blocks``,
    the history item (model indices ``history``) most similar to it by that group alone.

    Returns ``(best, similarity)``, both ``[n_groups, len(items)]``: ``best`` holds model
    indices, ``-1`` where there is none (the item has no features in the group, or no
    other history item shares anything with it: cosine <= 0); an item is never its own
    reason. Equal similarities in a group go to the history item most similar over all
    groups together (then to the one listed first).
    """
    items = np.asarray(items, dtype=np.int64)
    history = np.asarray(history, dtype=np.int64)
    best = np.full((len(blocks), len(items)), -1, dtype=np.int64)
    sims = np.zeros((len(blocks), len(items)), dtype=np.float64)
    if not len(items) or not len(history):
        return best, sims
    itself = items[:, None] == history[None, :]
    per_group = []
    for gb in blocks:
        s = np.asarray((gb.block[items] @ gb.block[history].T).toarray(), dtype=np.float64)
        s[itself] = -np.inf
        per_group.append(s)
    # equal similarities in a group (two films of the same genres) go to the history item
    # that resembles the recommended one most over all groups together
    overall = np.sum([np.maximum(s, 0.0) for s in per_group], axis=0)
    rows = np.arange(len(items))
    for g, s in enumerate(per_group):
        top = s.max(axis=1)
        tied = s >= (top - 1e-6)[:, None]
        j = np.argmax(np.where(tied, overall, -np.inf), axis=1)
        ok = top > 1e-9
        best[g, ok] = history[j[ok]]
        sims[g, ok] = np.minimum(s[rows, j][ok], 1.0)  # float32 rounding: 1.0000001
    return best, sims


def shared_features(block: GroupBlock, a: np.ndarray, b: np.ndarray,
                    limit: int = 5) -> list[list[str]]:
    """For each pair ``(a[r], b[r])`` of model indices, the labels of the features of
    ``block`` both items have, largest shared weight first (at most ``limit``)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    both = block.block[a].multiply(block.block[b]).tocoo()
    keep = both.data > 0
    row, col, val = both.row[keep], both.col[keep], both.data[keep]
    order = np.lexsort((col, -val, row))
    row, col = row[order], col[order]
    starts = np.searchsorted(row, np.arange(len(a)))
    ends = np.searchsorted(row, np.arange(len(a)), side="right")
    labels = block.labels
    return [labels[col[s:min(e, s + limit)]].tolist() for s, e in
            zip(starts.tolist(), ends.tolist(), strict=True)]
