"""Implicit-feedback alternating least squares (Hu, Koren & Volinsky, ICDM 2008).

Every (user, item) cell is a preference ``p_ui = 1`` if the user interacted with the item
and ``0`` otherwise, weighted by a confidence ``c_ui = 1 + alpha * r_ui`` (``r_ui`` the
event value, 1 with ``binary=True``; unobserved cells have ``c_ui = 1``). The model
minimises, over user factors ``x_u`` and item factors ``y_i`` (``embedding_dim`` each)::

    L = sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + sum_u lam_u |x_u|^2 + sum_i lam_i |y_i|^2

over *all* cells, observed or not. With the item factors ``Y`` fixed, the loss is a
quadratic in each ``x_u`` whose minimiser solves the normal equations::

    A_u x_u = b_u,   A_u = Y^T Y + Y^T (C_u - I) Y + lam_u I,   b_u = Y^T C_u p_u

``Y^T Y`` is shared by all users, and ``C_u - I`` is non-zero only on the user's items, so
``A_u x`` costs ``O(n_u d)`` on top of the shared ``d x d`` product; the item step is the
same with the roles swapped. ALS alternates the two steps for ``epochs`` iterations.

**Conjugate gradient** (``solver="cg"``, the default; Takács, Pilászy & Tikk, RecSys
2011, as in the ``implicit`` library): each half-step runs ``cg_steps`` CG iterations for
all users at once, warm-started from the previous factors, with per-row step sizes. The
product ``A X`` for every user at once is::

    A X = X (Y^T Y) + lam * X + W Y,    W = (C - 1) o (X Y^T)    (o: at R's non-zeros)

``W`` is an SDDMM (``torch.sparse.sampled_addmm``: ``x_u . y_i`` only at the stored cells,
scaled by ``c_ui - 1``), and ``W Y`` a CSR x dense product, computed with
``torch.nn.functional.embedding_bag`` (per row, the weighted sum of the item rows: twice
as fast as ``torch.sparse.mm`` on CPU). The initial residual ``b - A X`` is one such
product with weights ``c_ui - (c_ui - 1) x_u . y_i`` (it folds ``b = C Y`` in). So a
half-step costs ``cg_steps + 1`` SDDMM / SpMM pairs, ``O(nnz d + n d^2)``, and no Python
loop runs over users or items. Each CG step lowers every user's quadratic, so the loss
decreases monotonically even with few steps.

**Cholesky** (``solver="cholesky"``): the exact solve. Users are sorted by history length
and processed in memory-bounded blocks; each block builds ``A_u`` with one batched matmul
over zero-padded item lists and solves with ``torch.linalg.cholesky`` /
``cholesky_solve``. It costs ``O(n_u d^2 + d^3)`` per user: slower, for checks and small
data.

**Frequency-scaled regularisation**: ``lam_u = reg * w_u^nu`` (``nu = reg_exponent``; the
same for items over their column). By default (``reg_weight="observed"``) ``w_u`` is the
confidence of the user's *observed* cells, ``n_u + alpha * sum_i r_ui``: the penalty grows
with the data behind a vector and with nothing else, so the same ``reg`` suits a 3,000-item
and a 40,000-item catalogue. ``reg_weight="total"`` is the form of Rendle et al. (RecSys
2022, "Revisiting the performance of iALS on item recommendation benchmarks"),
``w_u = sum_i c_ui = n_items + alpha * sum_i r_ui`` over every cell: there the catalogue
size enters every user's penalty, and a default right for 3,700 items over-regularised a
sparse 41,000-item log into popularity (``benchmarks/bench_als_reg.py``: Recall@20 0.078
against 0.441 with the observed weight). With ``nu = 0`` every row gets ``reg``.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, DataError, ModelError
from recforge.models.artifact import Array, StateSpec
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.params import (
    BOOL_RULE,
    DEVICE_RULE,
    MAX_DIM,
    MAX_EPOCHS,
    MAX_NUMBER,
    SEED_RULE,
    check_params,
    choice_rule,
    int_rule,
    number_rule,
)

log = logging.getLogger(__name__)

__all__ = ["ALS"]

#: Floats of padded item vectors built at once by the Cholesky solver (bounds memory).
CHOLESKY_BLOCK_ELEMENTS = 1 << 24
#: Most conjugate-gradient steps per half-step (a few are the point of CG; the exact
#: solve is solver="cholesky").
MAX_CG_STEPS = 1000


def row_weight(count: np.ndarray, total: np.ndarray, n_cols: int, alpha: float,
               reg_weight: str) -> np.ndarray:
    """The weight ``w`` of frequency-scaled regularisation for rows with ``count`` events
    whose values sum to ``total``: ``count + alpha * total`` (the observed cells'
    confidences, ``"observed"``) or ``n_cols + alpha * total`` (every cell's, ``"total"``),
    at least 1 so that an empty row keeps a positive-definite system."""
    if reg_weight == "observed":
        weight = count + alpha * total
    else:
        weight = n_cols + alpha * total
    return np.maximum(np.asarray(weight, dtype=np.float64), 1.0)


class _Side:
    """One orientation of the training matrix (rows = the side being solved), on device.

    ``crow`` / ``col`` are the CSR indices (int64), ``conf`` the confidences
    ``c = 1 + alpha r`` and ``conf1`` the ``c - 1 = alpha r`` values in CSR order;
    ``conf1_scalar`` is ``alpha`` when every ``r`` is 1 (then the SDDMM scales for free);
    ``reg`` is a float, or a per-row tensor under frequency scaling.
    """

    def __init__(self, mat: sp.csr_matrix, alpha: float, binary: bool, reg: float,
                 reg_exponent: float, reg_weight: str, device: torch.device) -> None:
        mat = mat.tocsr()
        mat.sort_indices()
        self.n_rows, self.n_cols = mat.shape
        values = np.ones(mat.nnz, np.float32) if binary else mat.data.astype(np.float32)
        self.crow = torch.from_numpy(mat.indptr.astype(np.int64)).to(device)
        self.col = torch.from_numpy(mat.indices.astype(np.int64)).to(device)
        r = torch.from_numpy(values).to(device)
        with warnings.catch_warnings():  # "sparse CSR support is in beta" (torch warns once)
            warnings.simplefilter("ignore", UserWarning)
            # Scratch CSR that every SDDMM writes its values into (out=itself: no copy of
            # the indices and values per call, as the out-of-place form makes).
            self._sddmm = torch.sparse_csr_tensor(self.crow, self.col, torch.ones_like(r),
                                                  size=mat.shape, check_invariants=False)
        self.conf = 1.0 + alpha * r
        self.conf1 = alpha * r
        self.conf1_scalar: float | None = float(alpha) if binary else None
        # Per-row regularisation: reg * (the row's confidence weight)^nu.
        if reg_exponent == 0:
            self.reg: torch.Tensor | float = float(reg)
        else:
            row_of_cell = np.repeat(np.arange(self.n_rows), np.diff(mat.indptr))
            weight = row_weight(np.diff(mat.indptr), np.bincount(
                row_of_cell, weights=values, minlength=self.n_rows), self.n_cols, alpha,
                reg_weight)
            self.reg = torch.from_numpy((reg * weight ** reg_exponent).astype(np.float32)
                                        ).to(device)


    def dots(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``scale * x_u . y_i`` at every stored cell, in CSR order (an SDDMM).

        The result is scratch memory, overwritten by the next call: use it at once.
        """
        torch.sparse.sampled_addmm(self._sddmm, x, y.T, beta=0.0, alpha=scale,
                                   out=self._sddmm)
        return self._sddmm.values()

    def spmm(self, weights: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``W Y`` for the CSR matrix ``W`` with this pattern and values ``weights``.

        ``embedding_bag`` (a weighted sum of the rows ``y_i`` per CSR row) computes the
        same product as ``torch.sparse.mm`` in half the time on CPU (9 ms against 18 ms on
        ml-1m at 128 dimensions, one thread).
        """
        return torch.nn.functional.embedding_bag(
            self.col, y, self.crow, mode="sum", per_sample_weights=weights,
            include_last_offset=True)

    def gram_weights(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(c - 1) x_u . y_i`` per stored cell: ``A X = X G + lam X + W Y`` with these."""
        if self.conf1_scalar is not None:
            return self.dots(x, y, self.conf1_scalar)
        return self.dots(x, y).mul_(self.conf1)

    def residual_weights(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``c - (c - 1) x_u . y_i`` per stored cell: ``b - A X = W Y - X G - lam X``."""
        if self.conf1_scalar is not None:
            return self.dots(x, y, -self.conf1_scalar).add_(self.conf)
        return torch.addcmul(self.conf, self.conf1, self.dots(x, y), value=-1.0)

    def gram_plus_reg(self, y: torch.Tensor) -> torch.Tensor:
        """``Y^T Y``, plus ``reg I`` when the regularisation is the same for every row."""
        gram = y.T @ y
        if not isinstance(self.reg, torch.Tensor):
            gram.diagonal().add_(self.reg)
        return gram

    def add_dense_part(self, out: torch.Tensor, x: torch.Tensor, gram: torch.Tensor,
                       sign: float = 1.0) -> torch.Tensor:
        """``out += sign (X (Y^T Y) + lam X)`` in place (``gram`` from :meth:`gram_plus_reg`):
        the part of ``A X`` shared by every row."""
        torch.addmm(out, x, gram, alpha=sign, out=out)
        if isinstance(self.reg, torch.Tensor):
            out.addcmul_(self.reg.unsqueeze(1), x, value=sign)
        return out


def _cg_step(side: _Side, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """``steps`` conjugate-gradient iterations on ``A_u x_u = b_u`` for every row at once,
    warm-started from ``x`` (updated in place).

    Written with few, fused, in-place operations: each torch call is one parallel region,
    and on a loaded machine every region can wait for a descheduled thread.
    """
    gram = side.gram_plus_reg(y)
    # r = b - A x = (C - (C - I) o XY^T) Y - (G + lam) X
    r = side.add_dense_part(side.spmm(side.residual_weights(x, y), y), x, gram, -1.0)
    p = r.clone()
    rs = torch.linalg.vecdot(r, r)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    for step in range(steps):
        ap = side.add_dense_part(side.spmm(side.gram_weights(p, y), y), p, gram)
        pap = torch.linalg.vecdot(p, ap)
        a = torch.where(pap > 0, rs / pap.clamp_min(1e-30), zero).unsqueeze(1)
        x.addcmul_(a, p)
        if step == steps - 1:
            break
        r.addcmul_(a, ap, value=-1.0)
        rs_new = torch.linalg.vecdot(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), zero).unsqueeze(1)
        torch.addcmul(r, beta, p, out=p)  # p = r + beta p
        rs = rs_new


def _cholesky_step(side: _Side, x: torch.Tensor, y: torch.Tensor) -> None:
    """Exact solve of ``A_u x_u = b_u`` for every row (written into ``x``), in blocks of
    rows of similar history length (padded item lists, one batched matmul per block)."""
    d = y.shape[1]
    dev = x.device
    gram = side.gram_plus_reg(y)
    crow = side.crow.cpu().numpy()
    lengths = np.diff(crow)
    order = np.argsort(lengths, kind="stable")
    b_all = side.spmm(side.conf, y)  # b_u = sum_i c_ui y_i (p_ui = 1 where stored)
    n = len(order)
    # Rows sorted by length, so a block's padded width is its last row's length. A block
    # holds [B, width, d] item vectors and [B, d, d] matrices, both within the budget.
    cost_per_row = np.maximum(lengths[order], d) * d
    max_rows = max(1, CHOLESKY_BLOCK_ELEMENTS // (d * d))
    start = 0
    while start < n:
        end = min(n, start + max_rows)
        cost = np.arange(1, end - start + 1) * cost_per_row[start:end]
        stop = start + max(1, int(np.searchsorted(cost, CHOLESKY_BLOCK_ELEMENTS, "right")))
        rows = order[start:stop]
        rows_t = torch.from_numpy(rows).to(dev)
        lens = lengths[rows]
        width = int(lens.max())
        a = gram.expand(len(rows), d, d).clone()
        if width:
            # Cell k of row b is crow[rows[b]] + k; cells past the row's end get weight 0.
            k = np.arange(width)
            valid = torch.from_numpy(k[None, :] < lens[:, None]).to(dev)
            cell = torch.from_numpy(np.minimum(crow[rows][:, None] + k[None, :],
                                               len(side.col) - 1)).to(dev)
            yb = y[side.col[cell]]  # [B, width, d]
            w = torch.where(valid, side.conf1[cell], torch.zeros((), device=dev))
            a.baddbmm_((yb * w.unsqueeze(2)).transpose(1, 2), yb)
        if isinstance(side.reg, torch.Tensor):
            a.diagonal(dim1=1, dim2=2).add_(side.reg[rows_t].unsqueeze(1))
        chol, info = torch.linalg.cholesky_ex(a)
        if bool((info != 0).any()):
            raise ModelError("als: the normal equations are not positive definite; "
                             "increase reg")
        x[rows_t] = torch.cholesky_solve(b_all[rows_t].unsqueeze(2), chol).squeeze(2)
        start = stop


def implicit_rows(mat: sp.csr_matrix, factors: torch.Tensor, alpha: float, reg: float
                  ) -> torch.Tensor:
    """Every row's exact implicit least-squares vector against fixed column factors ``Y``
    (binary ``mat``, rows x columns): ``(Y'Y + alpha Y_r'Y_r + reg I) x_r = (1 + alpha)
    Y_r' 1``, the half-step ALS makes for every user, solved in blocks of rows
    (:func:`_cholesky_step`); a row without events gets the zero vector."""
    y = factors.detach().float()
    side = _Side(mat, float(alpha), True, float(reg), 0.0, "observed", y.device)
    x = torch.zeros(mat.shape[0], y.shape[1], device=y.device)
    _cholesky_step(side, x, y)
    return x


def fold_in_implicit(item_factors: torch.Tensor, items: np.ndarray, weights: np.ndarray | None,
                     alpha: float, reg: float) -> torch.Tensor:
    """A user vector for an unseen history against fixed item factors ``Y`` (Hu et al.
    2008): ``(Y'Y + alpha Y_h' R Y_h + reg I) x = Y_h' (1 + alpha r)`` with ``r`` the
    history's weights (ones by default): the weighted least-squares solve ALS makes for
    every user, here for one."""
    y = item_factors.float()
    d = y.shape[1]
    w = torch.ones(len(items)) if weights is None else torch.from_numpy(
        np.asarray(weights, np.float32))
    w = w.to(y.device)
    yh = y[torch.from_numpy(items).to(y.device)]
    a = y.T @ y + alpha * (yh.T * w) @ yh + reg * torch.eye(d, device=y.device)
    b = yh.T @ (1.0 + alpha * w)
    return torch.linalg.solve(a.double(), b.double()).float()


class ALS(Recommender):
    """Implicit-feedback matrix factorisation by alternating least squares.

    Scores are ``x_u . y_i``; :meth:`similar_items` uses the cosine of item factors.
    The defaults were chosen across six datasets of different shapes (ml-100k,
    ml-latest-small, ml-1m-implicit's validation split and three generated logs: 30k x 40k
    items at 0.08 % density with genre clusters or with 1,000 small clusters, and 60k users
    x 5k items), for the best mean NDCG@20 relative to the best setting measured on each:
    ``benchmarks/bench_als_reg.py`` and docs/models.md have the table.

    Parameters
    ----------
    embedding_dim:
        Number of latent factors ``d`` (typical 32 to 512). Time grows about linearly in
        ``d`` with CG, cubically with Cholesky. Beyond 128 gains are small on MovieLens.
    epochs:
        ALS iterations; each solves users then items (typical 5 to 30).
    reg:
        L2 penalty. With the default ``reg_exponent=1`` it multiplies each row's observed
        confidence weight (typical 0.02 to 0.2; too large a value collapses the scores to
        popularity, too small overfits). With ``reg_exponent=0`` it is the plain
        ``lambda`` of every factor vector (typical 0.01 to 200, growing with the data).
    alpha:
        Confidence slope: ``c_ui = 1 + alpha * r_ui`` for observed cells, 1 elsewhere
        (typical 1 to 50). Larger values trust the observed events more than the zeros.
    solver:
        ``"cg"`` (conjugate gradient, warm-started; fast, the default) or ``"cholesky"``
        (exact per-row solve; about 25 times slower at 128 factors, for checks and small
        data).
    cg_steps:
        Conjugate-gradient iterations per half-step (typical 2 to 6; ignored by
        ``"cholesky"``). Each costs one SDDMM and one sparse x dense product.
    binary:
        Use 1 for every event (implicit feedback); with ``False`` the event values (play
        counts, ratings, which must be >= 0) enter the confidence.
    reg_exponent:
        ``nu`` of frequency-scaled regularisation (Rendle et al. 2022; typical 0 to 1, at
        most 2): ``lam_u = reg * w_u^nu`` with ``w_u`` as ``reg_weight`` says (items alike
        over their column). 0 gives every row the same ``reg``; 1 keeps the best ``reg``
        nearly the same across dataset sizes.
    reg_weight:
        ``"observed"`` (default): ``w_u`` counts the confidences of the user's observed
        cells only, so the penalty does not depend on the catalogue size. ``"total"``:
        every cell's, ``n_items + alpha * sum_i r_ui`` (Rendle et al. 2022; recforge's
        default until December 2026, and what artefacts saved before this parameter existed
        load with, at their saved ``reg``).
    seed:
        Seed of the factor initialisation (normal, std ``0.1 / sqrt(d)``); with the same
        seed two fits on CPU give identical factors.
    device:
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    """

    name = "als"
    #: artefacts saved before ``reg_weight`` existed were trained with the total weight
    saved_before = {"reg_weight": "total"}
    capabilities = Capabilities(folds_in_history=True, similar_items=True, seeded=True)
    #: forget_users trains again from the seed on the remaining matrix (see _forget)
    forgetting = "exact"
    tuning_space = {"embedding_dim": ("cat", [32, 64, 128, 256]), "reg": ("log", 0.01, 0.5),
                    "alpha": ("log", 1.0, 50.0), "epochs": ("int", 5, 30)}

    def __init__(self, embedding_dim: int = 128, epochs: int = 15, reg: float = 0.07,
                 alpha: float = 10.0, solver: str = "cg", cg_steps: int = 3,
                 binary: bool = True, reg_exponent: float = 1.0,
                 reg_weight: str = "observed", seed: int = 0,
                 device: str = "auto") -> None:
        self.embedding_dim = embedding_dim
        self.epochs = epochs
        self.reg = reg
        self.alpha = alpha
        self.solver = solver
        self.cg_steps = cg_steps
        self.binary = binary
        self.reg_exponent = reg_exponent
        self.reg_weight = reg_weight
        self.seed = seed
        self.device = device

    # ----------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        check_params(self, {
            "embedding_dim": int_rule(1, MAX_DIM), "epochs": int_rule(1, MAX_EPOCHS),
            "reg": number_rule(0, MAX_NUMBER), "alpha": number_rule(0, MAX_NUMBER),
            "solver": choice_rule("cg", "cholesky"), "cg_steps": int_rule(1, MAX_CG_STEPS),
            "binary": BOOL_RULE, "reg_exponent": number_rule(0, 2),
            "reg_weight": choice_rule("observed", "total"), "seed": SEED_RULE,
            "device": DEVICE_RULE})
        self._resolve_device()

    def _resolve_device(self) -> torch.device:
        dev = self.device
        if dev == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if not isinstance(dev, str) or not (dev == "cpu" or dev == "cuda"
                                            or (dev.startswith("cuda:")
                                                and dev[5:].isdigit())):
            raise ConfigError(f"als: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got "
                              f"{dev!r}")
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"als: device {dev!r} requested but CUDA is not available")
        return torch.device(dev)

    # ----------------------------------------------------------------------------------
    def _sides(self, device: torch.device) -> tuple[_Side, _Side]:
        mat = self.seen_.tocsr().astype(np.float32)
        if not self.binary and mat.nnz and float(mat.data.min()) < 0:
            raise DataError("als: event values must be >= 0 to act as confidences "
                            "(or use binary=True)")
        args = (float(self.alpha), bool(self.binary), float(self.reg),
                float(self.reg_exponent), str(self.reg_weight), device)
        return _Side(mat, *args), _Side(mat.T.tocsr(), *args)

    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        self._train_factors()

    def _forget(self, keep, removed) -> str:
        # Exact means "the model trained without the users", and for ALS only training
        # again gives that: the objective is not convex, every user's factors shaped the
        # item factors in every iteration, and the seeded start of the item factors is
        # drawn after the user factors (it depends on the number of users). Re-solving the
        # item factors against the other users' fixed factors would remove the users' last
        # contribution only. So: the same iterations from the same seed on the remaining
        # matrix, bit for bit a fit without them on the CPU (one fit's time).
        self._train_factors()
        return "retrained from the seed on the remaining matrix"

    def _train_factors(self) -> None:
        """``user_factors_`` and ``item_factors_`` from ``seen_``."""
        self.device_ = self._resolve_device()
        dev = self.device_
        users, items = self._sides(dev)
        d = int(self.embedding_dim)
        gen = torch.Generator().manual_seed(int(self.seed))
        std = 0.1 / math.sqrt(d)
        x = (torch.randn(users.n_rows, d, generator=gen) * std).to(dev)
        y = (torch.randn(items.n_rows, d, generator=gen) * std).to(dev)
        for epoch in range(int(self.epochs)):
            if self.solver == "cg":
                _cg_step(users, x, y, int(self.cg_steps))
                _cg_step(items, y, x, int(self.cg_steps))
            else:
                _cholesky_step(users, x, y)
                _cholesky_step(items, y, x)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("als epoch %d: loss %.6g", epoch + 1, self._loss(users, items, x, y))
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            # huge alpha or reg (float32 allows up to 3.4e38) overflow the normal equations
            raise ModelError(f"als: training produced non-finite factors (alpha={self.alpha}, "
                             f"reg={self.reg}); smaller alpha and reg keep the normal "
                             "equations within float32")
        self.user_factors_ = x
        self.item_factors_ = y

    def _loss(self, users: _Side, items: _Side, x: torch.Tensor, y: torch.Tensor) -> float:
        """The objective ``L`` of the module docstring for factors ``x``, ``y``."""
        # sum over all cells of s^2 = tr(X^T X Y^T Y); observed cells are corrected.
        total = torch.sum((x.T @ x) * (y.T @ y), dtype=torch.float64)
        s = users.dots(x, y).double()
        conf = users.conf.double()
        total = total - (s * s).sum() + (conf * (1.0 - s) ** 2).sum()
        for side, f in ((users, x), (items, y)):
            sq = (f.double() ** 2).sum(1)
            total = total + (side.reg.double() * sq).sum() if isinstance(
                side.reg, torch.Tensor) else total + side.reg * sq.sum()
        return float(total)

    def loss(self) -> float:
        """The training objective (weighted squared error + regularisation) of the fitted
        factors on the training matrix."""
        self.check_fitted()
        users, items = self._sides(self.device_)
        return self._loss(users, items, self.user_factors_, self.item_factors_)

    # ----------------------------------------------------------------------------------
    def _score(self, users: torch.Tensor) -> torch.Tensor:
        u = self.user_factors_[users.to(self.device_)]
        return (u @ self.item_factors_.T).cpu()


    def dot_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_factors_.cpu(), self.item_factors_.cpu()

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        """Fold-in: the user half-step of ALS for this history against the item factors."""
        w = (np.ones(len(items), np.float32) if self.binary or values is None
             else values.astype(np.float32))
        if self.binary is False and (w < 0).any():
            raise DataError("als with binary=False needs history values >= 0")
        reg = float(self.reg)
        if float(self.reg_exponent) != 0:
            weight = row_weight(np.array([len(items)]), np.array([float(w.sum())]),
                                self.n_items, float(self.alpha), str(self.reg_weight))
            reg *= float(weight[0]) ** float(self.reg_exponent)
        x = fold_in_implicit(self.item_factors_, items, w, float(self.alpha), reg)
        return (self.item_factors_.float() @ x).cpu()

    def _item_embeddings(self) -> torch.Tensor:
        return self.item_factors_.cpu()

    def _state(self) -> dict[str, torch.Tensor]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    #: the fold-in reads reg, alpha and reg_exponent; the factors have embedding_dim columns
    scoring_params = {"embedding_dim": int_rule(1), "reg": number_rule(0),
                      "alpha": number_rule(0), "reg_exponent": number_rule(0, 2),
                      "reg_weight": choice_rule("observed", "total")}

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        d = int(self.embedding_dim)
        return {"user_factors": Array((self.n_users, d)),
                "item_factors": Array((self.n_items, d))}

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.device_ = self._resolve_device()
        self.user_factors_ = state["user_factors"].to(self.device_)
        self.item_factors_ = state["item_factors"].to(self.device_)
