"""User-based k-nearest-neighbours collaborative filtering.

``sim(u, v) = <x_u, x_v> / (||x_u|| ||x_v|| + shrink)`` over the users' binarized rows of
the user-item matrix (cosine with shrinkage); each user keeps its ``neighbors`` most
similar other users, and a user's score for item ``j`` sums the similarities of the
neighbours who interacted with it: ``score(u, j) = sum_{v in N(u)} sim(u, v) x_vj``.

The similarities are computed over blocks of users (memory ``block x n_users``) and kept
sparse (``n_users x neighbors``). A history posted for a user the model never saw is
folded in the same way: its similarity to every training user, its top neighbours, their
rows summed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recforge.data.interactions import Interactions
from recforge.models.artifact import CSR, StateSpec
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.history import history_row
from recforge.models.params import MAX_COUNT, MAX_NUMBER, check_params, int_rule, number_rule
from recforge.ranking import binarize

_NEIGHBORS_RULE = int_rule(1, MAX_COUNT)
_SHRINK_RULE = number_rule(0, MAX_NUMBER)


class UserKNN(Recommender):
    """User-user kNN with cosine similarity of binarized histories.

    Parameters
    ----------
    neighbors:
        Neighbours kept per user (typical range 20 to 500).
    shrink:
        Added to the denominator of the cosine: damps similarities supported by few items
        (typical range 0 to 100).
    block_size:
        Users per block when computing similarities (bounds memory; does not change
        results).
    """

    name = "userknn"
    capabilities = Capabilities(folds_in_history=True)
    forgetting = "exact"  # forget_users: the neighbour lists recomputed without the users
    tuning_space = {"neighbors": ("logint", 5, 500), "shrink": ("float", 0.0, 100.0)}
    #: a posted history is folded in with these
    scoring_params = {"neighbors": _NEIGHBORS_RULE, "shrink": _SHRINK_RULE}

    def __init__(self, neighbors: int = 50, shrink: float = 0.0, block_size: int = 2048) -> None:
        self.neighbors = neighbors
        self.shrink = shrink
        self.block_size = block_size

    def _validate_params(self) -> None:
        check_params(self, {"neighbors": _NEIGHBORS_RULE, "shrink": _SHRINK_RULE,
                            "block_size": int_rule(1, MAX_COUNT)})

    def _set_history(self) -> None:
        self.history_: sp.csr_matrix = binarize(self.seen_).astype(np.float32)
        self._history_t = self.history_.T.tocsr()
        self._norms = np.sqrt(np.asarray(self.history_.sum(axis=1)).ravel()).astype(np.float32)

    def _top_neighbours(self, dot: np.ndarray, norms: np.ndarray,
                        own: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities of rows with norms ``norms`` (``[B]``) to every user, from
        their dot products ``[B, n_users]``; ``own[b]`` (a user index or -1) is left out.
        Returns the top ``neighbors`` columns and similarities, each ``[B, k]``."""
        dot_t = torch.from_numpy(np.ascontiguousarray(dot, dtype=np.float32))
        denom = torch.from_numpy(norms)[:, None] * torch.from_numpy(self._norms)[None, :]
        denom = denom + float(self.shrink)
        sim = torch.where(denom > 0, dot_t / denom.clamp_min(1e-12), torch.zeros(()))
        if own is not None:
            rows = torch.arange(len(own))
            sim[rows, torch.from_numpy(own)] = 0.0  # a user is not its own neighbour
        k = min(int(self.neighbors), max(1, sim.shape[1] - 1))
        top = torch.topk(sim, k, dim=1)
        return top.indices, top.values

    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        self._set_history()
        x, n_users = self.history_, self.history_.shape[0]
        rows, cols, vals = [], [], []
        for start in range(0, n_users, int(self.block_size)):
            users = np.arange(start, min(n_users, start + int(self.block_size)))
            dot = (x[users] @ self._history_t).toarray()
            idx, sim = self._top_neighbours(dot, self._norms[users], users)
            keep = sim > 0
            rows.append(np.repeat(users, idx.shape[1])[keep.numpy().ravel()])
            cols.append(idx[keep].numpy())
            vals.append(sim[keep].numpy())
        sim_matrix = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_users, n_users), dtype=np.float32)
        sim_matrix.sort_indices()
        self.similarity_ = sim_matrix

    def _forget(self, keep, removed) -> str:
        # the users leave every neighbour list, and the lists they held a place in take the
        # next neighbour: recomputed from seen_ (all _fit reads), as a fit without them
        self._fit(None, None, FitOptions())  # type: ignore[arg-type]
        return "similarities recomputed"

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        block = self.similarity_[users.numpy()] @ self.history_
        return torch.from_numpy(np.asarray(block.toarray(), dtype=np.float32))

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        row = history_row(items, values, self.n_items)
        dot = (row @ self._history_t).toarray()
        idx, sim = self._top_neighbours(dot, np.sqrt([float(row.nnz)]).astype(np.float32),
                                        None)
        keep = sim[0] > 0
        weights = sp.csr_matrix((sim[0][keep].numpy(), (np.zeros(int(keep.sum()), np.int64),
                                                       idx[0][keep].numpy())),
                                shape=(1, self.n_users))
        return torch.from_numpy(np.asarray((weights @ self.history_).toarray(),
                                           dtype=np.float32)).ravel()

    def _state(self) -> dict[str, torch.Tensor]:
        s = self.similarity_
        return {"sim_indptr": torch.from_numpy(s.indptr.astype(np.int64)),
                "sim_indices": torch.from_numpy(s.indices.astype(np.int32)),
                "sim_data": torch.from_numpy(s.data.astype(np.float32))}

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        return {"sim": CSR((self.n_users, self.n_users))}

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        n = self.n_users
        self.similarity_ = sp.csr_matrix(
            (state["sim_data"].numpy(), state["sim_indices"].numpy(),
             state["sim_indptr"].numpy()), shape=(n, n))
        self._set_history()
