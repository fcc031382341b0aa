"""Caser (Tang & Wang, WSDM 2018): convolutions over the recent items' embedding matrix.

At each position the last ``window`` items' embeddings form an ``L x d`` matrix (``L`` =
``window``; positions before the first item are zero rows). *Horizontal* filters of every
height ``h = 1..L`` (``n_h`` each, width ``d``: a ``Conv1d`` over the items) look for
union-level and point-level sequential patterns, each max-pooled over its ``L - h + 1``
places; *vertical* filters (``n_v``, ``L x 1``) are weighted sums of the ``L`` rows. Their
concatenation, after dropout, goes through a fully connected layer with ReLU to ``z``
(``d``); the score of item ``i`` is ``[z, P_u] . W_i + b_i`` with the user's embedding
``P_u`` and an output item table ``W`` (``2d`` columns) and bias ``b`` of its own, as in the
paper. A history the model was not trained on (``recommend_for_history``) has no user
vector: ``P_u = 0``.

Training predicts the next item at every position of the user's last ``max_len`` items
(the paper's sliding windows, all at once) with the losses of
:class:`~recforge.models.sequential.SequentialRecommender` (the paper's is ``bce`` with
sampled negatives; the default, ``sampled_softmax``, learned faster here).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recforge.models.params import ParamRule, int_rule
from recforge.models.sequential import SequentialRecommender
from recforge.training.dropout import Dropout
from recforge.training.embedding import Embedding

__all__ = ["Caser"]


class _Caser(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, window: int, n_h: int,
                 n_v: int, dropout: float, init_std: float, gen: torch.Generator) -> None:
        super().__init__()
        self.window = window
        self.item = Embedding(n_items + 1, dim)
        self.user = Embedding(n_users, dim)
        self.output = Embedding(n_items + 1, 2 * dim)
        self.output_bias = Embedding(n_items + 1, 1)
        with torch.no_grad():
            for emb in (self.item, self.user, self.output):
                emb.weight.normal_(0.0, init_std, generator=gen)
            self.output_bias.weight.zero_()
        self.horizontal = nn.ModuleList(nn.Conv1d(dim, n_h, h) for h in range(1, window + 1))
        self.vertical = nn.Parameter(torch.empty(n_v, window))
        nn.init.normal_(self.vertical, 0.0, 1.0 / window)
        self.fc = nn.Linear(n_h * window + n_v * dim, dim)
        self.drop = Dropout(dropout)

    def encode(self, inputs: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        b, n = inputs.shape
        win = self.window
        # the last `window` items up to each position, zero rows before the first item
        rows = F.pad(inputs, (win - 1, 0)).unfold(1, win, 1).reshape(b * n, win)
        return self._states(rows, users, b, n)

    def encode_last(self, inputs: torch.Tensor, users: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """``encode(inputs, users)`` at each row's last item only ``[B, d']``: one window
        per row instead of one per position."""
        win = self.window
        last = ((inputs > 0).sum(1) - 1).clamp(min=0)
        cols = last.view(-1, 1) + torch.arange(win, device=inputs.device).view(1, -1)
        rows = F.pad(inputs, (win - 1, 0)).gather(1, cols)  # the window ending at `last`
        return self._states(rows, users, inputs.shape[0], 1)[:, 0]

    def _states(self, rows: torch.Tensor, users: torch.Tensor | None, b: int, n: int
                ) -> torch.Tensor:
        """The states ``[b, n, d']`` of ``b * n`` windows ``rows`` (``[b * n, window]``)."""
        emb = self.item(rows) * (rows > 0).unsqueeze(-1).to(self.item.weight.dtype)
        chans = emb.transpose(1, 2)  # [b*n, d, L]
        horizontal = [F.relu(conv(chans)).amax(dim=2) for conv in self.horizontal]
        vertical = torch.einsum("vl,bld->bvd", self.vertical, emb).reshape(b * n, -1)
        z = F.relu(self.fc(self.drop(torch.cat([*horizontal, vertical], dim=1))))
        z = z.view(b, n, -1)
        if users is None:
            pu = z.new_zeros(b, n, z.shape[-1])
        else:
            pu = self.user(users).unsqueeze(1).expand(b, n, -1)
        return torch.cat([z, pu, z.new_ones(b, n, 1)], dim=-1)

    def item_table(self) -> torch.Tensor:
        return torch.cat([self.output.weight, self.output_bias.weight], dim=1)


class Caser(SequentialRecommender):
    """Caser on the shared trainer.

    Parameters (typical ranges in brackets)
    ----------
    embedding_dim: [32, 128]. window: the recent items each prediction reads (the paper's
    ``L``) [3, 10]. n_h: horizontal filters per height [4, 64]. n_v: vertical filters
    [1, 16]. dropout: before the fully connected layer [0, 0.5].
    max_len: positions of each user's history trained at once; loss, n_negatives, ...: see
    :class:`~recforge.models.sequential.SequentialRecommender`.
    """

    name = "caser"
    window: int = 5
    n_h: int = 16
    n_v: int = 4
    dropout: float = 0.5
    embedding_dim: int = 50
    #: the full softmax beat 256 shared uniform negatives on ml-100k next-item, 20 epochs at
    #: max_len 50: NDCG@10 0.0463 vs 0.0300 (pop 0.0442, sasrec 0.0875, sknn 0.0899)
    loss: str = "ce"
    #: Adam 0.01 with a cosine rate over the 20 epochs, chosen across ml-100k, ml-1m-seq
    #: and two generated shapes (docs/benchmarks.md, "Next-item defaults across datasets"):
    #: the shared 0.001 constant was far from converged on every one (test NDCG@10 ml-100k
    #: 0.0426 -> 0.0992, gen-sessions 0.1069 -> 0.1361, gen-long 0.0595 -> 0.1198)
    learning_rate: float = 0.01
    lr_schedule: str | None = "cosine"
    needs_users = True
    #: the user table is read by lookup, but this model claims no row-sparse updates
    user_tables_read_by_lookup = False

    param_rules: ClassVar[dict[str, ParamRule]] = {
        **SequentialRecommender.param_rules, "window": int_rule(1, 64),
        "n_h": int_rule(1, 1024), "n_v": int_rule(1, 1024)}
    scoring_params = {**SequentialRecommender.scoring_params, "window": int_rule(1, 64),
                      "n_h": int_rule(1, 1024), "n_v": int_rule(1, 1024)}
    tuning_space = {"embedding_dim": ("cat", [32, 50, 100]), "window": ("int", 3, 10),
                    "n_h": ("cat", [4, 16, 64]), "n_v": ("cat", [1, 4, 16]),
                    "dropout": ("float", 0.0, 0.5), "learning_rate": ("log", 3e-4, 1e-2)}
    #: within quickstart's 3 minutes for every model
    quick_params = {"epochs": 3, "max_len": 20}

    def _build(self) -> nn.Module:
        with self._seeded():
            return _Caser(self.n_users, self.n_items, int(self.embedding_dim),
                          int(self.window), int(self.n_h), int(self.n_v), float(self.dropout),
                          float(self.init_std), self._generator())
