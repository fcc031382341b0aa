"""SVD++ (Koren 2008): biased matrix factorization with implicit feedback.

``r_ui ~ mu + b_u + b_i + q_i . (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j)``, where ``N(u)``
is the set of items user ``u`` rated in training (what the user chose to rate, whatever
the rating). Trained on the shared :class:`~recforge.training.trainer.Trainer` in
minibatches; each batch computes the implicit sum once per distinct user of the batch,
with one ``embedding_bag`` over those users' rated items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from recforge.data.interactions import Interactions
from recforge.errors import DataError
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.gradient import GradientRecommender
from recforge.models.mf import setup_rating_fit
from recforge.models.params import (
    MAX_NUMBER,
    RANGE_RULE,
    extra_value,
    number_rule,
    optional_rule,
)
from recforge.training.embedding import Embedding


class _SVDpp(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, mean: float,
                 history: tuple[np.ndarray, np.ndarray], generator: torch.Generator,
                 init_std: float):
        super().__init__()
        self.user = Embedding(n_users, dim)
        self.item = Embedding(n_items, dim)
        self.implicit = Embedding(n_items, dim)
        self.user_bias = Embedding(n_users, 1)
        self.item_bias = Embedding(n_items, 1)
        self.register_buffer("mean", torch.tensor(float(mean)))
        indptr, indices = history
        # the rated items of each user (a CSR's structure): plain tensors, not state
        self._indptr = torch.from_numpy(np.asarray(indptr, dtype=np.int64))
        self._indices = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        lens = np.diff(np.asarray(indptr, dtype=np.int64)).astype(np.float32)
        self._norm = torch.from_numpy(np.where(lens > 0, lens, 1.0) ** -0.5)
        with torch.no_grad():
            for table in (self.user, self.item, self.implicit):
                if not table.weight.is_meta:
                    table.weight.normal_(0.0, init_std, generator=generator)
            for table in (self.user_bias, self.item_bias):
                if not table.weight.is_meta:
                    table.weight.zero_()

    def implicit_sum(self, users: torch.Tensor) -> torch.Tensor:
        """``|N(u)|^-1/2 sum_{j in N(u)} y_j`` for each of ``users`` (computed once per
        distinct user)."""
        dev = self.implicit.weight.device
        uniq, inverse = torch.unique(users.cpu(), return_inverse=True)
        starts = self._indptr[uniq]
        lens = self._indptr[uniq + 1] - starts
        first = torch.cumsum(lens, 0) - lens
        pos = (torch.repeat_interleave(starts - first, lens)
               + torch.arange(int(lens.sum())))
        flat = self._indices[pos]
        bags = nn.functional.embedding_bag(flat.to(dev), self.implicit.weight,
                                           first.to(dev), mode="sum")
        bags = bags * self._norm[uniq].to(dev).unsqueeze(1)
        return bags[inverse.to(dev)]

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user(users) + self.implicit_sum(users)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        bu, bi = self.user_bias(users).squeeze(-1), self.item_bias(items).squeeze(-1)
        return self.mean + bu + bi + (self.user_vectors(users) * self.item(items)).sum(-1)

    def all_items(self, users: torch.Tensor) -> torch.Tensor:
        return (self.mean + self.user_bias(users) + self.item_bias.weight.T
                + self.user_vectors(users) @ self.item.weight.T)


class SVDpp(GradientRecommender):
    """SVD++ (Koren 2008) for explicit ratings; Surprise's ``SVDpp`` on the shared trainer.

    Parameters (typical ranges in brackets)
    ----------
    embedding_dim: factors [16, 256].
    epochs, batch_size, learning_rate, optimizer, lr_schedule: the trainer's.
    reg: L2 weight on ``p_u``, ``q_i`` [0, 10], per user (item) ``reg * n^reg_exponent``
        over an epoch as in ``mf``.
    implicit_reg: L2 weight on the implicit factors ``y_j`` [1, 30] (``None``: ``reg``),
        applied at each batch's items like ``q_i``'s.
    reg_exponent: how the L2 weight grows with a user's (item's) rating count [0, 1].
    bias_reg: L2 weight on the biases [0, 1].
    valid_metric, patience, eval_every, init_std, device, seed.

    :meth:`predict` clips to the training rating range; unknown users or items get the
    global mean plus the known bias. The defaults were chosen on a 10 % validation split
    of the ML-100K fixed training ratings (see ``docs/models.md``).
    """

    name = "svdpp"
    objective = "rating"
    capabilities = Capabilities(rates=True, learns_ratings=True, similar_items=True,
                                gradient=True, sparse_user_updates=True, seeded=True)
    tuning_space = {"embedding_dim": ("cat", [16, 32, 64, 128]), "reg": ("log", 0.1, 10.0),
                    "learning_rate": ("log", 0.005, 0.2), "reg_exponent": ("float", 0.0, 1.0)}
    quick_params = {"epochs": 20}

    embedding_dim: int = 64
    epochs: int = 40
    batch_size: int = 1024
    learning_rate: float = 0.05
    reg: float = 2.5
    implicit_reg: float | None = 15.0
    optimizer: str = "adagrad"
    valid_metric: str | None = "rmse"
    init_std: float = 0.05
    bias_reg: float | None = 0.01
    reg_exponent: float = 0.5

    param_rules = {**GradientRecommender.param_rules,
                   "bias_reg": optional_rule(number_rule(0, MAX_NUMBER)),
                   "implicit_reg": optional_rule(number_rule(0, MAX_NUMBER)),
                   "reg_exponent": number_rule(0, 2)}

    def _setup(self, train: Interactions, options: FitOptions) -> None:
        if train.value is None:
            raise DataError("svdpp predicts ratings and needs rating values; for implicit "
                            "feedback use 'bpr', 'als' or another ranking model",
                            source=train.source)
        setup_rating_fit(self)

    def _build(self) -> nn.Module:
        seen = self.seen_
        return _SVDpp(self.n_users, self.n_items, int(self.embedding_dim), self.mean_,
                      (seen.indptr, seen.indices), self._generator(), float(self.init_std))

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m: _SVDpp = self.module_
        u, i, y = batch["users"], batch["items"], batch["values"]
        p, q, imp = m.user(u), m.item(i), m.implicit_sum(u)
        bu, bi = m.user_bias(u).squeeze(-1), m.item_bias(i).squeeze(-1)
        err = m.mean + bu + bi + ((p + imp) * q).sum(-1) - y
        wu = self._user_reg_w.to(u.device).index_select(0, u)
        wi = self._item_reg_w.to(u.device).index_select(0, i)
        yi = m.implicit(i)
        reg = float(self.reg)
        imp_reg = reg if self.implicit_reg is None else float(self.implicit_reg)
        bias_reg = reg if self.bias_reg is None else float(self.bias_reg)
        n = len(i)
        penalty = (reg * (torch.dot(wu, (p * p).sum(-1)) + torch.dot(wi, (q * q).sum(-1)))
                   + imp_reg * torch.dot(wi, (yi * yi).sum(-1))
                   + bias_reg * (torch.dot(wu, bu * bu) + torch.dot(wi, bi * bi)))
        return torch.dot(err, err) / n + (0.5 / n) * penalty

    def _score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.module_.all_items(users)

    def _predict_index(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._predict_pairs(users, items)

    def _fallback_index(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Pairs with an unknown user or item (``-1``): the global mean plus the bias of
        whichever is known, clipped to the rating range."""
        m: _SVDpp = self.module_
        bu = m.user_bias.weight.detach().cpu().numpy().ravel().astype(np.float64)
        bi = m.item_bias.weight.detach().cpu().numpy().ravel().astype(np.float64)
        est = (self.mean_ + np.where(users >= 0, bu[np.maximum(users, 0)], 0.0)
               + np.where(items >= 0, bi[np.maximum(items, 0)], 0.0))
        return np.clip(est, *self.rating_range_).astype(np.float32)

    def _item_embeddings(self) -> torch.Tensor:
        return self.module_.item.weight.detach().cpu()

    def _extra_scalars(self) -> dict[str, Any]:
        return {"mean": self.mean_, "rating_range": list(self.rating_range_)}

    def _set_extra_scalars(self, extra: dict[str, Any]) -> None:
        self.mean_ = float(extra_value(extra, "mean", number_rule()))
        lo, hi = extra_value(extra, "rating_range", RANGE_RULE)
        self.rating_range_ = (float(lo), float(hi))
