"""Item-based kNN on baseline residuals (Koren 2010; Surprise's ``KNNBaseline`` with the
``pearson_baseline`` similarity, item-based).

With baseline estimates ``b_ui = mu + b_u + b_i`` (:func:`~recforge.models.baseline.fit_biases`,
ALS by default) and residuals ``z_ui = r_ui - b_ui`` of the training ratings:

* similarity of items ``i`` and ``j`` over their common users ``U(i, j)``::

      rho_ij = sum_u z_ui z_uj / sqrt(sum_u z_ui^2 * sum_u z_uj^2)
      s_ij   = rho_ij * (|U(i, j)| - 1) / (|U(i, j)| - 1 + shrinkage)

  computed over blocks of items with sparse matrix products (``Z^T Z``, ``(Z*Z)^T B``,
  ``B^T B`` for the indicator ``B``); only positive similarities are kept (sparse), since
  only they contribute below;
* prediction: of the items the user rated, the ``k`` most similar to ``i``;
  ``r_ui = b_ui + sum_j s_ij z_uj / sum_j s_ij`` over those with ``s_ij > 0``
  (``b_ui`` alone when fewer than ``min_k`` of them), clipped to the rating range.

Predictions are vectorized over a batch of pairs: each pair's rated items are gathered
at once, their similarities looked up in the sorted sparse matrix, and the top ``k`` per
pair taken by one sort.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recforge.data.interactions import Interactions
from recforge.models.artifact import CSR, StateSpec
from recforge.models.baseline import (
    BASELINE_RULES,
    RatingModel,
)
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.params import MAX_COUNT, MAX_NUMBER, check_params, int_rule, number_rule

#: Gathered (pair, rated item) entries handled at once when predicting (bounds memory).
_ENTRIES_PER_CHUNK = 1 << 20


def _ragged(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR rows ``rows``: ``(owner, pos)``, the position in ``rows`` and the position in
    the CSR's ``indices`` / ``data`` of each of their stored entries, row after row."""
    starts = indptr[rows]
    lens = indptr[rows + 1] - starts
    owner = np.repeat(np.arange(len(rows)), lens)
    first = np.cumsum(lens) - lens
    pos = np.repeat(starts - first, lens) + np.arange(int(lens.sum()))
    return owner, pos


class KNNBaseline(RatingModel):
    """Item-based kNN on baseline residuals with the ``pearson_baseline`` similarity.

    Parameters (Surprise's defaults)
    ----------
    k: most similar rated items a prediction reads (40).
    min_k: fewer positive neighbours than this: the baseline alone (1).
    shrinkage: shrinks similarities supported by few common users (100).
    method, epochs, reg_u, reg_i, reg, learning_rate, batch_size, seed: the baseline
        estimates, as for ``baseline`` (ALS, ``reg_u=15``, ``reg_i=10``, 10 epochs).
    block_size: items per block of the similarity computation (memory; same results).
    """

    name = "knnbaseline"
    capabilities = Capabilities(rates=True, learns_ratings=True, similar_items=True,
                                seeded=True)
    tuning_space = {"k": ("logint", 10, 200), "shrinkage": ("float", 0.0, 300.0)}

    def __init__(self, k: int = 40, min_k: int = 1, shrinkage: float = 100.0,
                 method: str = "als", epochs: int | None = None, reg_u: float = 15.0,
                 reg_i: float = 10.0, reg: float = 0.02, learning_rate: float = 0.005,
                 batch_size: int = 256, seed: int = 0, block_size: int = 1024) -> None:
        self.k = k
        self.min_k = min_k
        self.shrinkage = shrinkage
        self.method = method
        self.epochs = epochs
        self.reg_u = reg_u
        self.reg_i = reg_i
        self.reg = reg
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.seed = seed
        self.block_size = block_size

    def _validate_params(self) -> None:
        check_params(self, {**BASELINE_RULES, "k": int_rule(1, MAX_COUNT),
                            "min_k": int_rule(0, MAX_COUNT),
                            "shrinkage": number_rule(0, MAX_NUMBER),
                            "seed": int_rule(0, 2**63 - 1),
                            "block_size": int_rule(1, MAX_COUNT)})

    #: prediction reads k and min_k
    scoring_params = {"k": int_rule(1, MAX_COUNT), "min_k": int_rule(0, MAX_COUNT)}

    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        self._fit_baseline(train)
        self._set_residuals()
        self.similarity_ = self._similarities()

    def _set_residuals(self) -> None:
        """``residual_``: the training matrix with ``r_ui - b_ui`` in place of ratings."""
        seen = self.seen_.tocsr(copy=True)
        seen.sort_indices()
        rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
        seen.data = (seen.data.astype(np.float64)
                     - self._baseline_pairs(rows, seen.indices.astype(np.int64)))
        self.residual_ = seen

    def _similarities(self) -> sp.csr_matrix:
        z = self.residual_
        b = z.copy()
        b.data = np.ones_like(b.data)
        z2 = z.multiply(z).tocsr()
        zt, bt, z2t = z.T.tocsr(), b.T.tocsr(), z2.T.tocsr()
        n = z.shape[1]
        shrink = float(self.shrinkage)
        rows, cols, vals = [], [], []
        for start in range(0, n, int(self.block_size)):
            stop = min(n, start + int(self.block_size))
            prods = (zt[start:stop] @ z).toarray()
            sq_i = (z2t[start:stop] @ b).toarray()
            sq_j = (bt[start:stop] @ z2).toarray()
            freq = (bt[start:stop] @ b).toarray()
            denom = np.sqrt(sq_i * sq_j)
            with np.errstate(divide="ignore", invalid="ignore"):
                sim = np.where(denom > 0, prods / denom, 0.0)
                sim *= np.where(freq > 1, (freq - 1) / (freq - 1 + shrink), 0.0)
            own = np.arange(start, stop)
            sim[own - start, own] = 1.0  # as Surprise: an item is fully similar to itself
            r, c = np.nonzero(sim > 0)
            rows.append(r + start)
            cols.append(c)
            vals.append(sim[r, c].astype(np.float32))
        sim = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(n, n), dtype=np.float32)
        sim.sort_indices()
        return sim

    # ----------------------------------------------------------------------------------
    def _neighbourhood(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``sum s z / sum s`` over each pair's top-``k`` positive neighbours among the
        user's rated items (0 with fewer than ``min_k``), for known index pairs."""
        z, s = self.residual_, self.similarity_
        n = s.shape[1]
        # every stored similarity as one sorted key row * n + col, looked up by bisection
        keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(s.indptr)) * n + s.indices
        lens = np.diff(z.indptr)[users]
        ends = np.cumsum(lens)
        out = np.zeros(len(users))
        start = 0
        while start < len(users):
            base = ends[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, base + _ENTRIES_PER_CHUNK, "right")))
            u, i = users[start:stop], items[start:stop]
            owner, pos = _ragged(z.indptr, u)
            j = z.indices[pos].astype(np.int64)
            query = i[owner] * n + j
            at = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
            found = keys[at] == query if len(keys) else np.zeros(len(query), bool)
            sim = np.where(found, s.data[at] if len(keys) else 0.0, 0.0).astype(np.float64)
            keep = sim > 0
            owner, sim, res = owner[keep], sim[keep], z.data[pos][keep]
            # top k per pair: by pair, then by similarity, highest first
            order = np.lexsort((-sim, owner))
            owner, sim, res = owner[order], sim[order], res[order]
            counts = np.bincount(owner, minlength=len(u))
            rank = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
            top = rank < int(self.k)
            owner, sim, res = owner[top], sim[top], res[top]
            total = np.bincount(owner, sim, minlength=len(u))
            weighted = np.bincount(owner, sim * res, minlength=len(u))
            enough = (np.bincount(owner, minlength=len(u)) >= int(self.min_k)) & (total > 0)
            out[start:stop] = np.where(enough, weighted / np.where(total > 0, total, 1.0), 0.0)
            start = stop
        return out

    def _predict_index(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        est = self._baseline_pairs(users, items) + self._neighbourhood(users, items)
        return np.clip(est, *self.rating_range_).astype(np.float32)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        u = users.numpy().astype(np.int64)
        n = self.n_items
        pairs_u = np.repeat(u, n)
        pairs_i = np.tile(np.arange(n, dtype=np.int64), len(u))
        est = self._baseline_pairs(pairs_u, pairs_i) + self._neighbourhood(pairs_u, pairs_i)
        return torch.from_numpy(est.reshape(len(u), n).astype(np.float32))

    def _item_similarity(self, items: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.similarity_[items.numpy()].toarray())

    # ----------------------------------------------------------------------------------
    def _state(self):
        s = self.similarity_
        return {**self._baseline_state(),
                "sim_indptr": torch.from_numpy(s.indptr.astype(np.int64)),
                "sim_indices": torch.from_numpy(s.indices.astype(np.int32)),
                "sim_data": torch.from_numpy(s.data.astype(np.float32))}

    def _state_spec(self, extra) -> StateSpec:
        return {**self._baseline_spec(), "sim": CSR((self.n_items, self.n_items))}

    def _restore(self, state, extra):
        self._restore_baseline(state, extra)
        n = self.n_items
        sim = sp.csr_matrix((state["sim_data"].numpy(), state["sim_indices"].numpy(),
                             state["sim_indptr"].numpy()), shape=(n, n))
        sim.sort_indices()
        self.similarity_ = sim
        self._set_residuals()
