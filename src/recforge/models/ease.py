"""EASE: Embarrassingly Shallow Autoencoder (Steck, WWW 2019).

A closed-form item-item model: ``B = argmin ||X - XB||^2 + reg ||B||^2`` with ``diag(B) = 0``,
solved as ``P = (X^T X + reg I)^-1``, ``B_ij = -P_ij / P_jj``. One dense inverse of an
``n_items x n_items`` matrix: seconds for catalogues of a few thousand items, minutes at
30,000. The fit holds at most two dense float32 ``n_items x n_items`` matrices at a time
(the Gram matrix, then its Cholesky factor and the inverse); :func:`ease_peak_bytes` is the
measured peak, and ``fit`` refuses, before allocating, a catalogue whose peak exceeds the
memory available (:func:`available_memory`), naming the models that scale further.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from recforge.data.interactions import Interactions
from recforge.errors import ModelError
from recforge.models.artifact import Array, StateSpec
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.params import (
    BOOL_RULE,
    check_params,
    extra_value,
    number_rule,
    positive_rule,
)
from recforge.ranking import binarize

#: Bytes per ``n_items^2`` of the fit's peak resident memory above the data (two float32
#: matrices, 8, plus allocator slack), measured with ``benchmarks/bench_ease_memory.py``.
PEAK_BYTES_PER_ITEM_PAIR = 8.5
#: Fixed overhead of a fit (torch's workspaces, the sparse matrices of a small data set).
PEAK_BASE_BYTES = 200 * 2**20


def ease_peak_bytes(n_items: int) -> int:
    """The fit's peak resident memory (bytes above the data already loaded) for a catalogue
    of ``n_items`` items, as measured by ``benchmarks/bench_ease_memory.py``."""
    return int(PEAK_BYTES_PER_ITEM_PAIR * float(n_items) ** 2 + PEAK_BASE_BYTES)


def available_memory() -> int:
    """Bytes of memory a fit can still take: the kernel's ``MemAvailable`` (or free pages
    where there is no ``/proc/meminfo``), less where a cgroup (container) limit is lower."""
    have = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                have = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError):
        pass
    if have is None:
        try:
            have = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return 1 << 62  # unknown: do not refuse
    try:
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            have = min(have, int(limit) - int((cg / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return int(have)


class EASE(Recommender):
    """EASE item-item autoencoder.

    Parameters
    ----------
    reg:
        L2 regularisation (lambda) added to the diagonal of the Gram matrix. Larger for
        larger / denser data; typical range 50 to 5,000. The default suits MovieLens-1M-sized
        implicit data.
    binary:
        Use 1 for every event (implicit feedback) rather than the event values.
    dropout:
        EDLAE's emphasized denoising (Steck, NeurIPS 2020, "Autoencoders that don't
        overfit towards the identity"): training as if each input were dropped with this
        probability ``p`` is, in closed form, an extra L2 penalty ``p / (1 - p)`` times
        each item's own Gram diagonal (its count, for binary data) on that item's weights:
        popular items are regularised more. 0 (default) is EASE.
    """

    name = "ease"
    capabilities = Capabilities(folds_in_history=True, similar_items=True)
    forgetting = "exact"
    tuning_space = {"reg": ("log", 10.0, 5000.0)}

    def __init__(self, reg: float = 500.0, binary: bool = True, dropout: float = 0.0) -> None:
        self.reg = reg
        self.binary = binary
        self.dropout = dropout

    def _validate_params(self) -> None:
        check_params(self, {"reg": positive_rule(), "binary": BOOL_RULE,
                            "dropout": number_rule(0, 0.95)})

    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        self._solve()

    def _history(self):
        return binarize(self.seen_) if self.binary else self.seen_.astype(np.float32)

    def _solve(self) -> None:
        """``weights_`` (and ``pdiag_``) from ``seen_``: the closed form."""
        self._check_memory(self.seen_.shape[1])
        x = self._history()
        self.history_ = x
        # float32 is enough: the ridge term makes the Gram matrix well conditioned, and the
        # Cholesky inverse takes half the time of float64 (1.0 s vs 2.0 s at 3,628 items).
        gram = _dense_gram(x)
        drop = float(self.dropout or 0.0)
        if drop > 0:  # EDLAE: the penalty grows with each item's own diagonal
            gram.diagonal().mul_(1.0 + drop / (1.0 - drop))
        gram.diagonal().add_(float(self.reg))
        chol, info = torch.linalg.cholesky_ex(gram)
        if int(info) != 0:  # only with reg tiny against the data scale: float64, then refuse
            del chol
            chol, info = torch.linalg.cholesky_ex(gram.double())
            if int(info) != 0:
                raise ModelError(f"ease: reg={self.reg} is too small for this data (the Gram "
                                 "matrix plus reg is not positive definite, e.g. two items "
                                 "with the same users); raise reg")
        del gram  # at most two n_items^2 matrices at a time: the factor, then the inverse
        p = torch.cholesky_inverse(chol).to(torch.float32)
        del chol
        #: diag(P), P = (X^T X + reg I)^-1: with the weights it gives P back, which
        #: forget_users updates (Woodbury) instead of inverting again
        self.pdiag_ = p.diagonal().to(torch.float64).clone()
        p.div_(-p.diagonal().clone().unsqueeze(0))  # B_ij = -P_ij / P_jj, in place
        p.fill_diagonal_(0.0)
        self.weights_ = p.contiguous()

    def _check_memory(self, n_items: int) -> None:
        """Refuse, before allocating, a catalogue whose dense fit would not fit in memory."""
        need, have = ease_peak_bytes(n_items), available_memory()
        if need > have:
            raise ModelError(
                f"ease: a catalogue of {n_items:,} items needs about {need / 2**30:.1f} GB "
                f"for its dense {n_items:,} x {n_items:,} inverse, but only "
                f"{have / 2**30:.1f} GB of memory is available; use gfcf or bspm (sparse "
                "item-item filters with a truncated SVD), itemknn or als for a catalogue "
                "this large, or filter rare items out first")

    def _forget(self, keep, removed) -> str:
        u = (binarize(removed) if self.binary else removed.astype(np.float32)).tocsr()
        u = u[np.diff(u.indptr) > 0]  # users without events change nothing
        m, n = u.shape
        if m == 0:
            self.history_ = self._history()
            return "no events"
        # Woodbury costs O(m n^2) against the refit's O(n^3) and holds three float64
        # n x n matrices; past a quarter of the catalogue, or without diag(P) (a model
        # saved before it was kept), the closed form is computed again.
        # (with dropout the penalty depends on the data's own Gram diagonal, which the
        # removed users change: no rank-m update, the closed form again)
        if (getattr(self, "pdiag_", None) is None or 4 * m > n or float(self.dropout or 0)
                or 24 * n * n > available_memory()):
            self._solve()
            return "closed form recomputed"
        self.weights_, self.pdiag_ = woodbury_downdate(self.weights_, self.pdiag_, u)
        self.history_ = self._history()
        return f"Woodbury downdate of rank {m}"

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        # Sparse history rows times the dense weights: scipy's CSR x dense kernel is the
        # fastest option on CPU (it does nnz * n_items work, not n_users * n_items^2).
        return torch.from_numpy(self.history_[users.numpy()] @ self.weights_.numpy())


    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        w = self.weights_[torch.from_numpy(items)]
        if self.binary or values is None:
            return w.sum(0)
        return torch.from_numpy(values.astype(np.float32)) @ w

    def _item_similarity(self, items: torch.Tensor) -> torch.Tensor:
        # Row i of B: how much having i predicts each other item.
        return self.weights_[items]

    def _state(self):
        state = {"weights": self.weights_}
        if getattr(self, "pdiag_", None) is not None:
            state["pdiag"] = self.pdiag_
        return state

    def _extra(self):
        return {"pdiag": getattr(self, "pdiag_", None) is not None}

    def _state_spec(self, extra) -> StateSpec:
        spec: StateSpec = {"weights": Array((self.n_items, self.n_items))}
        if extra_value(extra, "pdiag", BOOL_RULE, False):  # not in models saved before it
            spec["pdiag"] = Array((self.n_items,), torch.float64, low=0)
        return spec

    def _restore(self, state, extra):
        self.weights_ = state["weights"]
        self.pdiag_ = state.get("pdiag")
        self.history_ = binarize(self.seen_) if self.binary else self.seen_


def woodbury_downdate(weights: torch.Tensor, pdiag: torch.Tensor, u
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """EASE's weights without the rows ``u`` (``m x n`` sparse, the removed users' history)
    in the Gram matrix: ``P = (G + reg I)^-1`` is rebuilt from the weights and its diagonal
    (``P_ij = -B_ij P_jj``, ``P_jj = pdiag_j``) and updated with Woodbury's identity for
    ``G - U^T U``::

        P' = P + (U P)^T (I_m - U P U^T)^-1 (U P)

    an ``m x m`` solve (positive definite: ``G - U^T U + reg I`` is) and an ``n x n`` rank-
    ``m`` update, in float64. Returns the new weights (float32, zero diagonal) and
    ``diag(P')``."""
    p = weights.to(torch.float64).neg_().mul_(pdiag.unsqueeze(0))
    p.diagonal().copy_(pdiag)
    p = (p + p.T).mul_(0.5)  # symmetric in exact arithmetic: average out the rounding
    u = u.astype(np.float64)
    w = torch.from_numpy(np.ascontiguousarray(u @ p.numpy()))  # U P, m x n
    s = torch.eye(u.shape[0], dtype=torch.float64) - torch.from_numpy(
        np.ascontiguousarray((u @ w.numpy().T).T))  # I - U P U^T
    z = torch.cholesky_solve(w, torch.linalg.cholesky(s))  # S^-1 U P
    p.addmm_(w.T, z)
    del w, z
    d = p.diagonal().clone()
    p.div_(-d.unsqueeze(0))
    p.fill_diagonal_(0.0)
    return p.to(torch.float32).contiguous(), d


def _dense_gram(x, block: int = 2048) -> torch.Tensor:
    """``x^T x`` as a dense float32 tensor, built ``block`` columns at a time so that no
    sparse copy of a near-dense Gram matrix (8 bytes per entry and more) sits beside it."""
    n = x.shape[1]
    x = x.tocsc().astype(np.float32)
    xt = x.T.tocsr()
    gram = torch.empty((n, n), dtype=torch.float32)
    out = gram.numpy()
    for lo in range(0, n, block):  # n / block iterations, each a sparse product
        hi = min(n, lo + block)
        out[:, lo:hi] = (xt @ x[:, lo:hi]).toarray()
    return gram
