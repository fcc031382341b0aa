"""Matrix factorization: biased MF for ratings (``mf``) and BPR-MF for implicit feedback
(``bpr``), both trained on the shared :class:`~recforge.training.trainer.Trainer`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from recforge.data.interactions import Interactions
from recforge.errors import DataError
from recforge.models.als import implicit_rows
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.gradient import GradientRecommender, SampledGradientRecommender
from recforge.models.params import (
    MAX_NUMBER,
    RANGE_RULE,
    extra_value,
    number_rule,
    optional_rule,
)
from recforge.training import losses
from recforge.training.embedding import Embedding


def setup_rating_fit(model: GradientRecommender) -> None:
    """What a rating model on the trainer sets before its first epoch (``mf``, ``svdpp``):
    ``mean_`` and ``rating_range_`` from the training statistics (over every rank's events
    when the data is sharded), and the per-occurrence L2 weights of users and items: each
    occurrence in a batch carries n^(e-1), so that over an epoch a row's L2 weight is
    ``reg * n^e`` (e = ``reg_exponent``; 1: the usual per-rating weight; 0: one weight per
    row, the MAP estimate under a Gaussian prior)."""
    stats = model._stats
    model.mean_ = stats.value_mean
    model.rating_range_ = (stats.value_min, stats.value_max)
    e = float(model.reg_exponent) - 1.0
    uc = np.maximum(stats.user_counts, 1).astype(np.float64)
    ic = np.maximum(stats.item_counts, 1).astype(np.float64)
    model._user_reg_w = torch.from_numpy((uc ** e).astype(np.float32))
    model._item_reg_w = torch.from_numpy((ic ** e).astype(np.float32))

class _BiasedMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, mean: float,
                 generator: torch.Generator, init_std: float):
        super().__init__()
        self.user = Embedding(n_users, dim)
        self.item = Embedding(n_items, dim)
        self.user_bias = Embedding(n_users, 1)
        self.item_bias = Embedding(n_items, 1)
        self.register_buffer("mean", torch.tensor(float(mean)))
        with torch.no_grad():
            self.user.weight.normal_(0.0, init_std, generator=generator)
            self.item.weight.normal_(0.0, init_std, generator=generator)
            self.user_bias.weight.zero_()
            self.item_bias.weight.zero_()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted ratings of the pairs (training uses :class:`_BiasedMFLoss`)."""
        bu, bi = self.user_bias(users).squeeze(-1), self.item_bias(items).squeeze(-1)
        return self.mean + bu + bi + (self.user(users) * self.item(items)).sum(-1)

    def all_items(self, users: torch.Tensor) -> torch.Tensor:
        return (self.mean + self.user_bias(users) + self.item_bias.weight.T
                + self.user(users) @ self.item.weight.T)


class _BiasedMFLoss(torch.autograd.Function):
    """:class:`MF`'s loss with its gradient written out, the item side read from its
    tables::

        pred = mean + b_u + b_i + p_u . q_i
        loss = mean((pred - y)^2)
               + 0.5 / B * (reg * sum(w_u |p_u|^2 + w_i |q_i|^2)
                            + bias_reg * sum(w_u b_u^2 + w_i b_i^2))

    ``p`` and ``bu`` are the batch's user rows (looked up by the caller, so that a DDP
    rank's compact user tables map them); ``q_table`` / ``bias_table`` are the item tables,
    ``w_item`` the per-item L2 weights. The forward pass and backward pass take about half
    the passes over the batch's rows of autograd's graph of the same expression, and each
    item table's gradient starts from its L2 share, ``count_r * w_r * row_r`` times a
    constant (one pass over the table, instead of zero-filling it) before the error terms
    are added into it with one ``index_add_``.
    """

    @staticmethod
    def forward(ctx, p: torch.Tensor, bu: torch.Tensor, q_table: torch.Tensor,  # type: ignore[override]
                bias_table: torch.Tensor, items: torch.Tensor, target: torch.Tensor,
                w_user: torch.Tensor, w_item: torch.Tensor, mean: torch.Tensor, reg: float,
                bias_reg: float) -> torch.Tensor:
        q = q_table.index_select(0, items)
        bi = bias_table.index_select(0, items).squeeze(1)
        wi = w_item.index_select(0, items)
        err = (p * q).sum(-1) + bu + bi + mean - target
        n = len(items)
        factors = torch.dot(w_user, (p * p).sum(-1)) + torch.dot(wi, (q * q).sum(-1))
        biases = torch.dot(w_user, bu * bu) + torch.dot(wi, bi * bi)
        loss = torch.dot(err, err) / n + (0.5 / n) * (reg * factors + bias_reg * biases)
        ctx.save_for_backward(p, bu, q, err, w_user, items, q_table, bias_table, w_item)
        ctx.reg, ctx.bias_reg = reg, bias_reg
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        p, bu, q, err, w_user, items, q_table, bias_table, w_item = ctx.saved_tensors
        n = len(items)
        g_err = err * (2.0 * grad / n)
        c, cb = grad * (ctx.reg / n), grad * (ctx.bias_reg / n)
        g_p = g_bu = g_q = g_bias = None
        if ctx.needs_input_grad[0]:
            g_p = p * (w_user * c).unsqueeze(1)
            g_p.addcmul_(q, g_err.unsqueeze(1))
        if ctx.needs_input_grad[1]:
            g_bu = g_err + (cb * w_user) * bu
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            weight = torch.bincount(items, minlength=len(w_item)).to(w_item.dtype).mul_(w_item)
            if ctx.needs_input_grad[2]:
                g_q = q_table * (weight * c).unsqueeze(1)
                g_q.index_add_(0, items, p * g_err.unsqueeze(1))
            if ctx.needs_input_grad[3]:
                g_bias = bias_table * (weight * cb).unsqueeze(1)
                g_bias.index_add_(0, items, g_err.unsqueeze(1))
        return g_p, g_bu, g_q, g_bias, None, None, None, None, None, None, None


class MF(GradientRecommender):
    """Biased matrix factorization for explicit ratings (Koren, Bell & Volinsky 2009).

    ``r_ui ~ mu + b_u + b_i + p_u . q_i``, trained with mean squared error and L2 on the
    batch's factors and biases. :meth:`predict` clips to the training rating range.

    Parameters (typical ranges in brackets)
    ----------
    embedding_dim: factors per user / item [16, 256].
    epochs: passes over the ratings [10, 200].
    batch_size: ratings per step [256, 8192].
    learning_rate: optimizer step size [1e-4, 1e-1].
    reg: L2 weight on the factors [0, 10]; per user it totals ``reg * n_u^reg_exponent``
        over an epoch, where ``n_u`` is the user's number of ratings (same for items).
    reg_exponent: how the L2 weight grows with a user's (item's) rating count [0, 1]:
        1 is the usual per-rating weight, 0 one weight per user, 0.5 (default) in between,
        which regularizes rare users and items more relative to their data.
    bias_reg: L2 weight on the biases (``None``: same as ``reg``) [0, 1].
    optimizer, weight_decay, lr_schedule: see :class:`~recforge.training.trainer.Trainer`.
    valid_metric, patience, eval_every: early stopping on validation data (``rmse``).
    init_std: standard deviation of the initial factors.
    device, seed.

    The defaults (Adagrad, lr 0.05, reg 2.5, reg_exponent 0.5, bias_reg 0.01) were chosen
    on a 10% validation split of the ML-100K training ratings; see ``docs/models.md``.
    """

    name = "mf"
    objective = "rating"
    capabilities = Capabilities(rates=True, learns_ratings=True, folds_in_history=True,
                                similar_items=True, gradient=True, sharded_data=True,
                                sparse_user_updates=True, seeded=True)
    tuning_space = {"embedding_dim": ("cat", [16, 32, 64, 128]), "reg": ("log", 0.1, 10.0),
                    "learning_rate": ("log", 0.005, 0.2), "reg_exponent": ("float", 0.0, 1.0)}
    #: the defaults were tuned on ml-1m; quickstart's ml-100k needs fewer epochs
    quick_params = {"epochs": 30}

    epochs: int = 50
    batch_size: int = 1024
    learning_rate: float = 0.05
    reg: float = 2.5
    optimizer: str = "adagrad"
    valid_metric: str | None = "rmse"
    init_std: float = 0.05
    bias_reg: float | None = 0.01
    reg_exponent: float = 0.5

    param_rules = {**GradientRecommender.param_rules,
                   "bias_reg": optional_rule(number_rule(0, MAX_NUMBER)),
                   "reg_exponent": number_rule(0, 2)}

    def _setup(self, train: Interactions, options: FitOptions) -> None:
        if train.value is None:
            raise DataError("mf predicts ratings and needs rating values; for implicit feedback "
                            "use 'bpr', 'als' or another ranking model", source=train.source)
        setup_rating_fit(self)

    def _private_setup(self) -> None:
        """A private fit centres the predictions on the middle of the rating range (the
        rating scale is taken as public), not on the mean of every user's ratings, and
        gives every rating the same L2 weight (not weights from every user's counts)."""
        lo, hi = self.rating_range_
        self.mean_ = 0.5 * (lo + hi)
        self._user_reg_w = torch.ones_like(self._user_reg_w)
        self._item_reg_w = torch.ones_like(self._item_reg_w)

    def private_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each user's mean squared error over their events in the step, plus L2 on
        their factors and bias and on their items' (per rating)."""
        m: _BiasedMF = self.module_
        u, items, mask = batch["users"], batch["items"], batch["mask"]
        p, bu = m.user(u), m.user_bias(u).squeeze(-1)  # [B, d], [B]
        q, bi = m.item(items), m.item_bias(items).squeeze(-1)  # [B, m, d], [B, m]
        pred = m.mean + bu.unsqueeze(1) + bi + (q * p.unsqueeze(1)).sum(-1)
        w = mask.to(pred.dtype)
        n = w.sum(1).clamp_min(1.0)
        err = ((pred - batch["values"]).square() * w).sum(1) / n
        bias_reg = float(self.reg if self.bias_reg is None else self.bias_reg)
        l2 = float(self.reg) * (p.square().sum(-1) + (q.square().sum(-1) * w).sum(1) / n)
        l2 = l2 + bias_reg * (bu.square() + (bi.square() * w).sum(1) / n)
        return err + 0.5 * l2

    def _build(self) -> nn.Module:
        return _BiasedMF(self.n_users, self.n_items, int(self.embedding_dim), self.mean_,
                         self._generator(), float(self.init_std))

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m: _BiasedMF = self.module_
        u = batch["users"]
        bias_reg = float(self.reg if self.bias_reg is None else self.bias_reg)
        return _BiasedMFLoss.apply(
            m.user(u), m.user_bias(u).squeeze(-1), m.item.weight, m.item_bias.weight,
            batch["items"], batch["values"], self._user_reg_w.to(u.device).index_select(0, u),
            self._item_reg_w.to(u.device), m.mean, float(self.reg), bias_reg)

    def _score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.module_.all_items(users)

    def _predict_index(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._predict_pairs(users, items)

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        """Fold-in: a ridge solve for the new user's factors and bias against the item
        factors, with the L2 weights training gave a user with this many ratings.
        Without ``values`` every item counts as rated at the top of the rating range."""
        m: _BiasedMF = self.module_
        q = m.item.weight.detach().double().cpu()
        bi = m.item_bias.weight.detach().double().cpu().ravel()
        r = (np.full(len(items), self.rating_range_[1]) if values is None
             else values.astype(np.float64))
        idx = torch.from_numpy(items)
        target = torch.from_numpy(r) - self.mean_ - bi[idx]
        x = torch.cat([q[idx], torch.ones(len(items), 1, dtype=torch.float64)], dim=1)
        n = max(len(items), 1) ** float(self.reg_exponent)
        bias_reg = float(self.reg if self.bias_reg is None else self.bias_reg)
        # A floor keeps the solve posed with reg=0 and fewer rated items than factors
        lam = torch.full((x.shape[1],), max(0.5 * float(self.reg) * n, _FOLD_IN_MIN_RIDGE),
                         dtype=torch.float64)
        lam[-1] = max(0.5 * bias_reg * n, 1e-6)
        theta = torch.linalg.solve(x.T @ x + torch.diag(lam), x.T @ target)
        scores = self.mean_ + bi + q @ theta[:-1] + theta[-1]
        return scores.float()

    def _item_embeddings(self) -> torch.Tensor:
        return self.module_.item.weight.detach().cpu()

    def _extra_scalars(self) -> dict[str, Any]:
        return {"mean": self.mean_, "rating_range": list(self.rating_range_)}

    #: the fold-in reads reg, bias_reg and reg_exponent
    scoring_params = {**GradientRecommender.scoring_params, "reg": number_rule(0),
                      "bias_reg": number_rule(0, optional=True),
                      "reg_exponent": number_rule(0, 2)}

    def _set_extra_scalars(self, extra: dict[str, Any]) -> None:
        self.mean_ = float(extra_value(extra, "mean", number_rule()))
        lo, hi = extra_value(extra, "rating_range", RANGE_RULE)
        self.rating_range_ = (float(lo), float(hi))


#: The smallest L2 weight of the fold-in's factors (``reg=0`` leaves the solve singular for
#: a history shorter than the factor count).
_FOLD_IN_MIN_RIDGE = 1e-2


class _DotMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, generator: torch.Generator,
                 init_std: float):
        super().__init__()
        self.user = Embedding(n_users, dim)
        self.item = Embedding(n_items, dim)
        with torch.no_grad():
            self.user.weight.normal_(0.0, init_std, generator=generator)
            self.item.weight.normal_(0.0, init_std, generator=generator)


class BPR(SampledGradientRecommender):
    """BPR-MF (Rendle et al. 2009): dot-product factors trained to rank each observed item
    above sampled unobserved ones, ``-log sigmoid(s_ui - s_uj)`` plus L2 on the batch's
    factors.

    Parameters (typical ranges in brackets)
    ----------
    embedding_dim: factors [32, 512].
    epochs: passes over the positives [20, 500]; None (default): 40, or as many as make
        ``min_steps`` steps on a smaller log.
    min_steps: the fewest optimizer steps of a fit with ``epochs=None`` [0, 20000].
    batch_size: positives per step [512, 65536].
    learning_rate: [1e-4, 1e-1].
    reg: L2 weight on the batch's factors [0, 1e-2].
    n_negatives: negatives per positive; each is a separate BPR pair [1, 16].
    optimizer, weight_decay, lr_schedule, valid_metric, patience, eval_every,
    init_std, device, seed: as for :class:`MF`.
    """

    name = "bpr"
    capabilities = Capabilities(similar_items=True, gradient=True, sharded_data=True,
                                sparse_user_updates=True, seeded=True)
    tuning_space = {"embedding_dim": ("cat", [32, 64, 128]), "learning_rate": ("log", 1e-3, 3e-2),
                    "reg": ("log", 1e-4, 0.1), "n_negatives": ("int", 1, 8)}
    quick_params = {"epochs": 30}

    #: what ``recforge train bpr --dp-epsilon E`` starts from (parameters given with ``-p``
    #: win): chosen at epsilon 8 on ml-1m-implicit's validation split (docs/privacy.md):
    #: about 1,024 users a step, SGD on the private item side, the clip near the users'
    #: gradient norms, 40 epochs, then every user's row solved against the private item
    #: side
    private_defaults = {"epochs": 40, "batch_size": 32768, "dp_max_grad_norm": 0.1,
                        "optimizer": "sgd", "learning_rate": 10.0, "lr_schedule": None,
                        "dp_user_learning_rate": 0.05, "dp_user_epochs": 0,
                        "dp_user_rows": "solve"}
    #: ``dp_user_rows="solve"``: implicit least squares against the released item rows
    #: with confidence ``1 + alpha`` on a user's items and a ridge relative to the mean
    #: squared item norm (so it does not depend on the factors' scale); chosen at epsilon
    #: 8 on ml-1m-implicit's validation split (docs/privacy.md), flat from 30 to 300
    SOLVE_ALPHA = 1.0
    SOLVE_REG = 30.0

    #: 40 epochs on a log of 600,000 positives or more (6,560 steps on ml-1m-implicit);
    #: on smaller logs at least 4,000 steps (docs/models.md, "Training length")
    auto_epochs = 40
    epochs: int | None = None
    min_steps: int = 4000
    learning_rate: float = 0.005
    reg: float = 0.01
    init_std: float = 0.1

    def _build(self) -> nn.Module:
        return _DotMF(self.n_users, self.n_items, int(self.embedding_dim), self._generator(),
                      float(self.init_std))

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m: _DotMF = self.module_
        # BPR on the scores plus L2 on the rows read, the item side in one step (the same
        # loss and gradients as lookups, products and losses.bpr + losses.l2, faster)
        items = torch.cat([batch["items"].unsqueeze(1), batch["negatives"]], dim=1)
        return losses.bpr_dot(m.user(batch["users"]), m.item.weight, items, float(self.reg))

    def _solve_user_rows(self, train: Interactions) -> None:
        """Every user's row: the implicit least-squares fit (Hu et al. 2008) of their own
        events against the released item rows; a user's row reads only that user's
        events, as joint differential privacy allows."""
        m: _DotMF = self.module_
        items = m.item.weight.detach()
        reg = self.SOLVE_REG * float(items.float().pow(2).sum(1).mean().clamp_min(1e-6))
        rows = implicit_rows(train.binary_csr.tocsr(), items, self.SOLVE_ALPHA, reg)
        with torch.no_grad():
            m.user.weight.copy_(rows.to(m.user.weight.device, m.user.weight.dtype))

    def private_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each user's BPR loss averaged over their (positive, negative) pairs in the
        step, plus L2 on the rows read (as :meth:`training_loss`, per user)."""
        m: _DotMF = self.module_
        u = m.user(batch["users"])  # [B, d]
        rows = m.item(torch.cat([batch["items"].unsqueeze(2), batch["negatives"]], dim=2))
        scores = (rows * u[:, None, None, :]).sum(-1)  # [B, m, 1 + k]
        pair = torch.nn.functional.softplus(scores[..., 1:] - scores[..., :1]).mean(-1)
        w = batch["mask"].to(pair.dtype)
        n = w.sum(1).clamp_min(1.0)
        loss = (pair * w).sum(1) / n
        if self.reg:
            sq = (rows.square().sum((-1, -2)) * w).sum(1) / n
            loss = loss + 0.5 * float(self.reg) * (u.square().sum(-1) + sq)
        return loss

    def _score_users(self, users: torch.Tensor) -> torch.Tensor:
        m: _DotMF = self.module_
        return m.user(users) @ m.item.weight.T

    def dot_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        m: _DotMF = self.module_
        return m.user.weight.detach().cpu(), m.item.weight.detach().cpu()

    def _item_embeddings(self) -> torch.Tensor:
        return self.module_.item.weight.detach().cpu()
