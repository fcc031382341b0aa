"""GRU4Rec (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018).

A GRU reads the user's items in order; the hidden state after item ``t`` scores item ``i``
as ``h_t . E[i]`` with the item table ``E`` shared between input and output (the
"constrained embedding" of the authors' PyTorch code). Dropout on the input embeddings
and on the hidden states.

Losses (``loss``), with the negatives of the 2018 paper: ``bpr_max`` (default) and
``sampled_softmax`` over *in-batch* negatives (each sequence's last target in the batch,
the items the other sessions of a GRU4Rec mini-batch predict) plus ``n_negatives``
additional items shared by the batch, drawn proportional to ``support ** sample_alpha``
(``sample_alpha=0``: uniform; 1: popularity); BPR-max is
``-log sum_j s_j sigmoid(r_i - r_j) + bpr_reg * sum_j s_j r_j^2`` with ``s`` the softmax
of the negatives' scores (:func:`recforge.training.next_item_losses.bpr_max`); the
softmax is, as in the authors' code, not log-q corrected. ``ce``: full softmax over every
item.

Right-padded windows (:mod:`recforge.training.sequence_batches`) keep the recurrence exact:
padding comes after a sequence's items and never enters its states.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from recforge.models.params import ParamRule, choice_rule, int_rule, number_rule
from recforge.models.sequential import SequentialRecommender
from recforge.training import next_item_losses as nil
from recforge.training.contracts import Batch
from recforge.training.dropout import Dropout
from recforge.training.embedding import Embedding
from recforge.training.sequence_batches import SequenceSampler

__all__ = ["GRU4Rec"]


class _GRU4Rec(nn.Module):
    def __init__(self, n_items: int, dim: int, layers: int, dropout_input: float,
                 dropout_hidden: float, init_std: float, gen: torch.Generator) -> None:
        super().__init__()
        self.item = Embedding(n_items + 1, dim)
        with torch.no_grad():
            self.item.weight.normal_(0.0, init_std, generator=gen)
        self.gru = nn.GRU(dim, dim, num_layers=layers, batch_first=True,
                          dropout=dropout_hidden if layers > 1 else 0.0)
        self.drop_in = Dropout(dropout_input)
        self.drop_out = Dropout(dropout_hidden)

    def encode(self, inputs: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        states, _ = self.gru(self.drop_in(self.item(inputs)))
        return self.drop_out(states)

    def item_table(self) -> torch.Tensor:
        return self.item.weight


class GRU4Rec(SequentialRecommender):
    """GRU4Rec on the shared trainer.

    Parameters (typical ranges in brackets)
    ----------
    embedding_dim: item vectors and GRU state [64, 256]. n_layers: GRU layers [1, 2].
    dropout: on the input embeddings [0, 0.5]; dropout_hidden: on the states [0, 0.5].
    loss: ``bpr_max``, ``sampled_softmax`` or ``ce``. n_negatives: additional negatives
    per batch [64, 2048]; sample_alpha: their popularity exponent [0, 1]; bpr_reg: BPR-max's
    score regularisation [0, 2].
    max_len, epochs, batch_size, learning_rate, optimizer, ...: see
    :class:`~recforge.models.sequential.SequentialRecommender`.
    """

    name = "gru4rec"
    n_layers: int = 1
    dropout: float = 0.2
    dropout_hidden: float = 0.1
    #: cross-entropy over all items (one of the authors' two losses) beat BPR-max by half
    #: on ml-100k next-item, 20 epochs at max_len 50: NDCG@10 0.0652 vs 0.0450 (pop 0.0442)
    loss: str = "ce"
    n_negatives: int = 256
    sample_alpha: float = 0.5
    bpr_reg: float = 1.0
    embedding_dim: int = 128
    #: 64 sequences a step at Adam 0.005 with a cosine rate over 30 epochs, chosen across
    #: ml-100k, ml-1m-seq and two generated shapes (docs/benchmarks.md, "Next-item
    #: defaults across datasets"): the earlier 128 / 0.002 / constant / 20 epochs was still
    #: learning at its last epoch on every one of them (ml-100k NDCG@10 0.0633 -> 0.0890)
    batch_size: int = 64
    learning_rate: float = 0.005
    lr_schedule: str | None = "cosine"
    epochs: int = 30

    losses: ClassVar[tuple[str, ...]] = ("bpr_max", "sampled_softmax", "ce")
    param_rules: ClassVar[dict[str, ParamRule]] = {
        **SequentialRecommender.param_rules, "loss": choice_rule("bpr_max", "sampled_softmax", "ce"),
        "n_layers": int_rule(1, 16),
        "dropout_hidden": number_rule(0, 0.95), "sample_alpha": number_rule(0, 1),
        "bpr_reg": number_rule(0, 1e6)}
    scoring_params = {**SequentialRecommender.scoring_params, "n_layers": int_rule(1, 16)}
    tuning_space = {"embedding_dim": ("cat", [64, 128, 256]), "dropout": ("float", 0.0, 0.5),
                    "learning_rate": ("log", 3e-4, 1e-2), "bpr_reg": ("float", 0.0, 2.0),
                    "sample_alpha": ("float", 0.0, 1.0)}
    #: within quickstart's 3 minutes for every model (ml-100k: 2 epochs fit in 4.5 s)
    quick_params = {"epochs": 3, "max_len": 20}

    def _setup(self, train, options) -> None:  # type: ignore[no-untyped-def]
        super()._setup(train, options)
        weights = (self._stats.item_counts.astype(np.float64) + 1.0) ** float(self.sample_alpha)
        self._popularity = weights

    def _sampler(self, train, shard=(0, 1)) -> SequenceSampler:  # type: ignore[no-untyped-def]
        windows = self._train_windows
        del self._train_windows
        return SequenceSampler(
            windows, int(self.batch_size), self.n_items, negatives=self._negatives_kind(),
            n_negatives=int(self.n_negatives),
            popularity=self._popularity if float(self.sample_alpha) > 0 else None,
            sort_chunk=64 if self.sort_by_length else 0, shard=shard,
            **self._window_options())

    def _loss(self, hidden: torch.Tensor, targets: torch.Tensor, items: torch.Tensor,
              batch: Batch, mask: torch.Tensor) -> torch.Tensor:
        if self.loss == "ce":
            return nil.full_softmax(hidden, targets, items)
        # in-batch negatives: each sequence's last target in the batch, with the samples
        last = batch["targets"].gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0))[:, 0]
        negatives = torch.cat([batch["negatives"], last])
        if self.loss == "bpr_max":
            return nil.bpr_max(hidden, targets, items, negatives, float(self.bpr_reg))
        return nil.sampled_softmax(hidden, targets, items, negatives)

    def private_loss(self, batch: Batch) -> torch.Tensor:
        """Each sampled user's mean cross-entropy over their window (``dp_epsilon``)."""
        return self._private_window_loss(batch)

    def _train_private(self, train, valid, context) -> None:  # type: ignore[no-untyped-def]
        """Opacus cannot take each user's gradient of ``nn.GRU`` (one fused kernel over
        the sequence): a private fit trains Opacus's ``DPGRU`` (the same weights, the
        same state-dict names; a cell per position whose per-user gradients Opacus sums),
        copied back into the ``nn.GRU`` afterwards for scoring."""
        from opacus.layers import DPGRU  # lazy: Opacus, an optional extra

        fused = self.module_.gru
        cells = DPGRU(fused.input_size, fused.hidden_size, num_layers=fused.num_layers,
                      batch_first=True, dropout=fused.dropout).to(fused.weight_ih_l0.device)
        cells.load_state_dict(fused.state_dict())
        self.module_.gru = cells
        try:
            super()._train_private(train, valid, context)
        finally:
            fused.load_state_dict(cells.state_dict())
            self.module_.gru = fused

    def _build(self) -> nn.Module:
        with self._seeded():
            return _GRU4Rec(self.n_items, int(self.embedding_dim), int(self.n_layers),
                            float(self.dropout), float(self.dropout_hidden),
                            float(self.init_std), self._generator())
