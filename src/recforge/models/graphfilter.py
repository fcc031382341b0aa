"""Training-free graph filters: GF-CF (Shen et al., CIKM 2021) and BSPM (Choi et al., SIGIR 2023).

Both read the user-item graph through its symmetrically normalised interaction matrix
``R~ = D_u^-1/2 R D_i^-1/2`` (``R`` binary; ``D_u``, ``D_i`` the user and item degrees)
and filter a user's row ``r_u`` with two item-item operators:

* the **linear filter** ``L = R~^T R~`` (the normalised item-item co-occurrence);
* the **ideal low-pass filter** ``P = D_i^-1/2 V_k V_k^T D_i^1/2``, ``V_k`` the top-``k``
  right singular vectors of ``R~`` (``factor_dim``), found by randomized subspace
  iteration on ``L`` (seeded).

GF-CF scores ``r_u (L + alpha P)``. BSPM blurs ``r_u`` with the heat equation
``dr/dt = r (L - I)`` over ``[0, blur_time]``, adds ``idl_beta r_u P`` (the ideal filter's
own ODE, ``dr/dt = r (P - I)``, taken in one Euler step of length 1, as the reference
code does) and sharpens with ``dr/dt = -r L`` over ``[0, sharpen_time]``; each ODE is
solved with ``steps`` fixed Euler or RK4 steps. Every step is linear in ``r``, so a step
is a polynomial in the operator: Euler ``y + h a(y)``, RK4
``y + h a(y + h/2 a(y + h/3 a(y + h/4 a(y))))`` (for a linear autonomous ODE the
classical and the 3/8-rule RK4 of the reference code's ``torchdiffeq`` both give this,
the fourth-order Taylor polynomial of ``exp(h A)``).

Two ways to apply the filters, with the same results up to float rounding:

* **dense** (``n_items <= dense_items`` and at least as many users as items): the whole
  filter is one ``n_items x n_items`` matrix ``M``, built once at fit (a few dense
  matrix products) and applied as ``x_u M`` (a sparse row times a dense matrix);
* **factored** (otherwise): nothing ``n_items x n_items`` is ever built. ``y L`` is
  ``(y R~^T) R~``, two sparse products per block of users, and ``y P`` is
  ``((y D_i^-1/2) V_k) (V_k^T D_i^1/2)``: memory ``O(nnz + k n_items + block n_items)``.

What is saved: ``V_k`` (``k x n_items``); the normalised matrix and the dense filter are
rebuilt from the saved training events on load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recforge.data.interactions import Interactions
from recforge.models.artifact import Array, StateSpec
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.history import history_row
from recforge.models.params import (
    BOOL_RULE,
    MAX_COUNT,
    MAX_DIM,
    SEED_RULE,
    ParamRule,
    check_params,
    choice_rule,
    extra_value,
    int_rule,
    number_rule,
)
from recforge.ranking import binarize

__all__ = ["GFCF", "BSPM"]

#: Columns added to ``factor_dim`` in the randomized subspace iteration (its accuracy).
SVD_OVERSAMPLE = 32
MAX_STEPS = 1000
#: Longest ODE time: the papers use at most 3; at 10, RK4 steps of the longest length stay
#: far inside float32 (the growth of a step is at most ``h^4 / 24`` per unit of signal).
MAX_TIME = 10.0
SOLVER_RULE = choice_rule("euler", "rk4")

Op = Callable[[torch.Tensor], torch.Tensor]


def normalized_graph(x: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """``R~ = D_u^-1/2 x D_i^-1/2`` (float32 CSR) and the item degrees ``D_i`` (float64);
    a user or item without events keeps a zero row / column."""
    x = binarize(x).astype(np.float64)
    du = np.asarray(x.sum(axis=1)).ravel()
    di = np.asarray(x.sum(axis=0)).ravel()
    inv_u = np.where(du > 0, 1.0 / np.sqrt(np.maximum(du, 1e-300)), 0.0)
    inv_i = np.where(di > 0, 1.0 / np.sqrt(np.maximum(di, 1e-300)), 0.0)
    rt = sp.diags(inv_u) @ x @ sp.diags(inv_i)
    rt = sp.csr_matrix(rt, dtype=np.float32)
    rt.sort_indices()
    return rt, di


def top_right_singular_vectors(rt: sp.csr_matrix, k: int, iters: int, seed: int) -> np.ndarray:
    """The top-``k`` right singular vectors of ``rt`` as a ``k x n`` float32 array (rows by
    decreasing singular value): randomized subspace iteration on ``rt^T rt`` with
    ``k + SVD_OVERSAMPLE`` columns and ``iters`` passes, then Rayleigh-Ritz (Halko et al.
    2011). Exact when ``k + SVD_OVERSAMPLE >= n``."""
    n = rt.shape[1]
    width = min(n, k + SVD_OVERSAMPLE)
    rtt = rt.T.tocsr()

    def gram(q: torch.Tensor) -> torch.Tensor:  # L q, two sparse products
        return torch.from_numpy(rtt @ (rt @ q.float().numpy())).double()

    if width == n:
        q = torch.eye(n, dtype=torch.float64)
    else:
        gen = torch.Generator().manual_seed(int(seed))
        q = _orthonormal(torch.randn(n, width, generator=gen, dtype=torch.float64))
        for _ in range(int(iters)):
            q = _orthonormal(gram(q))
    small = q.T @ gram(q)
    vals, vecs = torch.linalg.eigh((small + small.T) / 2)
    order = torch.argsort(vals, descending=True)[:k]
    return (q @ vecs[:, order]).T.float().contiguous().numpy()


def _orthonormal(a: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of the columns of ``a`` (tall, float64): Cholesky QR twice
    (matrix products: 10x faster than Householder QR on 40,000 x 288), Householder QR where
    the columns are (numerically) dependent."""
    for _ in range(2):
        chol, info = torch.linalg.cholesky_ex(a.T @ a)
        if int(info) != 0:
            return torch.linalg.qr(a)[0]
        eye = torch.eye(len(chol), dtype=a.dtype)
        a = a @ torch.linalg.solve_triangular(chol, eye, upper=False).T
    return a


def ode_step(y: torch.Tensor, a: Op, h: float, solver: str) -> torch.Tensor:
    """One fixed step of ``dy/dt = a(y)`` (``a`` linear and autonomous)."""
    if solver == "euler":
        return y + h * a(y)
    return y + h * a(y + (h / 2) * a(y + (h / 3) * a(y + (h / 4) * a(y))))


class _GraphFilter(Recommender):
    """What GF-CF and BSPM share: the normalised graph, the singular vectors, the dense
    or factored application of ``filter(y, lin, idl)`` (override) to rows ``y``."""

    capabilities = Capabilities(folds_in_history=True, similar_items=True, seeded=True)
    forgetting = "exact"
    #: Rules of the parameters that scoring reads (shared ones; subclasses add theirs).
    _shared_rules: ClassVar[dict[str, ParamRule]] = {
        "factor_dim": int_rule(1, MAX_DIM), "svd_iters": int_rule(0, 100),
        "dense_items": int_rule(0, MAX_COUNT), "seed": SEED_RULE}

    factor_dim: int
    svd_iters: int
    dense_items: int
    seed: int

    def _rules(self) -> dict[str, ParamRule]:
        return {**self._shared_rules, **self.scoring_params}

    def _validate_params(self) -> None:
        check_params(self, self._rules())

    def _filter(self, y: torch.Tensor, lin: Op, idl: Op) -> torch.Tensor:
        raise NotImplementedError

    # -- fit / restore ---------------------------------------------------------------------
    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        self._filters()

    def _forget(self, keep, removed) -> str:
        # The degrees of the users' items change, so every entry of R~ in their columns
        # does, and with it L and the singular vectors: recomputed from the new matrix, with
        # the same seed (the random start of the subspace iteration depends on the items
        # only), which is what a fit without the users computes.
        self._filters()
        return "filters recomputed"

    def _filters(self) -> None:
        """``vt_`` and the scoring operators from ``seen_``."""
        graph = normalized_graph(self.seen_)
        k = min(int(self.factor_dim), self.n_items)
        self.vt_ = torch.from_numpy(top_right_singular_vectors(graph[0], k, int(self.svd_iters),
                                                               int(self.seed)))
        self._prepare(graph)

    def _prepare(self, graph: tuple[sp.csr_matrix, np.ndarray]) -> None:
        """Build the scoring operators from the normalised graph and ``vt_``."""
        rt, di = graph
        sq = np.sqrt(di)
        inv = np.where(di > 0, 1.0 / np.maximum(sq, 1e-300), 0.0)
        vt = self.vt_.double()
        # P = left @ right: (n x k) @ (k x n)
        self.left_ = (torch.from_numpy(inv)[:, None] * vt.T).float().contiguous()
        self.right_ = (vt * torch.from_numpy(sq)[None, :]).float().contiguous()
        self.history_ = binarize(self.seen_).astype(np.float32)
        self.dense_ = self.n_items <= int(self.dense_items) and self.n_users >= self.n_items
        if self.dense_:
            gram = torch.from_numpy((rt.T @ rt).toarray())
            eye = torch.eye(self.n_items)
            left, right = self.left_, self.right_

            def lin(y: torch.Tensor) -> torch.Tensor:
                return gram.clone() if y is eye else y @ gram

            def idl(y: torch.Tensor) -> torch.Tensor:
                return left @ right if y is eye else (y @ left) @ right

            self.matrix_ = self._filter(eye, lin, idl).contiguous()
            self.rt_ = self.rtt_ = None
        else:
            self.matrix_ = None
            self.rt_, self.rtt_ = rt, rt.T.tocsr()

    # -- scoring ---------------------------------------------------------------------------
    # The factored form works on blocks of rows stored as columns (``[n_items, B]``): the
    # sparse products are then scipy's CSR x dense kernel, the fastest here.
    def _lin(self, z: torch.Tensor) -> torch.Tensor:
        """``L z = R~^T (R~ z)``, two sparse products."""
        return torch.from_numpy(self.rtt_ @ (self.rt_ @ z.numpy()))

    def _idl(self, z: torch.Tensor) -> torch.Tensor:
        """``P^T z = D^1/2 V (V^T (D^-1/2 z))``."""
        return self.right_.T @ (self.left_.T @ z)

    def _apply(self, x: sp.csr_matrix) -> torch.Tensor:
        """The filter applied to the rows of ``x`` (``[B, n_items]`` sparse)."""
        if self.dense_:
            return torch.from_numpy(np.asarray(x @ self.matrix_.numpy(), dtype=np.float32))
        z = torch.from_numpy(np.asarray(x.T.toarray(), dtype=np.float32))
        return self._filter(z, self._lin, self._idl).T.contiguous()

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self._apply(self.history_[users.numpy()])

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        return self._apply(history_row(items, None, self.n_items)).ravel()

    def _item_similarity(self, items: torch.Tensor) -> torch.Tensor:
        # Row i of the filter: what a history of item i alone scores.
        idx = items.numpy()
        one = sp.csr_matrix((np.ones(len(idx), np.float32), idx, np.arange(len(idx) + 1)),
                            shape=(len(idx), self.n_items))
        return self._apply(one)

    # -- persistence -----------------------------------------------------------------------
    def _state(self):
        return {"vt": self.vt_}

    def _extra(self) -> dict[str, Any]:
        return {"rank": int(self.vt_.shape[0])}

    def _state_spec(self, extra) -> StateSpec:
        rank = extra_value(extra, "rank", int_rule(1, min(MAX_DIM, self.n_items)))
        return {"vt": Array((rank, self.n_items))}

    def _restore(self, state, extra):
        self.vt_ = state["vt"].contiguous()
        self._prepare(normalized_graph(self.seen_))


class GFCF(_GraphFilter):
    """GF-CF: the linear filter plus ``alpha`` times the ideal low-pass filter.

    Parameters
    ----------
    factor_dim:
        Singular vectors of the ideal low-pass filter (``k``).
    alpha:
        Weight of the ideal low-pass filter (0: the linear filter alone).

    The defaults (96, 2.0) were chosen across four datasets of different shapes
    (``benchmarks/bench_defaults.py``; docs/models.md, "Defaults across datasets").
    svd_iters:
        Passes of the randomized subspace iteration (more: closer to the exact top-``k``).
    dense_items:
        Largest catalogue whose filter is built as one dense item-item matrix (faster for
        many users; ``4 n_items^2`` bytes); larger ones use the factored form.
    seed:
        Seeds the randomized SVD.
    """

    name = "gfcf"
    tuning_space = {"factor_dim": ("logint", 16, 1024), "alpha": ("float", 0.0, 2.0)}
    scoring_params = {"alpha": number_rule(0.0, 1e6)}

    def __init__(self, factor_dim: int = 96, alpha: float = 2.0, svd_iters: int = 8,
                 dense_items: int = 8192, seed: int = 0) -> None:
        self.factor_dim = factor_dim
        self.alpha = alpha
        self.svd_iters = svd_iters
        self.dense_items = dense_items
        self.seed = seed

    def _filter(self, y: torch.Tensor, lin: Op, idl: Op) -> torch.Tensor:
        out = lin(y)
        if float(self.alpha):
            out = out + float(self.alpha) * idl(y)
        return out


class BSPM(_GraphFilter):
    """BSPM: blur with the linear filter, merge the ideal low-pass filter, sharpen.

    Parameters
    ----------
    factor_dim:
        Singular vectors of the ideal low-pass filter.
    idl_beta:
        Weight of the ideal low-pass filter (0: none).
    blur_time, blur_steps, blur_solver:
        ``T_b``, ``K_b`` and the solver of the blurring ODE ``dr/dt = r (L - I)``.
    sharpen_time, sharpen_steps, sharpen_solver:
        ``T_s``, ``K_s`` and the solver of the sharpening ODE ``dr/dt = -r L``
        (``sharpen_time=0``: no sharpening).
    early_merge:
        Sharpen the blurred row plus the ideal filter's output (the reference code's
        ``final_sharpening=True``); false: sharpen the blurred row and add the ideal
        filter's output after.
    point_combination:
        Score with the mean of the states at every step of both ODEs (the reference code's
        ``t_point_combination``) instead of the last one.
    svd_iters, dense_items, seed:
        As for ``gfcf``.
    """

    name = "bspm"
    tuning_space = {"factor_dim": ("logint", 16, 1024), "idl_beta": ("float", 0.0, 2.0),
                    "sharpen_time": ("float", 0.0, 3.0)}
    scoring_params = {
        "idl_beta": number_rule(0.0, 1e6),
        "blur_time": number_rule(0.0, MAX_TIME), "blur_steps": int_rule(1, MAX_STEPS),
        "blur_solver": SOLVER_RULE,
        "sharpen_time": number_rule(0.0, MAX_TIME), "sharpen_steps": int_rule(1, MAX_STEPS),
        "sharpen_solver": SOLVER_RULE,
        "early_merge": BOOL_RULE, "point_combination": BOOL_RULE}

    def __init__(self, factor_dim: int = 128, idl_beta: float = 0.1, blur_time: float = 1.0,
                 blur_steps: int = 1, blur_solver: str = "euler", sharpen_time: float = 0.8,
                 sharpen_steps: int = 1, sharpen_solver: str = "euler",
                 early_merge: bool = True, point_combination: bool = False,
                 svd_iters: int = 8, dense_items: int = 8192, seed: int = 0) -> None:
        self.factor_dim = factor_dim
        self.idl_beta = idl_beta
        self.blur_time = blur_time
        self.blur_steps = blur_steps
        self.blur_solver = blur_solver
        self.sharpen_time = sharpen_time
        self.sharpen_steps = sharpen_steps
        self.sharpen_solver = sharpen_solver
        self.early_merge = early_merge
        self.point_combination = point_combination
        self.svd_iters = svd_iters
        self.dense_items = dense_items
        self.seed = seed

    def _filter(self, y: torch.Tensor, lin: Op, idl: Op) -> torch.Tensor:
        beta = float(self.idl_beta)
        ideal = beta * idl(y) if beta else None
        total: torch.Tensor | float = 0.0  # the sum of the states (point_combination)

        def blur(z: torch.Tensor) -> torch.Tensor:
            return lin(z) - z

        def sharpen(z: torch.Tensor) -> torch.Tensor:
            return -lin(z)

        for odefunc, time, steps, solver in (
                (blur, self.blur_time, self.blur_steps, self.blur_solver),
                (sharpen, self.sharpen_time, self.sharpen_steps, self.sharpen_solver)):
            if odefunc is sharpen and ideal is not None and self.early_merge:
                y = y + ideal
            h = float(time) / int(steps)
            for _ in range(int(steps)):
                if h:
                    y = ode_step(y, odefunc, h, solver)
                if self.point_combination:
                    total = total + y
        if self.point_combination:
            y = total / (int(self.blur_steps) + int(self.sharpen_steps))
        if ideal is not None and not self.early_merge:
            y = y + ideal
        return y
