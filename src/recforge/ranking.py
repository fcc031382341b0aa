"""Top-k ranking over item indices: the one ranking function and its kernels.

:func:`top_k` is the single place where recforge turns scores into a ranking: it masks the
items each row has already seen (a CSR of excluded items per row) and any extra
exclusions, restricts the ranking to candidates, settles equal scores in a deterministic
order, and ranks rows without model scores (users unknown to the model) by popularity.
``Recommender.recommend``, ``iter_top_k``, ``recommend_for_history``, ``similar_items``,
the evaluation and the server all call it. Everything here speaks internal indices
(rows of the excluded-items matrix, item columns); external ids are the callers' business.

The module sits in the bottom layer (torch, numpy and scipy only), with the sparse
helpers the models share (:func:`torch_csr`, :func:`csr_to_torch`, :func:`rows_to_dense`,
:func:`binarize`, :func:`mask_rows`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from recforge.errors import ModelError

__all__ = ["Popular", "TieKey", "binarize", "csr_to_torch", "mask_rows", "random_ties",
           "rank_ties", "rows_to_dense", "top_k", "topk_with_ties", "torch_csr"]

#: ``key(rows, cols)``: the tie-break keys (smaller first) of those rows at those columns
#: (``[R, C]``), or at every column when ``cols`` is None (``[R, n]``).
TieKey = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class Popular(NamedTuple):
    """The ranking of rows without model scores: item indices from the most popular down
    (``order``, int64, ties already settled) and their scores in that order (``scores``,
    float32: ``scores[i]`` is item ``order[i]``'s)."""

    order: np.ndarray
    scores: np.ndarray


def top_k(score: Callable[[np.ndarray], torch.Tensor], rows: np.ndarray, k: int,
          n_items: int, *, exclude: sp.csr_matrix | None = None,
          extra: np.ndarray | None = None, candidates: np.ndarray | None = None,
          ties: TieKey | None = None, popular: Popular | None = None,
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``k`` best items: ``(item indices [B, k], scores [B, k])``, best first.

    ``rows`` are row indices (int64; for a user, the user's index in ``exclude``); a row
    of ``-1`` has no model scores (a user unknown to the model) and is ranked by
    ``popular`` (required then), as is, without exclusions. ``score(known_rows)`` returns
    the ``[len(known_rows), n_items]`` float scores of the others; the tensor is
    overwritten (return a copy of anything that must survive).

    * ``exclude``: a CSR matrix whose row ``rows[b]`` lists the items row ``b`` must not get
      (seen items); they are set to ``-inf`` before the top-k.
    * ``extra``: item indices that no row with scores gets (a history, posted items).
    * ``candidates``: item indices to rank among (the others are left out; ``k`` is cut
      to their number).
    * ``ties``: the order of equal scores (:func:`rank_ties`, :func:`random_ties`); with
      none, by item index.

    ``k`` is cut to ``n_items``. Excluded items come last, with score ``-inf``, only when
    fewer than ``k`` items remain; NaN scores rank as ``-inf``.
    """
    cand_mask = None
    if candidates is not None:
        cand_mask = torch.ones(n_items, dtype=torch.bool)
        cand_mask[torch.as_tensor(np.asarray(candidates, dtype=np.int64))] = False
        k = min(k, n_items - int(cand_mask.sum()))
    k = min(k, n_items)
    # (one row, the server's request: a look at it, not an array reduction)
    if rows[0] >= 0 if len(rows) == 1 else bool((rows >= 0).all()):
        return topk_with_ties(_masked(score(rows), rows, exclude, extra, cand_mask), k, ties)
    if popular is None:
        raise ModelError("rows without scores (-1) need a popularity fallback")
    order, ranked = popular
    if candidates is not None:
        keep = np.isin(order, candidates)
        order, ranked = order[keep], ranked[keep]
    # every row the popular items (copies: the caller may write), then the rows with
    # scores their own
    pos = torch.from_numpy(np.repeat(order[None, :k], len(rows), axis=0))
    vals = torch.from_numpy(np.repeat(ranked[None, :k], len(rows), axis=0))
    if len(rows) > 1 and (where := np.flatnonzero(rows >= 0)).size:
        at = torch.from_numpy(where)
        sub = _masked(score(rows[where]), rows[where], exclude, extra, cand_mask)
        pos[at], vals[at] = topk_with_ties(sub, k, None if ties is None else _sub_key(ties, at))
    return pos, vals


def _masked(scores: torch.Tensor, rows: np.ndarray, exclude: sp.csr_matrix | None,
            extra: np.ndarray | None, cand_mask: torch.Tensor | None) -> torch.Tensor:
    """``scores`` (of ``rows``) with the excluded, the extra and the non-candidate items
    set to ``-inf``, in place."""
    if exclude is not None:
        mask_rows(scores, exclude, rows)
    if extra is not None and len(extra):
        cols = np.asarray(extra, dtype=np.int64)
        if len(scores) == 1 and scores.device.type == "cpu":
            scores.numpy()[0, cols] = -np.inf  # one row: through numpy's view, no copies
        else:
            scores[:, torch.from_numpy(cols)] = -math.inf
    if cand_mask is not None:
        scores[:, cand_mask] = -math.inf
    return scores


def _sub_key(ties: TieKey, at: torch.Tensor) -> TieKey:
    """``ties`` for a sub-block made of the rows ``at`` of the block it was built for."""
    def key(rows: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
        return ties(at[rows], cols)

    return key


# ---------------------------------------------------------------------------------------
# the order of equal scores, and the top-k that settles it
def rank_ties(rank: torch.Tensor) -> TieKey:
    """Ties go to the item of lower ``rank`` (``rank[item]``; e.g. 0 for the most popular)."""
    n = len(rank)

    def key(rows: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
        return rank.expand(len(rows), n) if cols is None else rank[cols]

    return key


def random_ties(row_ids: torch.Tensor, n_items: int, seed: int) -> TieKey:
    """Ties in a pseudo-random order of each (row id, item): a seeded permutation of the
    items, rotated by an offset drawn from the row id (a user), so that the same user and
    item always draw the same, however users are batched, and users draw apart."""
    n = max(n_items, 1)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen).to(torch.int32)
    ids = row_ids.to(torch.int64)
    offset = ((ids * 0x9E3779B1 + (int(seed) & 0x7FFFFFFF)) & 0x7FFFFFFF)
    offset = (((offset ^ (offset >> 15)) * 0x2C1B3C6D & 0x7FFFFFFF) % n).to(torch.int32)

    def key(rows: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
        # (perm[col] + offset[row]) mod n, int32, the mod as one conditional subtraction;
        # a whole row needs no gather
        k = (perm if cols is None else perm[cols]) + offset[rows].unsqueeze(-1)
        return torch.where(k >= n, k - n, k)

    return key


def topk_with_ties(scores: torch.Tensor, k: int, tie_key: TieKey | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Column positions and values of each row's ``k`` largest scores, sorted by value.

    ``torch.topk`` leaves ties unordered (in practice it favours low columns). Here equal
    scores are taken and listed by ``tie_key(rows, cols)`` (smaller first; default: the
    column, as a stable sort would). The cost is a ``topk`` of ``k + 1``; when no two of
    those values are equal (continuous scores: nearly always) that is all, else sorts of
    ``k`` values follow, and rows whose k-th value is tied with values left out take a
    pass over the whole row (every row for a constant scorer). NaN scores rank last.
    """
    rows, n = scores.shape
    if k == 0 or rows == 0:
        return torch.empty((rows, 0), dtype=torch.int64), scores[:, :0]
    if scores.is_floating_point() and torch.isnan(scores).any():
        scores = scores.nan_to_num(nan=-math.inf)  # a NaN score ranks last, as no score
    top = torch.topk(scores, min(k + 1, n), dim=1)
    pos, vals = top.indices[:, :k], top.values[:, :k]
    if not bool((top.values[:, 1:] == top.values[:, :-1]).any()):
        # no two of the k + 1 largest scores equal (continuous scores: nearly every row):
        # no tie to settle, topk's order is the answer
        return pos, vals
    crossing = (torch.nonzero(top.values[:, k] == top.values[:, k - 1]).flatten() if k < n
                else torch.empty(0, dtype=torch.int64))
    if len(crossing):
        pos = pos.clone()
        pos[crossing] = _take_tied(scores[crossing], vals[crossing, -1:], k, crossing,
                                   tie_key)
    # order by value; equal values by key
    if tie_key is None:
        pos = torch.sort(pos, dim=1).values
    else:
        keys = tie_key(torch.arange(rows), pos)
        pos = pos.gather(1, torch.sort(keys, dim=1, stable=True).indices)
    vals = scores.gather(1, pos)
    by_value = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return pos.gather(1, by_value), vals.gather(1, by_value)


def _take_tied(sub: torch.Tensor, kth: torch.Tensor, k: int, rows: torch.Tensor,
               tie_key: TieKey | None) -> torch.Tensor:
    """The ``k`` columns (in column order) of rows whose ``k``-th value ``kth`` is tied
    with values left out: those above it, then which of its equals get in."""
    greater, tied = sub > kth, sub == kth
    need = k - greater.sum(dim=1, keepdim=True)
    if tie_key is None:  # the first ones in column order
        chosen = greater | (tied & (tied.cumsum(dim=1) <= need))
    else:  # those with the smallest keys
        keys = tie_key(rows, None)
        keys = keys.masked_fill(~tied, torch.iinfo(keys.dtype).max)
        m = int(need.max())
        first = torch.topk(keys, m, dim=1, largest=False).indices
        chosen = greater.clone()
        chosen.scatter_(1, first, torch.arange(m)[None, :] < need)
        chosen |= greater
    return chosen.nonzero()[:, 1].reshape(len(rows), k)


# ---------------------------------------------------------------------------------------
# sparse helpers the models share
def torch_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
              shape: tuple[int, int]) -> torch.Tensor:
    """A torch sparse CSR tensor (float32) from CSR arrays, without torch's beta warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(np.asarray(indptr, dtype=np.int64)),
            torch.from_numpy(np.asarray(indices, dtype=np.int64)),
            torch.from_numpy(np.asarray(data, dtype=np.float32)), size=shape,
            check_invariants=False)


def csr_to_torch(mat: sp.csr_matrix) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (float32), sharing no memory."""
    mat = mat.tocsr()
    return torch_csr(mat.indptr, mat.indices, mat.data, mat.shape)


def rows_to_dense(mat: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """Dense float32 tensor of the given rows of a CSR matrix."""
    return torch.from_numpy(np.asarray(mat[rows].toarray(), dtype=np.float32))


def binarize(mat: sp.csr_matrix) -> sp.csr_matrix:
    """A copy of ``mat`` with every stored value set to 1."""
    out = mat.copy()
    out.data = np.ones_like(out.data, dtype=np.float32)
    return out


def mask_rows(scores: torch.Tensor, mat: sp.csr_matrix, rows: np.ndarray,
              value: float = -math.inf) -> None:
    """Set ``scores[b, j] = value`` wherever ``mat[rows[b], j]`` is stored (in place)."""
    indptr = mat.indptr
    if len(rows) == 1 and scores.device.type == "cpu":
        # one row (the server's request): its CSR slice through numpy's view of the scores
        r = int(rows[0])
        scores.numpy()[0, mat.indices[indptr[r]:indptr[r + 1]]] = value
        return
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return
    r = np.repeat(np.arange(len(rows)), lengths)
    # Gather the column indices of all rows at once.
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    cols = mat.indices[np.arange(total) + offsets]
    scores[torch.from_numpy(r), torch.from_numpy(cols.astype(np.int64))] = value
