"""Neural collaborative filtering (He et al., WWW 2017): GMF, MLP and NeuMF.

* ``gmf``: ``logit(u, i) = h . (p_u * q_i)``, a generalised matrix factorization;
* ``mlp``: ``[p_u; q_i]`` through ReLU layers (default 128 then 64 units) and a linear output;
* ``neumf``: both towers with separate embeddings, their last layers concatenated into one
  output; optionally initialised from a trained GMF and a trained MLP (the paper's
  pre-training), output weights mixed with ``alpha`` = 0.5.

Ranking objective (default): binary cross-entropy on each positive and ``n_negatives``
sampled negatives (4 in the paper). ``mlp`` and ``neumf`` also take ``loss="mse"`` to fit
explicit ratings (no sigmoid; :meth:`predict` returns ratings clipped to the training range).

Scoring all items for a user costs one MLP pass per item; the first layer is split into a
user part and an item part computed once per batch (``W [p; q] = W_u p + W_i q``), so full
ranking evaluation stays practical on a CPU.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, DataError
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.gradient import (
    GradientRecommender,
    SampledGradientRecommender,
    shared_params,
)
from recforge.models.params import (
    BOOL_RULE,
    MAX_DIM,
    RANGE_RULE,
    ParamRule,
    choice_rule,
    extra_value,
    fraction_rule,
    int_rule,
    number_rule,
    positive_rule,
)
from recforge.training import losses
from recforge.training.embedding import Embedding
from recforge.training.optim import check_optimizer

#: A non-empty list of layer sizes (what a loaded MLP tower is built from).
_LAYERS_RULE = ParamRule(
    lambda v: (isinstance(v, (list, tuple)) and len(v) > 0
               and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)),
    "a non-empty list of integers >= 1")

#: The most hidden layers of an MLP tower.
MAX_HIDDEN_LAYERS = 64
#: What ``layers`` may be when a model is made: 1 to 64 widths in ``1..MAX_DIM``.
_LAYERS_PARAM_RULE = ParamRule(
    lambda v: (isinstance(v, (list, tuple)) and 0 < len(v) <= MAX_HIDDEN_LAYERS
               and all(int_rule(1, MAX_DIM).ok(x) for x in v)),
    f"a list of 1 to {MAX_HIDDEN_LAYERS} integers in 1..{MAX_DIM}")

#: Pairs (users x items) scored at once when ranking with an MLP tower: bounds memory.
_PAIR_BLOCK = 1 << 17


def _init_embedding(emb: Embedding, gen: torch.Generator, std: float) -> None:
    with torch.no_grad():
        emb.weight.normal_(0.0, std, generator=gen)


def _init_linear(layer: nn.Linear, gen: torch.Generator) -> None:
    with torch.no_grad():
        bound = (6.0 / (layer.in_features + layer.out_features)) ** 0.5  # Xavier uniform
        layer.weight.uniform_(-bound, bound, generator=gen)
        layer.bias.zero_()


class _GMFTower(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, gen: torch.Generator, std: float):
        super().__init__()
        self.user = Embedding(n_users, dim)
        self.item = Embedding(n_items, dim)
        _init_embedding(self.user, gen, std)
        _init_embedding(self.item, gen, std)
        self.out_dim = dim

    def pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.features(self.user(users), self.item(items))

    def features(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The tower's output for looked-up user rows ``p`` and item rows ``q``."""
        return p * q

    def grid_logit(self, users: torch.Tensor, weight: torch.Tensor,
                   scratch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[B, n_items]`` contribution ``w . (p_u * q_i)`` for every item, as one matmul:
        ``(p_u * w) . q_i``."""
        return (self.user(users) * weight) @ self.item.weight.T


class _MLPTower(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, layers: tuple[int, ...],
                 dropout: float, gen: torch.Generator, std: float):
        super().__init__()
        self.user = Embedding(n_users, dim)
        self.item = Embedding(n_items, dim)
        _init_embedding(self.user, gen, std)
        _init_embedding(self.item, gen, std)
        sizes = [2 * dim, *layers]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                     strict=True))
        for lin in self.linears:
            _init_linear(lin, gen)
        self.dropout = nn.Dropout(dropout)
        self.dim = dim
        self.out_dim = sizes[-1]

    def _rest(self, h: torch.Tensor) -> torch.Tensor:
        for lin in self.linears[1:]:
            h = torch.relu(lin(self.dropout(h)))
        return h

    def pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.features(self.user(users), self.item(items))

    def features(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The tower's output for looked-up user rows ``p`` and item rows ``q``."""
        h = torch.relu(self.linears[0](torch.cat([p, q], dim=-1)))
        return self._rest(h)

    def grid_logit(self, users: torch.Tensor, weight: torch.Tensor,
                   scratch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[B, n_items]`` contribution of the last hidden layer for every item; the first
        layer is split into a user part and an item part (``W [p; q] = W_u p + W_i q``).

        Without autograd, hidden activations are computed in place into ``scratch`` buffers
        reused across calls: on a CPU this is several times faster than fresh tensors.
        """
        first = self.linears[0]
        w_u, w_i = first.weight[:, : self.dim], first.weight[:, self.dim:]
        hu = self.user(users) @ w_u.T + first.bias  # [B, h1]
        hi = self.item.weight @ w_i.T  # [n, h1]
        if torch.is_grad_enabled() or scratch is None:
            h = torch.relu(hu.unsqueeze(1) + hi.unsqueeze(0))
            return self._rest(h) @ weight
        b, n = len(users), hi.shape[0]

        def buffer(name: str, size: int) -> torch.Tensor:
            buf = scratch.get(name)
            if buf is None or buf.numel() < size or buf.device != hu.device:
                buf = torch.empty(size, device=hu.device, dtype=hu.dtype)
                scratch[name] = buf
            return buf[:size]

        h = buffer("h0", b * n * hu.shape[1]).view(b, n, -1)
        torch.add(hu.unsqueeze(1), hi.unsqueeze(0), out=h)
        h = h.relu_().view(b * n, -1)
        for k, lin in enumerate(self.linears[1:], start=1):
            out = buffer(f"h{k}", b * n * lin.out_features).view(b * n, -1)
            torch.addmm(lin.bias, h, lin.weight.T, out=out)
            h = out.relu_()
        return (h @ weight).view(b, n)


class _NCF(nn.Module):
    """One or two towers and a linear output layer."""

    def __init__(self, towers: list[nn.Module], gen: torch.Generator):
        super().__init__()
        self.towers = nn.ModuleList(towers)
        self.out = nn.Linear(sum(t.out_dim for t in towers), 1)
        _init_linear(self.out, gen)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        feats = [t.pairs(users, items) for t in self.towers]
        return self.out(torch.cat(feats, dim=-1)).squeeze(-1)

    def grid(self, users: torch.Tensor, scratch: dict[str, torch.Tensor] | None = None
             ) -> torch.Tensor:
        """``[B, n_items]`` logits of every item, without materialising per-pair features
        of the output layer's input."""
        w = self.out.weight[0]
        total = self.out.bias
        start = 0
        for tower in self.towers:
            total = total + tower.grid_logit(users, w[start:start + tower.out_dim], scratch)
            start += tower.out_dim
        return total


class _NCFBase(SampledGradientRecommender):
    """Shared training and scoring of the three NCF models."""

    #: The objective (``"bce"`` ranking, ``"mse"`` ratings): a parameter of ``mlp`` and
    #: ``neumf``, always ``"bce"`` for ``gmf``.
    loss: ClassVar[str] = "bce"

    #: 10 epochs on a log of 600,000 events or more (1,640 steps on ml-1m-implicit, where
    #: longer training overfits); on smaller logs at least 1,600 steps (docs/models.md)
    auto_epochs = 10
    epochs: int | None = None
    min_steps: int = 1600

    #: (the rules of parameters a model lacks are skipped)
    #: (n_negatives >= 1 with loss="bce" only: checked below)
    min_negatives = 0
    param_rules = {**SampledGradientRecommender.param_rules,
                   "loss": choice_rule("bce", "mse"), "layers": _LAYERS_PARAM_RULE,
                   "dropout": fraction_rule(), "mlp_embedding_dim": int_rule(1, MAX_DIM)}

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.loss == "bce" and self.n_negatives < 1:
            raise ConfigError(f"{self.name}: n_negatives must be >= 1 with loss='bce'")

    @property
    def objective(self) -> str:  # type: ignore[override]
        return "rating" if self.loss == "mse" else "ranking"

    def fit_epochs(self, steps_per_epoch: int | None = None) -> int:
        """As for every gradient model; the floor on the steps was measured on the ranking
        objective only: with ``loss="mse"``, ``epochs=None`` runs 10 epochs."""
        return super().fit_epochs(steps_per_epoch if self.objective == "ranking" else None)

    def effective_capabilities(self) -> Capabilities:
        """The class's capabilities; rating ones (``rates``, ``learns_ratings``) only with
        ``loss="mse"`` (``mlp`` and ``neumf`` declare them: some setting rates)."""
        rating = self.loss == "mse"
        return replace(self.capabilities, rates=rating, learns_ratings=rating)

    def _setup(self, train: Interactions, options: FitOptions) -> None:
        if self.objective == "rating":
            if train.value is None:
                raise DataError(f"{self.name} with loss='mse' needs rating values",
                                source=train.source)
            self.rating_range_ = (self._stats.value_min, self._stats.value_max)
            self.mean_ = self._stats.value_mean
        else:
            self.rating_range_ = (0.0, 1.0)
            self.mean_ = 0.0

    def _towers(self, gen: torch.Generator) -> list[nn.Module]:
        raise NotImplementedError

    def _build(self) -> nn.Module:
        gen = self._generator()
        model = _NCF(self._towers(gen), gen)
        if self.objective == "rating":
            with torch.no_grad():
                model.out.bias.fill_(self.mean_)
        return model

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m: _NCF = self.module_
        u, i = batch["users"], batch["items"]
        if self.objective == "rating":
            return losses.mse(m(u, i), batch["values"]) + self._reg(u, i)
        neg = batch["negatives"]
        pos_logit = m(u, i)
        n = neg.shape[1]
        neg_logit = m(u.unsqueeze(1).expand(-1, n).reshape(-1), neg.reshape(-1)).view(-1, n)
        return losses.bce(pos_logit, neg_logit) + self._reg(u, i, neg.reshape(-1))

    def _private_setup(self) -> None:
        """A private rating fit starts the output from the middle of the rating range
        (the scale is taken as public), not from the mean of every user's ratings."""
        if self.objective == "rating":
            lo, hi = self.rating_range_
            self.mean_ = 0.5 * (lo + hi)

    def private_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each user's loss over their events in the step (BCE on each positive and its
        negatives, or squared error with ``loss="mse"``), plus L2 on the rows read. Each
        table and layer is called once (what Opacus's ghost clipping needs)."""
        m: _NCF = self.module_
        u, mask = batch["users"], batch["mask"]
        if self.objective == "rating":
            items = batch["items"]  # [B, m]
        else:
            items = torch.cat([batch["items"].unsqueeze(2), batch["negatives"]], dim=2)
        # [B, M]; the slots per user from the shape, not -1: a Poisson-sampled step can
        # hold no user (B = 0), where -1 is ambiguous
        flat = items.reshape(items.shape[0], int(np.prod(items.shape[1:])))
        feats, user_sq, item_sq = [], 0.0, 0.0
        for tower in m.towers:  # one or two
            p, q = tower.user(u), tower.item(flat)  # [B, d], [B, M, d]
            feats.append(tower.features(p.unsqueeze(1).expand(-1, flat.shape[1], -1), q))
            user_sq = user_sq + p.square().sum(-1)
            item_sq = item_sq + q.square().sum(-1)
        logits = m.out(torch.cat(feats, dim=-1)).squeeze(-1).view(items.shape)
        if self.objective == "rating":
            per_event = (logits - batch["values"]).square()  # [B, m]
            rows_sq = item_sq
        else:
            labels = torch.zeros_like(logits)
            labels[..., 0] = 1.0
            k = items.shape[2]
            per_event = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, labels, reduction="none").sum(-1) / k
            rows_sq = item_sq.view(items.shape).sum(-1)  # type: ignore[union-attr]
        w = mask.to(per_event.dtype)
        n = w.sum(1).clamp_min(1.0)
        loss = (per_event * w).sum(1) / n
        if self.reg:
            loss = loss + 0.5 * float(self.reg) * (user_sq + (rows_sq * w).sum(1) / n)
        return loss

    def _reg(self, users: torch.Tensor, *items: torch.Tensor) -> torch.Tensor:
        if not self.reg:
            return torch.zeros((), device=users.device)
        tensors = []
        for tower in self.module_.towers:
            tensors.append(tower.user(users))
            tensors.extend(tower.item(it) for it in items)
        return float(self.reg) * sum(losses.l2(t) for t in tensors)

    def _score_users(self, users: torch.Tensor) -> torch.Tensor:
        m: _NCF = self.module_
        n_items = self.n_items
        per_user = max(1, _PAIR_BLOCK // n_items)
        scratch: dict[str, torch.Tensor] = {}
        outs = [m.grid(users[s:s + per_user], scratch) for s in range(0, len(users), per_user)]
        return torch.cat(outs, dim=0) if outs else torch.empty(0, n_items)

    def _predict_index(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if not self.predicts_ratings:
            return super()._predict_index(users, items)
        return self._predict_pairs(users, items)

    def _item_embeddings(self) -> torch.Tensor:
        return torch.cat([t.item.weight.detach() for t in self.module_.towers], dim=1).cpu()

    def _extra_scalars(self) -> dict[str, Any]:
        return {"mean": self.mean_, "rating_range": list(self.rating_range_)}

    def _set_extra_scalars(self, extra: dict[str, Any]) -> None:
        self.mean_ = float(extra_value(extra, "mean", number_rule(), 0.0))
        lo, hi = extra_value(extra, "rating_range", RANGE_RULE, [0.0, 1.0])
        self.rating_range_ = (float(lo), float(hi))


class GMF(_NCFBase):
    """Generalised matrix factorization (the GMF tower of NCF).

    Parameters: ``embedding_dim`` [8, 128], ``epochs`` (None, the default: 10, or as many
    as make ``min_steps`` steps on a smaller log), ``min_steps``, ``batch_size``,
    ``learning_rate``, ``reg`` (L2 on the batch's embeddings), ``n_negatives`` (per
    positive, [1, 10]),
    ``optimizer``, ``weight_decay``, ``lr_schedule``, ``valid_metric``, ``patience``,
    ``eval_every``, ``init_std``, ``device``, ``seed``.
    """

    name = "gmf"
    capabilities = Capabilities(similar_items=True, gradient=True, sharded_data=True,
                                sparse_user_updates=True, seeded=True)
    tuning_space = {"embedding_dim": ("cat", [16, 32, 64]),
                    "learning_rate": ("log", 1e-4, 1e-2), "n_negatives": ("int", 1, 8)}
    #: the defaults were tuned on ml-1m; on quickstart's ml-100k, smaller batches
    quick_params = {"batch_size": 1024, "epochs": 10}

    def _towers(self, gen: torch.Generator) -> list[nn.Module]:
        return [_GMFTower(self.n_users, self.n_items, int(self.embedding_dim), gen,
                          float(self.init_std))]


class MLP(_NCFBase):
    """The MLP tower of NCF: user and item embeddings concatenated, then ReLU layers.

    Parameters: as :class:`GMF`, plus ``layers`` (hidden sizes, default ``(128, 64)``),
    ``dropout`` and ``loss`` (``"bce"`` ranking, or ``"mse"`` for ratings).
    """

    name = "mlp"
    #: rates with loss="mse" (see effective_capabilities)
    capabilities = Capabilities(rates=True, learns_ratings=True, similar_items=True,
                                gradient=True, sharded_data=True, sparse_user_updates=True,
                                seeded=True)
    tuning_space = {"embedding_dim": ("cat", [16, 32, 64]),
                    "learning_rate": ("log", 1e-4, 1e-2), "n_negatives": ("int", 1, 8)}
    #: the defaults were tuned on ml-1m; on quickstart's ml-100k, smaller batches
    quick_params = {"batch_size": 1024, "epochs": 10}
    scoring_params = {**GradientRecommender.scoring_params, "layers": _LAYERS_RULE,
                      "dropout": number_rule(0, 1)}

    layers: tuple[int, ...] = (128, 64)
    dropout: float = 0.0
    loss: str = "bce"  # type: ignore[misc]
    #: the MLP tower alone gains longer than gmf and neumf (docs/models.md)
    min_steps: int = 3200

    def _towers(self, gen: torch.Generator) -> list[nn.Module]:
        return [_MLPTower(self.n_users, self.n_items, int(self.embedding_dim),
                          tuple(int(x) for x in self.layers), float(self.dropout), gen,
                          float(self.init_std))]


class NeuMF(_NCFBase):
    """NeuMF: a GMF tower and an MLP tower with separate embeddings, fused by one output.

    Parameters: as :class:`MLP`, with ``embedding_dim`` for the GMF tower and
    ``mlp_embedding_dim`` for the MLP tower, plus ``pretrain`` (train a GMF and an MLP with
    the same settings first and start from their weights, the output layer mixing them with
    ``alpha``; the paper then fine-tunes with plain SGD, here with ``pretrain_optimizer``
    at ``pretrain_learning_rate``).
    """

    name = "neumf"
    #: rates with loss="mse" (see effective_capabilities)
    capabilities = MLP.capabilities
    tuning_space = {"embedding_dim": ("cat", [16, 32, 64]),
                    "learning_rate": ("log", 1e-4, 1e-2), "n_negatives": ("int", 1, 8)}
    #: the defaults were tuned on ml-1m; on quickstart's ml-100k, smaller batches
    quick_params = {"batch_size": 1024, "epochs": 10}
    scoring_params = {**MLP.scoring_params, "mlp_embedding_dim": int_rule(1)}

    mlp_embedding_dim: int = 64
    layers: tuple[int, ...] = (128, 64)
    dropout: float = 0.0
    loss: str = "bce"  # type: ignore[misc]
    pretrain: bool = False
    alpha: float = 0.5
    pretrain_optimizer: str = "sgd"
    pretrain_learning_rate: float = 0.01

    param_rules = {**_NCFBase.param_rules, "alpha": number_rule(0, 1), "pretrain": BOOL_RULE,
                   "pretrain_learning_rate": positive_rule()}

    def _validate_params(self) -> None:
        super()._validate_params()
        try:
            check_optimizer(self.pretrain_optimizer, "pretrain_optimizer")
        except ConfigError as exc:
            raise ConfigError(f"{self.name}: {exc}") from None
        if self.pretrain and self.dp_epsilon is not None:
            raise ConfigError("neumf: pretrain=True cannot be used with dp_epsilon (the "
                              "pretrained GMF and MLP would each spend the budget again); "
                              "use pretrain=False")
        if self.pretrain and self.loss == "mse":
            raise ConfigError("neumf: pretrain trains the GMF tower on implicit feedback (BCE) "
                              "and cannot pretrain for loss='mse'; use pretrain=False")

    def _check_distributed(self) -> None:
        if self.pretrain:
            # Each rank would pretrain GMF and MLP alone on its own shard (local batches,
            # statistics and early stopping), then DDP would pair rank 0's item towers with
            # every rank's own user rows.
            raise ConfigError("neumf: pretrain=True is not supported in distributed training "
                              "(each rank would pretrain on its own shard alone); use "
                              "pretrain=False, or pretrain in one process")

    def _towers(self, gen: torch.Generator) -> list[nn.Module]:
        return [
            _GMFTower(self.n_users, self.n_items, int(self.embedding_dim), gen,
                      float(self.init_std)),
            _MLPTower(self.n_users, self.n_items, int(self.mlp_embedding_dim),
                      tuple(int(x) for x in self.layers), float(self.dropout), gen,
                      float(self.init_std)),
        ]

    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        if not self.pretrain:
            return super()._fit(train, valid, options)
        if options.training.world > 1:
            self._check_distributed()  # before the pretraining fits, not after
        shared = {k: v for k, v in shared_params(self).items() if k != "embedding_dim"}
        gmf = GMF(embedding_dim=self.embedding_dim, **shared).fit(train, valid)
        mlp = MLP(embedding_dim=self.mlp_embedding_dim, layers=self.layers,
                  dropout=self.dropout, loss=self.loss, **shared).fit(train, valid)
        self._pretrained = (gmf.module_, mlp.module_)
        saved = (self.optimizer, self.learning_rate)
        self.optimizer, self.learning_rate = self.pretrain_optimizer, self.pretrain_learning_rate
        try:
            super()._fit(train, valid, options)
        finally:
            self.optimizer, self.learning_rate = saved
            del self._pretrained

    def _build(self) -> nn.Module:
        model = super()._build()
        pre = getattr(self, "_pretrained", None)
        if pre is not None:
            gmf, mlp = pre
            a = float(self.alpha)
            with torch.no_grad():
                model.towers[0].load_state_dict(gmf.towers[0].state_dict())
                model.towers[1].load_state_dict(mlp.towers[0].state_dict())
                model.out.weight.copy_(torch.cat([a * gmf.out.weight, (1 - a) * mlp.out.weight],
                                                 dim=1))
                model.out.bias.copy_(a * gmf.out.bias + (1 - a) * mlp.out.bias)
        return model
