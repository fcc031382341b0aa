"""VBPR: BPR with content vectors (He and McAuley 2016, "VBPR: Visual Bayesian
Personalized Ranking from Implicit Feedback", AAAI).

The paper's predictor, for user ``u`` and item ``i`` with content vector ``f_i`` (there a
CNN's image features; here any item feature block: image, audio or text vectors, genres)::

    x_ui = alpha + beta_u + beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i

``gamma`` are the latent (id) factors, ``E`` a learned ``[visual_dim, D]`` projection of the
content vector into a second factor space with its own user factors ``theta_u``, and
``beta'`` a content bias (a global "visual bias" vector: how much each content dimension
draws users in general). ``alpha`` and ``beta_u`` are constant per user and do not change
a ranking; BPR's pairwise loss cancels them, so they are left out, as the paper notes.
Training is BPR on the shared trainer: ``-ln sigmoid(x_ui - x_uj)`` for sampled negatives
``j``, with L2 ``reg`` on the batch's user and item parameters (``lambda_Theta``) and
``reg_visual`` on ``E`` and ``beta'`` (the paper's ``lambda_E``).

Item factor = ``[gamma_i ; E f_i]`` against user factor ``[gamma_u ; theta_u]``: an item
with content but no interactions (new, or held out by a cold-start split) is scored by
its content part alone, ``theta_u . E f_i + beta' . f_i``, its untrained id part left out
(the paper's cold-start setting). ``id_dropout`` (0 in the paper) optionally hides the id
part of a share of items per step, as ``hybrid_bpr`` does, so the content part learns to
stand for an item on its own.

How it differs from ``hybrid_bpr`` (LightFM-style): there the content embeddings are
*added* to the id embedding in one space; here they form a separate block with its own
user factors, so the content part cannot be absorbed by the id part, and a content bias
``beta'`` ranks items by content alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recforge.data.interactions import Interactions
from recforge.models.artifact import Array, Module, StateSpec
from recforge.models.content import (
    FeatureModelMixin,
    _features_spec,
    _load_features,
    _save_features,
)
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.gradient import GradientRecommender, SampledGradientRecommender
from recforge.models.hybrid import _features_fingerprint, _split_features, fold_in_scores
from recforge.models.params import (
    MAX_DIM,
    MAX_NUMBER,
    WEIGHTS_RULE,
    fraction_rule,
    int_rule,
    number_rule,
)
from recforge.training import losses
from recforge.training.batches import EpochSampler
from recforge.training.embedding import Embedding
from recforge.training.trainer import resolve_device

__all__ = ["VBPR"]


class _VBPRModule(nn.Module):
    """User tables ``user`` (gamma_u) and ``user_visual`` (theta_u); item tables ``item``
    (gamma_i) and ``item_bias`` (beta_i), masked for items without interactions; the
    projection ``E`` (``projection``: one row per content dimension) and the content bias
    ``beta'`` (``visual_bias``); the items' content vectors as buffers derived from the
    saved features: the dense columns as one block, the sparse rest as CSR."""

    def __init__(self, n_users: int, n_items: int, feats: sp.csr_matrix, dim: int,
                 visual_dim: int, warm: np.ndarray, init_std: float, gen: torch.Generator):
        super().__init__()
        self.user = Embedding(n_users, dim)
        self.user_visual = Embedding(n_users, visual_dim)
        self.item = Embedding(n_items, dim)
        self.item_bias = Embedding(n_items, 1)
        n_features = feats.shape[1]
        self.projection = nn.Embedding(max(n_features, 1), visual_dim)
        self.visual_bias = nn.Embedding(max(n_features, 1), 1)
        with torch.no_grad():
            for table in (self.user, self.user_visual, self.item, self.projection):
                table.weight.normal_(0.0, init_std, generator=gen)
            self.item_bias.weight.zero_()
            self.visual_bias.weight.zero_()
        f = feats.tocsr()
        self.register_buffer("warm", torch.from_numpy(warm.astype(np.float32)))
        # Dense content vectors (image, audio, text embeddings) are kept as a dense block:
        # a batch's E f_i is then one gather and one matrix product, far faster than
        # bagging hundreds of non-zeros per item; sparse columns (TF-IDF words) stay CSR.
        # Mixed features (words beside a text vector) are split by column: bagging all of
        # them cost 6.7x the fit time of either alone on ml-latest-small.
        # (derived from the saved item features: not saved again with the module)
        cols, block, f = _split_features(f)  # f: the sparse rest, original column numbers
        self.register_buffer("dense_cols", torch.from_numpy(cols.astype(np.int64)),
                             persistent=False)
        self.register_buffer("f_dense", torch.from_numpy(block), persistent=False)
        indptr = f.indptr.astype(np.int64)
        for key, value in (("f_indices", f.indices.astype(np.int64)),
                           ("f_starts", indptr[:-1].copy()),
                           ("f_lengths", np.diff(indptr)),
                           ("f_weights", f.data.astype(np.float32))):
            self.register_buffer(key, torch.from_numpy(value), persistent=False)

    def content(self, items: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``E f_i`` ``[n, visual_dim]`` and ``beta' . f_i`` ``[n]`` of ``items`` (any
        shape; ``None``: every item), from the rows of just those items."""
        flat = (torch.arange(len(self.f_starts), device=self.f_starts.device)
                if items is None else items.reshape(-1))
        rows = self.f_dense if items is None else self.f_dense[flat]
        vec = rows @ self.projection.weight[self.dense_cols]
        bias = (rows @ self.visual_bias.weight[self.dense_cols]).squeeze(-1)
        if len(self.f_indices):
            lengths = self.f_lengths[flat]
            offsets = torch.cumsum(lengths, 0) - lengths
            total = int(lengths.sum())
            pos = (torch.repeat_interleave(self.f_starts[flat] - offsets, lengths)
                   + torch.arange(total, device=flat.device))
            idx, w = self.f_indices[pos], self.f_weights[pos]
            vec = vec + F.embedding_bag(idx, self.projection.weight, offsets, mode="sum",
                                        per_sample_weights=w)
            bias = bias + F.embedding_bag(idx, self.visual_bias.weight, offsets, mode="sum",
                                          per_sample_weights=w).squeeze(1)
        shape = flat.shape if items is None else items.shape
        return vec.reshape(*shape, -1), bias.reshape(shape)

    def item_parts(self, items: torch.Tensor, keep: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """gamma_i and beta_i (zero where ``keep`` is 0) and the content parts of ``items``."""
        k = keep[items]
        gamma = self.item(items) * k.unsqueeze(-1)
        beta = self.item_bias(items).squeeze(-1) * k
        vis, vbias = self.content(items)
        return gamma, beta, vis, vbias

    def all_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item's factor ``[gamma_i ; E f_i]`` and bias ``beta_i + beta' . f_i``."""
        vis, vbias = self.content()
        gamma = self.item.weight * self.warm.unsqueeze(1)
        return (torch.cat([gamma, vis], dim=1),
                self.item_bias.weight.squeeze(1) * self.warm + vbias)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.user(users), self.user_visual(users)], dim=-1)


class VBPR(FeatureModelMixin, SampledGradientRecommender):
    """VBPR (He and McAuley 2016): BPR with an id factor block and a content factor block
    (``E f_i``, a learned projection of the item's content vector) plus a content bias;
    cold items are scored from their content.

    Fit with ``fit(train, valid=None, item_features=...)``; the content vector ``f_i`` is
    the item's feature row with each group scaled to unit length (times
    ``feature_weights``): precomputed vectors (:func:`recforge.data.vectors.item_vectors`),
    text vectors, genres, or several combined.

    Parameters (typical ranges in brackets)
    ----------
    embedding_dim: id factors gamma [16, 256].
    visual_dim: content factors theta / rows of E [8, 256].
    reg: L2 on the batch's gamma_u, theta_u, gamma_i, beta_i (lambda_Theta) [0, 1e-2].
    reg_visual: L2 on E and beta' (lambda_E) [0, 1e-2].
    id_dropout: share of items whose id part is hidden per step (0 in the paper) [0, 0.8].
    feature_weights: weight per feature group (as for ``content``).
    epochs, batch_size, learning_rate, n_negatives, optimizer, weight_decay, lr_schedule,
    valid_metric, patience, eval_every, init_std, device, seed: as for
    :class:`~recforge.models.mf.BPR`.
    """

    name = "vbpr"
    capabilities = Capabilities(uses_item_features=True, requires_item_features=True,
                                folds_in_history=True, similar_items=True, gradient=True, sharded_data=True,
                                sparse_user_updates=True, seeded=True)
    tuning_space = {"learning_rate": ("log", 1e-3, 3e-2), "reg": ("log", 1e-5, 1e-1),
                    "reg_visual": ("log", 1e-6, 1e-2), "visual_dim": ("cat", [16, 32, 64])}
    quick_params = {"epochs": 20}
    #: MovieLens metadata for vbpr carries the TF-IDF words of titles and tags beside their
    #: text vector: cold films on ml-latest-small, Recall@20 0.2655 with both, 0.2556 with
    #: the words alone, 0.2106 with the vector alone (docs/content.md)
    movielens_words = True

    epochs: int = 40
    batch_size: int = 2048
    learning_rate: float = 0.005
    reg: float = 0.01
    init_std: float = 0.1
    visual_dim: int = 32
    reg_visual: float = 0.0001
    id_dropout: float = 0.0
    feature_weights: dict[str, float] | None = None

    param_rules = {**SampledGradientRecommender.param_rules,
                   "visual_dim": int_rule(1, MAX_DIM),
                   "reg_visual": number_rule(0, MAX_NUMBER),
                   "id_dropout": fraction_rule(), "feature_weights": WEIGHTS_RULE}

    # ----------------------------------------------------------------------------------
    def _setup(self, train: Interactions, options: FitOptions) -> None:
        self.item_features_ = options.item_features  # aligned by FeatureModelMixin.fit
        self.warm_items_ = self._stats.item_counts > 0  # over all ranks when sharded

    def _signature_extra(self) -> dict[str, Any]:
        # the content vectors are the module's buffers: a checkpoint fits these only
        return {"item_features": _features_fingerprint(self.item_features_)}

    def user_parameter_names(self) -> list[str]:
        return ["user.weight", "user_visual.weight"]

    def _sampler(self, train: Interactions, shard: tuple[int, int] = (0, 1)) -> EpochSampler:
        # Negatives among items with interactions: cold items have nothing to learn from.
        return EpochSampler(train, int(self.batch_size), int(self.n_negatives),
                            negative_sampling="observed", shard=shard)

    def _content_matrix(self) -> sp.csr_matrix:
        f = self.item_features_
        weights = ({k: v for k, v in self.feature_weights.items() if k in set(f.groups)}
                   if self.feature_weights else None)
        return f.normalized(weights)

    def _build(self) -> nn.Module:
        return _VBPRModule(self.n_users, self.n_items, self._content_matrix(),
                           int(self.embedding_dim), int(self.visual_dim),
                           np.asarray(self.warm_items_), float(self.init_std),
                           self._generator())

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m: _VBPRModule = self.module_
        keep = m.warm
        if self.id_dropout > 0:
            keep = keep * (torch.rand(self.n_items, device=keep.device)
                           >= self.id_dropout).float()
        items = torch.cat([batch["items"].unsqueeze(1), batch["negatives"]], dim=1)
        gu, tu = m.user(batch["users"]), m.user_visual(batch["users"])  # [B, d], [B, d']
        gi, bi, vis, vbias = m.item_parts(items, keep)  # [B, 1+N, ...]
        scores = ((gu.unsqueeze(1) * gi).sum(-1) + (tu.unsqueeze(1) * vis).sum(-1)
                  + bi + vbias)
        rank_loss = losses.bpr(scores[:, 0], scores[:, 1:])
        batch_reg = losses.l2(gu, tu, gi.flatten(0, 1), bi.reshape(-1, 1))
        content_reg = 0.5 * (losses.sum_of_squares(m.projection.weight)
                             + losses.sum_of_squares(m.visual_bias.weight)) / gu.shape[0]
        return (rank_loss + float(self.reg) * batch_reg
                + float(self.reg_visual) * content_reg)

    def _prepare_scoring(self) -> None:
        with torch.no_grad():
            self._item_vec, self._item_b = self.module_.all_items()

    def _score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.module_.user_vectors(users) @ self._item_vec.T + self._item_b

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        """Fold-in: an implicit least-squares user vector ``[gamma_u ; theta_u]`` against
        the item factors (as ``hybrid_bpr`` does; ``values`` are not used)."""
        return fold_in_scores(self._item_vec, self._item_b, items)

    def _item_embeddings(self) -> torch.Tensor:
        return self._item_vec.detach().cpu()

    # ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        state = {f"module.{k}": v for k, v in self.module_.state_dict().items()}
        state["warm_items"] = torch.from_numpy(np.asarray(self.warm_items_, np.uint8))
        state.update(_save_features("item_features", self.item_features_)[0])
        return state

    def _extra_scalars(self) -> dict[str, Any]:
        return _save_features("item_features", self.item_features_)[1]

    scoring_params = {**GradientRecommender.scoring_params}

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        self._restore_extra(extra)
        spec: StateSpec = {"warm_items": Array((self.n_items,), torch.uint8, 0, 2)}
        spec.update(_features_spec("item_features", extra, self.n_items))

        def build(checked: dict[str, torch.Tensor]) -> nn.Module:
            self._restore_inputs(checked, extra)  # the buffers derive from these
            return self._build()

        spec["module"] = Module(build, "module.")
        return spec

    def _restore_inputs(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.warm_items_ = state["warm_items"].numpy().astype(bool)
        self.item_features_ = _load_features("item_features", self.items_, state, extra)

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.device_ = resolve_device(self.device)
        self._restore_inputs(state, extra)
        module = self._build()
        module.load_state_dict({k[len("module."):]: v for k, v in state.items()
                                if k.startswith("module.")})
        self.module_ = module.to(self.device_).eval()
        self._prepare_scoring()
