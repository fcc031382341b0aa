"""Item-based k-nearest-neighbours collaborative filtering.

``sim(i, j) = <x_i, x_j> / (||x_i|| ||x_j|| + shrink)`` over the item columns of the
user-item matrix (cosine with shrinkage, Koren 2008); each item keeps its ``neighbors``
most similar items, and a user's score for item ``j`` sums the similarities of ``j`` to
the items in the user's history: ``score(u, j) = sum_{i in I(u)} x_ui S[i, j]``.

The similarity matrix is computed over blocks of items (memory ``block x n_items``) and
kept sparse (``n_items x neighbors``), so the model scales to catalogues whose dense
item-item matrix would not fit.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recforge.data.interactions import Interactions
from recforge.models.artifact import CSR, StateSpec
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.history import history_row
from recforge.models.params import (
    BOOL_RULE,
    MAX_COUNT,
    MAX_NUMBER,
    check_params,
    int_rule,
    number_rule,
)
from recforge.ranking import binarize


class ItemKNN(Recommender):
    """Item-item kNN with cosine similarity.

    Parameters
    ----------
    neighbors:
        Neighbours kept per item (typical range 20 to 500).
    shrink:
        Added to the denominator of the cosine: damps similarities supported by few users
        (typical range 0 to 100).
    binary:
        Use 1 for every event rather than its value.
    block_size:
        Items per block when computing similarities (bounds memory; does not change results).
    """

    name = "itemknn"
    capabilities = Capabilities(folds_in_history=True, similar_items=True)
    forgetting = "exact"
    tuning_space = {"neighbors": ("logint", 5, 500), "shrink": ("float", 0.0, 100.0)}

    def __init__(self, neighbors: int = 20, shrink: float = 0.0, binary: bool = True,
                 block_size: int = 2048) -> None:
        self.neighbors = neighbors
        self.shrink = shrink
        self.binary = binary
        self.block_size = block_size

    def _validate_params(self) -> None:
        check_params(self, {"neighbors": int_rule(1, MAX_COUNT),
                            "shrink": number_rule(0, MAX_NUMBER), "binary": BOOL_RULE,
                            "block_size": int_rule(1, MAX_COUNT)})

    def _history(self) -> sp.csr_matrix:
        return binarize(self.seen_) if self.binary else self.seen_

    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        self._similarities()

    def _forget(self, keep, removed) -> str:
        # every similarity of an item the users had changes, and with it the neighbour
        # lists of the items that share a user with it: recomputed from the new matrix
        self._similarities()
        return "similarities recomputed"

    def _similarities(self) -> None:
        """``history_`` and ``similarity_`` from ``seen_``."""
        x = self._history()
        self.history_ = x
        n_items = x.shape[1]
        xt = x.T.tocsr()
        norms = np.sqrt(np.asarray(xt.multiply(xt).sum(axis=1)).ravel()).astype(np.float32)
        norms_t = torch.from_numpy(norms)
        k = min(int(self.neighbors), max(1, n_items - 1))
        rows, cols, vals = [], [], []
        for start in range(0, n_items, int(self.block_size)):
            stop = min(n_items, start + int(self.block_size))
            dot = torch.from_numpy((xt[start:stop] @ x).toarray().astype(np.float32))
            denom = norms_t[start:stop, None] * norms_t[None, :] + float(self.shrink)
            sim = torch.where(denom > 0, dot / denom.clamp_min(1e-12), torch.zeros(()))
            idx = torch.arange(start, stop)
            sim[idx - start, idx] = 0.0  # an item is not its own neighbour
            top = torch.topk(sim, k, dim=1)
            keep = top.values > 0
            r = (idx[:, None].expand(-1, k))[keep]
            rows.append(r.numpy())
            cols.append(top.indices[keep].numpy())
            vals.append(top.values[keep].numpy())
        sim = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(n_items, n_items), dtype=np.float32)
        sim.sort_indices()
        self.similarity_ = sim

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        block = self.history_[users.numpy()] @ self.similarity_
        return torch.from_numpy(np.asarray(block.toarray(), dtype=np.float32))

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        row = history_row(items, values, self.n_items, binary=bool(self.binary)) @ self.similarity_
        return torch.from_numpy(np.asarray(row.toarray(), dtype=np.float32)).ravel()

    def _item_similarity(self, items: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.similarity_[items.numpy()].toarray())

    def _state(self):
        s = self.similarity_
        return {"sim_indptr": torch.from_numpy(s.indptr.astype(np.int64)),
                "sim_indices": torch.from_numpy(s.indices.astype(np.int32)),
                "sim_data": torch.from_numpy(s.data.astype(np.float32))}

    def _state_spec(self, extra) -> StateSpec:
        return {"sim": CSR((self.n_items, self.n_items))}

    def _restore(self, state, extra):
        n = len(self.items_)
        self.similarity_ = sp.csr_matrix(
            (state["sim_data"].numpy(), state["sim_indices"].numpy(),
             state["sim_indptr"].numpy()), shape=(n, n))
        self.history_ = self._history()
