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
sampled negatives; the default, ``ce``, learned faster here).

With ``dp_epsilon`` it trains with differential privacy per user (Opacus; ``loss="ce"``):
the private fit trains the filters as the linear layers they are over windows kept
batch-first by user (:func:`_patch_linear`, :func:`_rows_linear`), since Opacus
takes a per-user gradient from a layer input's first dimension, and copies the weights
back into the convolutions that score and are saved.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recforge.models.params import ParamRule, int_rule
from recforge.models.sequential import SequentialRecommender
from recforge.training.contracts import Batch
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
        z = F.relu(self.fc(self.drop(self._filters(emb)))).view(b, n, -1)
        return self._with_user(z, users)

    def _filters(self, emb: torch.Tensor) -> torch.Tensor:
        """The horizontal (max-pooled) and vertical filters' outputs ``[..., n_h * L +
        n_v * d]`` of windows ``emb`` ``[..., L, d]``."""
        if isinstance(self.vertical, nn.Linear):  # a private fit's layers
            d = emb.shape[-1]
            horizontal = [F.relu(f(emb.unfold(-2, f.in_features // d, 1).flatten(-2)))
                          .amax(dim=-2) for f in self.horizontal]  # patches [..., P, d*h]
            vertical = self.vertical(emb.transpose(-1, -2)).transpose(-1, -2).flatten(-2)
            return torch.cat([*horizontal, vertical], dim=-1)
        lead, (win, d) = emb.shape[:-2], emb.shape[-2:]
        emb = emb.reshape(-1, win, d)
        chans = emb.transpose(1, 2)  # [N, d, L]
        horizontal = [F.relu(conv(chans)).amax(dim=2) for conv in self.horizontal]
        vertical = torch.einsum("vl,bld->bvd", self.vertical, emb).flatten(1)
        return torch.cat([*horizontal, vertical], dim=1).view(*lead, -1)

    def _with_user(self, z: torch.Tensor, users: torch.Tensor | None) -> torch.Tensor:
        """``[z, P_u, 1]`` per position (``P_u = 0`` without users)."""
        b, n = z.shape[:2]
        pu = z.new_zeros(b, n, z.shape[-1]) if users is None else \
            self.user(users).unsqueeze(1).expand(b, n, -1)
        return torch.cat([z, pu, z.new_ones(b, n, 1)], dim=-1)

    def item_table(self) -> torch.Tensor:
        return torch.cat([self.output.weight, self.output_bias.weight], dim=1)

    def encode_per_user(self, inputs: torch.Tensor, users: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """``encode(inputs, users)`` with every layer's input batch-first by user
        (``[B, positions, ...]``): what a private fit runs, since Opacus takes each user's
        gradient from the first dimension of a layer's input (``encode`` folds the
        positions into it). Per-user gradients also need the filters as linear layers
        (:func:`_patch_linear`, :func:`_rows_linear`), which the private fit swaps in
        (:meth:`Caser._train_private`)."""
        rows = F.pad(inputs, (self.window - 1, 0)).unfold(1, self.window, 1)  # [b, n, L]
        emb = self.item(rows) * (rows > 0).unsqueeze(-1).to(self.item.weight.dtype)
        return self._with_user(F.relu(self.fc(self.drop(self._filters(emb)))), users)


def _patch_linear(conv: nn.Conv1d) -> nn.Linear:
    """A horizontal ``Conv1d`` (``n_h`` filters of height ``h`` over ``d`` channels) as the
    linear map of each unfolded ``h x d`` patch that it is: the same weights,
    ``conv.weight.reshape(n_h, d * h)`` (:meth:`_Caser._filters` unfolds the patches). A
    plain ``nn.Linear``, so that Opacus takes its per-user gradients with its own exact
    sampler."""
    n_h, d, h = conv.weight.shape
    linear = nn.Linear(d * h, n_h, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.reshape(n_h, d * h))
        linear.bias.copy_(conv.bias)
    return linear


def _rows_linear(vertical: torch.Tensor) -> nn.Linear:
    """The vertical filters ``[n_v, L]`` as a linear map over a window's ``L`` rows."""
    n_v, window = vertical.shape
    linear = nn.Linear(window, n_v, bias=False, device=vertical.device,
                       dtype=vertical.dtype)
    with torch.no_grad():
        linear.weight.copy_(vertical)
    return linear


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

    def private_loss(self, batch: Batch) -> torch.Tensor:
        """Each sampled user's mean cross-entropy over their window (``dp_epsilon``)."""
        return self._private_window_loss(batch)

    def _private_encode(self, inputs: torch.Tensor, users: torch.Tensor | None
                        ) -> torch.Tensor:
        return self.module_.encode_per_user(inputs, users)

    def _private_item_tables(self) -> list[torch.nn.Parameter]:
        """The output table and its bias: :meth:`_Caser.item_table` (the input table is
        another one, read by lookup)."""
        return [self.module_.output.weight, self.module_.output_bias.weight]

    def _train_private(self, train, valid, context) -> None:  # type: ignore[no-untyped-def]
        """Opacus takes each user's gradient from a layer's first input dimension, which
        ``Conv1d`` over the windows of every position (``[B * positions, d, L]``) does
        not give, and cannot see the vertical filters (a bare parameter): a private fit
        trains the same weights as linear layers over batch-first windows
        (:meth:`_Caser.encode_per_user`), copied back afterwards; the saved model and its
        scoring are unchanged."""
        module = self.module_
        convs, vertical = module.horizontal, module.vertical
        module.horizontal = nn.ModuleList(_patch_linear(conv) for conv in convs)
        del module.vertical
        module.vertical = _rows_linear(vertical.detach())
        try:
            super()._train_private(train, valid, context)
        finally:
            with torch.no_grad():
                for linear, conv in zip(module.horizontal, convs, strict=True):
                    conv.weight.copy_(linear.weight.view_as(conv.weight))
                    conv.bias.copy_(linear.bias)
                vertical.copy_(module.vertical.weight)
            del module.vertical
            module.horizontal = convs
            module.vertical = vertical

    def _build(self) -> nn.Module:
        with self._seeded():
            return _Caser(self.n_users, self.n_items, int(self.embedding_dim),
                          int(self.window), int(self.n_h), int(self.n_v), float(self.dropout),
                          float(self.init_std), self._generator())
