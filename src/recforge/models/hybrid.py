"""Hybrid collaborative filtering with item side features: two models.

``hybrid`` (:class:`Hybrid`): implicit ALS for the items with interactions, plus a linear
map from item features to ALS item factors, learned by ridge regression on those items
(attribute-to-feature mapping, Gantner et al. 2010, "Learning attribute-to-feature mappings
for cold-start recommendations"). Warm items score exactly as ALS scores them; items with
features but no interactions get the factors their features map to. Closed form and fast.

``hybrid_bpr`` (:class:`HybridBPR`), in the manner of LightFM (Kula 2015): an item's vector
is its id embedding plus the weighted sum of its features' embeddings (each feature group
scaled to unit length per item); a user's vector likewise with user features when given.
Scores are dot products plus an item bias built the same way. Training is BPR (or sampled
or full softmax) on the shared :class:`~recforge.training.trainer.Trainer`, with negatives
drawn from items that have interactions. Items with no interactions use their features
alone; during training ``id_dropout`` hides the id part of a random share of items at each
step, so the feature part learns to carry a whole item on its own (as in DropoutNet,
Volkovs et al. 2017). It also takes user features.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recforge.data.features import Features
from recforge.data.interactions import Interactions
from recforge.models.als import ALS, fold_in_implicit
from recforge.models.artifact import Array, Module, StateSpec
from recforge.models.content import (
    FeatureModelMixin,
    _features_spec,
    _load_features,
    _save_features,
)
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.gradient import GradientRecommender, SampledGradientRecommender
from recforge.models.params import (
    WEIGHTS_RULE,
    check_params,
    choice_rule,
    fraction_rule,
    positive_rule,
)
from recforge.training import losses
from recforge.training.batches import EpochSampler
from recforge.training.embedding import lookup
from recforge.training.trainer import resolve_device

__all__ = ["Hybrid", "HybridBPR"]


def ridge_map(features: sp.csr_matrix, targets: np.ndarray, reg: float, *,
              max_iter: int = 500, tol: float = 1e-6) -> np.ndarray:
    """``argmin_W |F W - Y|^2 + reg |W|^2`` by conjugate gradient on the normal equations,
    all columns at once; ``F`` stays sparse, so any number of features fits in memory."""
    f = features.tocsr().astype(np.float64)
    ft = f.T.tocsr()
    y = np.asarray(targets, dtype=np.float64)
    w = np.zeros((f.shape[1], y.shape[1]))
    r = ft @ y  # b - A w with w = 0
    p = r.copy()
    rs = np.einsum("ij,ij->j", r, r)
    stop = tol * tol * np.maximum(rs, 1e-300)
    for _ in range(max_iter):
        ap = ft @ (f @ p) + reg * p
        pap = np.einsum("ij,ij->j", p, ap)
        a = np.where(pap > 0, rs / np.where(pap > 0, pap, 1.0), 0.0)
        w += p * a
        r -= ap * a
        rs_new = np.einsum("ij,ij->j", r, r)
        if (rs_new <= stop).all():
            break
        p = r + p * np.where(rs > 0, rs_new / np.where(rs > 0, rs, 1.0), 0.0)
        rs = rs_new
    return w


class Hybrid(FeatureModelMixin, ALS):
    """Implicit ALS plus a ridge map from item features to item factors, so that items
    with features but no interactions (new in the catalogue, or held out by a cold-start
    split) are scored too; warm items score as in ALS.

    Fit with ``fit(train, valid=None, item_features=...)``. Parameters are those of
    :class:`~recforge.models.als.ALS`, plus:

    feature_reg:
        L2 weight of the ridge regression from features to factors (typical 1 to 100;
        chosen on a validation cold-start split of ml-latest-small: 10).
    feature_weights:
        Weight per feature group (others 1), applied after scaling each group to unit
        length per item.
    """

    name = "hybrid"
    capabilities = Capabilities(uses_item_features=True, requires_item_features=True,
                                folds_in_history=True, similar_items=True, seeded=True)
    #: MovieLens metadata for hybrid carries the TF-IDF words of titles and tags beside
    #: their text vector: cold films on ml-latest-small, Recall@20 0.2589 with both,
    #: 0.2540 with the words alone, 0.2101 with the vector alone (docs/content.md)
    movielens_words = True
    tuning_space = {"reg": ("log", 0.01, 0.5), "alpha": ("log", 1.0, 50.0),
                    "feature_reg": ("log", 0.1, 100.0)}

    def __init__(self, embedding_dim: int = 128, epochs: int = 15, reg: float = 0.07,
                 alpha: float = 10.0, feature_reg: float = 10.0,
                 feature_weights: dict[str, float] | None = None, solver: str = "cg",
                 cg_steps: int = 3, binary: bool = True, reg_exponent: float = 1.0,
                 reg_weight: str = "observed", seed: int = 0, device: str = "auto") -> None:
        super().__init__(embedding_dim=embedding_dim, epochs=epochs, reg=reg, alpha=alpha,
                         solver=solver, cg_steps=cg_steps, binary=binary,
                         reg_exponent=reg_exponent, reg_weight=reg_weight, seed=seed,
                         device=device)
        self.feature_reg = feature_reg
        self.feature_weights = feature_weights

    def _validate_params(self) -> None:
        super()._validate_params()
        check_params(self, {"feature_reg": positive_rule(), "feature_weights": WEIGHTS_RULE})

    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        super()._fit(train, valid, options)
        item_features = options.item_features
        self.item_features_ = item_features
        feats = item_features.normalized(self.feature_weights)
        warm = train.item_counts() > 0
        y = self.item_factors_.cpu().numpy()
        self.feature_map_ = ridge_map(feats[warm], y[warm], float(self.feature_reg))
        cold = np.flatnonzero(~warm)
        if len(cold):
            mapped = torch.from_numpy((feats[cold] @ self.feature_map_).astype(np.float32))
            self.item_factors_[torch.from_numpy(cold).to(self.device_)] = mapped.to(
                self.device_)

    # The item features are saved with the factors: the served model explains its
    # recommendations by them (``/explanations``, the web page) and searches their text
    # vectors. Models saved before they were kept load without them.
    def _state(self) -> dict[str, torch.Tensor]:
        state = super()._state()
        if getattr(self, "item_features_", None) is not None:
            state.update(_save_features("item_features", self.item_features_)[0])
        return state

    def _extra(self) -> dict[str, Any]:
        extra = super()._extra()
        if getattr(self, "item_features_", None) is not None:
            extra.update(_save_features("item_features", self.item_features_)[1])
        return extra

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        spec = super()._state_spec(extra)
        if "item_features_names" in extra:
            spec.update(_features_spec("item_features", extra, self.n_items))
        return spec

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        super()._restore(state, extra)
        self.item_features_ = (_load_features("item_features", self.items_, state, extra)
                               if "item_features_names" in extra else None)


def fold_in_scores(item_vec: torch.Tensor, item_bias: torch.Tensor,
                   items: np.ndarray) -> torch.Tensor:
    """Scores of every item for a history of ``items`` from a model of item vectors and
    biases trained by gradient (``hybrid_bpr``, ``vbpr``): an implicit least-squares user
    vector against the item vectors (alpha 10, ridge 10x their mean squared norm, so that
    it does not depend on the vectors' scale), plus the biases."""
    y = item_vec.detach().cpu()
    scale = float(y.pow(2).sum(1).mean())
    x = fold_in_implicit(y, items, None, alpha=10.0, reg=max(scale, 1e-6) * 10.0)
    return y @ x + item_bias.detach().cpu()


def _features_fingerprint(f: Features | None) -> str | None:
    """A short hash of a feature table (ids, names, groups and values); None for none."""
    if f is None:
        return None
    h = hashlib.sha256(f.ids.fingerprint().encode())
    h.update(repr((f.names.tolist(), f.groups.tolist())).encode())
    for v in f.to_arrays().values():
        h.update(v.tobytes())
    return h.hexdigest()[:16]


def _split_features(f: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """A feature matrix as (dense columns, their dense block, the sparse rest). Dense
    columns are those filled in a quarter of the rows or more (a text, image or audio
    vector), while the block stays within 256 MB as float32; the rest (TF-IDF words,
    genres) keeps the original column numbers, for bagging. ``f = block + rest``."""
    f = f.tocsr()
    counts = np.bincount(f.indices, minlength=f.shape[1])
    cols = np.flatnonzero(counts >= 0.25 * max(f.shape[0], 1))
    if f.shape[0] * len(cols) * 4 > 256 * 2**20:
        cols = cols[:0]
    is_dense = np.zeros(f.shape[1], dtype=bool)
    is_dense[cols] = True
    rest = f.copy()
    rest.data[is_dense[rest.indices]] = 0.0
    rest.eliminate_zeros()
    return cols, np.asarray(f[:, cols].toarray(), dtype=np.float32), rest


class _Bag(nn.Module):
    """Per-entity vectors: id embedding (masked for entities without training data) plus
    a weighted sum of feature embeddings, computed for every entity at once.

    ``with_bias=False`` (the user side: a user's bias does not change how that user's items
    rank) freezes the bias tables at zero and :meth:`forward` returns ``None`` for the
    bias. The tables stay in the module so that saved models keep one layout; frozen, they
    are neither optimized nor, under DDP, expected to receive a gradient."""

    def __init__(self, n: int, feats: sp.csr_matrix | None, dim: int, warm: np.ndarray,
                 init_std: float, gen: torch.Generator, with_bias: bool = True):
        super().__init__()
        self.with_bias = with_bias
        self.ids = nn.Embedding(n, dim)
        self.id_bias = nn.Embedding(n, 1)
        with torch.no_grad():
            self.ids.weight.normal_(0.0, init_std, generator=gen)
            self.id_bias.weight.zero_()
        self.register_buffer("warm", torch.from_numpy(warm.astype(np.float32)))
        self.n_features = 0 if feats is None else feats.shape[1]
        self.dense = self.bag_rest = False
        if self.n_features:
            self.feat = nn.Embedding(self.n_features, dim)
            self.feat_bias = nn.Embedding(self.n_features, 1)
            with torch.no_grad():
                self.feat.weight.normal_(0.0, init_std, generator=gen)
                self.feat_bias.weight.zero_()
            f = feats.tocsr()
            self.register_buffer("f_indices", torch.from_numpy(f.indices.astype(np.int64)))
            self.register_buffer("f_offsets", torch.from_numpy(f.indptr[:-1].astype(np.int64)))
            self.register_buffer("f_weights", torch.from_numpy(f.data.astype(np.float32)))
            # Dense columns (a text, image or audio vector) are also kept as a dense block
            # (not saved: it derives from the saved features) and the rest bagged: the sum
            # of feature embeddings is then one matrix product plus a bag of the words,
            # where bagging 256 non-zeros per item for every item at every step took 20x
            # longer on ml-latest-small.
            cols, block, rest = _split_features(f)
            self.dense = len(cols) > 0
            self.register_buffer("dense_cols", torch.from_numpy(cols.astype(np.int64)),
                                 persistent=False)
            self.register_buffer("f_dense", torch.from_numpy(block), persistent=False)
            self.bag_rest = rest.nnz > 0
            for key, value in (("rest_indices", rest.indices.astype(np.int64)),
                               ("rest_offsets", rest.indptr[:-1].astype(np.int64)),
                               ("rest_weights", rest.data.astype(np.float32))):
                self.register_buffer(key, torch.from_numpy(value), persistent=False)
        if not with_bias:
            for table in (self.id_bias, getattr(self, "feat_bias", None)):
                if table is not None:
                    table.weight.requires_grad_(False)

    def forward(self, id_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        keep = self.warm if id_mask is None else self.warm * id_mask
        vec = self.ids.weight * keep.unsqueeze(1)
        bias = self.id_bias.weight.squeeze(1) * keep if self.with_bias else None
        if self.n_features and self.dense:
            vec = vec + self.f_dense @ self.feat.weight[self.dense_cols]
            if bias is not None:
                bias = bias + (self.f_dense @ self.feat_bias.weight[self.dense_cols]
                               ).squeeze(1)
        if self.n_features and self.bag_rest:
            vec = vec + F.embedding_bag(self.rest_indices, self.feat.weight,
                                        self.rest_offsets, mode="sum",
                                        per_sample_weights=self.rest_weights)
            if bias is not None:
                bias = bias + F.embedding_bag(self.rest_indices, self.feat_bias.weight,
                                              self.rest_offsets, mode="sum",
                                              per_sample_weights=self.rest_weights
                                              ).squeeze(1)
        return vec, bias


class _HybridModule(nn.Module):
    def __init__(self, users: _Bag, items: _Bag):
        super().__init__()
        self.users = users
        self.items = items


class HybridBPR(FeatureModelMixin, SampledGradientRecommender):
    """Hybrid CF: id embeddings plus feature embeddings, trained with BPR on the shared
    trainer; cold items (features, no interactions) are scored from their features.

    Fit with ``fit(train, valid=None, item_features=..., user_features=None)``.

    Parameters (typical ranges in brackets)
    ----------
    embedding_dim: [16, 256].
    epochs: [10, 200].
    batch_size: positives per step [256, 16384].
    learning_rate: [1e-4, 5e-2] (Adam).
    reg: L2 on the batch's user and item vectors [0, 1e-2].
    n_negatives: sampled items per positive [1, 16].
    loss: ``"bpr"`` (each negative a BPR pair) or ``"softmax"`` (sampled softmax).
    id_dropout: share of items whose id part is hidden at each step [0, 0.8].
    feature_weights: weight per feature group (as for ``content``).
    optimizer, weight_decay, lr_schedule, valid_metric, patience, eval_every, init_std,
    device, seed: as for :class:`~recforge.models.mf.BPR`.
    """

    name = "hybrid_bpr"
    capabilities = Capabilities(uses_item_features=True, uses_user_features=True,
                                folds_in_history=True, similar_items=True, gradient=True,
                                sharded_data=True, seeded=True)
    tuning_space = {"learning_rate": ("log", 1e-3, 3e-2), "reg": ("log", 1e-5, 1e-2),
                    "id_dropout": ("float", 0.0, 0.8)}
    quick_params = {"epochs": 20}
    #: MovieLens metadata for hybrid_bpr carries the TF-IDF words of titles and tags beside
    #: their text vector: cold films on ml-latest-small, Recall@20 0.2250 with both, 0.2196
    #: with the words alone, 0.2143 with the vector alone (docs/content.md)
    movielens_words = True

    epochs: int = 40
    batch_size: int = 2048
    learning_rate: float = 0.005
    reg: float = 0.001
    init_std: float = 0.05
    loss: str = "bpr"
    id_dropout: float = 0.3
    feature_weights: dict[str, float] | None = None

    param_rules = {**SampledGradientRecommender.param_rules,
                   "loss": choice_rule("bpr", "sampled_softmax", "softmax"),
                   "id_dropout": fraction_rule(), "feature_weights": WEIGHTS_RULE}

    # ----------------------------------------------------------------------------------
    def _setup(self, train: Interactions, options: FitOptions) -> None:
        self.item_features_ = options.item_features  # aligned by FeatureModelMixin.fit
        self.user_features_ = options.user_features
        self.warm_items_ = self._stats.item_counts > 0  # over all ranks when sharded
        self.warm_users_ = self._stats.user_counts > 0

    def _signature_extra(self) -> dict[str, Any]:
        # the feature matrices are the module's buffers: a checkpoint fits these only
        return {"item_features": _features_fingerprint(self.item_features_),
                "user_features": _features_fingerprint(self.user_features_)}

    #: every step reads the whole user-id table (the user tower sums ids and features)
    user_tables_read_by_lookup = False

    def user_parameter_names(self) -> list[str]:
        # the users' id rows; user feature embeddings are shared by many users
        return ["users.ids.weight", "users.id_bias.weight"]

    def _sampler(self, train: Interactions, shard: tuple[int, int] = (0, 1)) -> EpochSampler:
        # Negatives among items with interactions: cold items have nothing to learn from.
        self._cold_mask = torch.from_numpy(~np.asarray(self.warm_items_)).to(self.device_)
        n_neg = 0 if self.loss == "softmax" else int(self.n_negatives)
        return EpochSampler(train, int(self.batch_size), n_neg,
                            negative_sampling="observed", shard=shard)

    def _normalized(self, f: Features | None) -> sp.csr_matrix | None:
        if f is None or f.n_features == 0:
            return None
        weights = ({k: v for k, v in self.feature_weights.items() if k in set(f.groups)}
                   if self.feature_weights else None)
        return f.normalized(weights)

    def _build(self) -> nn.Module:
        gen = self._generator()
        d = int(self.embedding_dim)
        users = _Bag(self.n_users, self._normalized(self.user_features_), d,
                     np.asarray(self.warm_users_), float(self.init_std), gen, with_bias=False)
        items = _Bag(self.n_items, self._normalized(self.item_features_), d,
                     np.asarray(self.warm_items_), float(self.init_std), gen)
        return _HybridModule(users, items)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m: _HybridModule = self.module_
        mask = None
        if self.id_dropout > 0:
            mask = (torch.rand(self.n_items, device=self.device_) >= self.id_dropout).float()
        item_vec, item_bias = m.items(mask)
        user_vec, _ = m.users()
        # lookup, not tensor indexing: indexing's backward accumulates rows in a
        # thread-dependent order on a CPU (weights differed run to run on 2 threads)
        u = lookup(user_vec, batch["users"])
        pos = lookup(item_vec, batch["items"])
        if self.loss == "softmax":
            # Full softmax over the items with interactions (cold items cannot be targets).
            logits = u @ item_vec.T + item_bias
            logits = logits.masked_fill(self._cold_mask, -torch.inf)
            return (F.cross_entropy(logits, batch["items"])
                    + float(self.reg) * losses.l2(u, pos))
        neg = lookup(item_vec, batch["negatives"])  # [B, N, d]
        bias = item_bias.unsqueeze(1)
        pos_s = (u * pos).sum(-1) + lookup(bias, batch["items"]).squeeze(-1)
        neg_s = (u.unsqueeze(1) * neg).sum(-1) + lookup(bias, batch["negatives"]).squeeze(-1)
        rank_loss = (losses.bpr(pos_s, neg_s) if self.loss == "bpr"
                     else losses.sampled_softmax(pos_s, neg_s))
        return rank_loss + float(self.reg) * losses.l2(u, pos, neg.flatten(0, 1))

    def _prepare_scoring(self) -> None:
        with torch.no_grad():
            self._item_vec, self._item_bias = self.module_.items()
            self._user_vec, _ = self.module_.users()

    def _score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self._user_vec[users] @ self._item_vec.T + self._item_bias

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        """Fold-in: an implicit least-squares user vector against the item vectors."""
        return fold_in_scores(self._item_vec, self._item_bias, items)

    def _item_embeddings(self) -> torch.Tensor:
        return self._item_vec.detach().cpu()

    # ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        state = {f"module.{k}": v for k, v in self.module_.state_dict().items()}
        state["warm_items"] = torch.from_numpy(np.asarray(self.warm_items_, np.uint8))
        state["warm_users"] = torch.from_numpy(np.asarray(self.warm_users_, np.uint8))
        for prefix, f in (("item_features", self.item_features_),
                          ("user_features", self.user_features_)):
            if f is not None:
                state.update(_save_features(prefix, f)[0])
        return state

    def _extra_scalars(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for prefix, f in (("item_features", self.item_features_),
                          ("user_features", self.user_features_)):
            if f is not None:
                extra.update(_save_features(prefix, f)[1])
        return extra

    scoring_params = {**GradientRecommender.scoring_params, "feature_weights": WEIGHTS_RULE}

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        self._restore_extra(extra)
        spec: StateSpec = {"warm_items": Array((self.n_items,), torch.uint8, 0, 2),
                           "warm_users": Array((self.n_users,), torch.uint8, 0, 2)}
        for prefix, n in (("item_features", self.n_items), ("user_features", self.n_users)):
            if f"{prefix}_names" in extra:
                spec.update(_features_spec(prefix, extra, n))

        def build(checked: dict[str, torch.Tensor]) -> nn.Module:
            self._restore_inputs(checked, extra)  # the buffers derive from these
            return self._build()

        spec["module"] = Module(build, "module.")
        return spec

    def _restore_inputs(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        """Warm masks and feature tables, from checked state."""
        self.warm_items_ = state["warm_items"].numpy().astype(bool)
        self.warm_users_ = state["warm_users"].numpy().astype(bool)
        self.item_features_ = (_load_features("item_features", self.items_, state, extra)
                               if "item_features_names" in extra else None)
        self.user_features_ = (_load_features("user_features", self.users_, state, extra)
                               if "user_features_names" in extra else None)

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.device_ = resolve_device(self.device)
        self._restore_inputs(state, extra)
        module = self._build()
        module.load_state_dict({k[len("module."):]: v for k, v in state.items()
                                if k.startswith("module.")})
        self.module_ = module.to(self.device_).eval()
        self._prepare_scoring()
