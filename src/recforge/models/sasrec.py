"""SASRec (Kang & McAuley, ICDM 2018) and gSASRec (Petrov & Macdonald, RecSys 2023).

Causal self-attention over a user's last ``max_len`` items: item embeddings (scaled by
``sqrt(d)``) plus learned positional embeddings, dropout, ``n_blocks`` Pre-LN Transformer
blocks (``x + attention(LN(x))``, ``x + FFN(LN(x))``) and a final LayerNorm; the item
table is shared between input and output (a position's score for item ``i`` is its state
times ``E[i]``). Attention is torch's fused ``scaled_dot_product_attention`` with
``is_causal=True``: windows are right-padded (:mod:`recforge.training.sequence_batches`),
so a real position never sees a padding one and no key mask is needed.

Positions count back from the latest item (position 0: the most recent item read), as in
the paper's left-padded windows, whose last column is always the latest item.

Losses (``loss``): ``ce`` (full softmax over all items, the default), ``bce`` with one
negative per position (the SASRec paper), ``sampled_softmax`` with ``n_negatives`` shared
by the batch (log-q corrected with ``negative_sampling="popularity"``) and ``gbce``
(gSASRec: ``n_negatives`` per sequence, calibration ``gbce_t``). See
:mod:`recforge.training.next_item_losses`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recforge.errors import ConfigError
from recforge.models.params import ParamRule, int_rule, number_rule
from recforge.models.sequential import SequentialRecommender, sqrt_dim
from recforge.training.contracts import Batch
from recforge.training.dropout import Dropout
from recforge.training.embedding import Embedding

__all__ = ["SASRec"]

MAX_BLOCKS = 64


class _Block(nn.Module):
    """One Pre-LN Transformer block with causal attention."""

    def __init__(self, dim: int, heads: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, dim)
        self.ff2 = nn.Linear(dim, dim)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], is_causal=True,
            dropout_p=self.attn_dropout if self.training else 0.0)
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.norm2(x))))))

    def forward_last(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The block's output ``[B, d]`` at position ``last[b]`` of each row only: the
        query of that position, keys and values of positions ``0..last[b]`` (what the
        causal mask lets it read), the FFN on that one position. Equal to
        ``forward(x)[b, last[b]]`` to float rounding, at a fraction of the cost."""
        b, n, d = x.shape
        h = self.heads
        y = self.norm1(x)
        at = last.view(-1, 1, 1).expand(-1, 1, d)
        w, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(y.gather(1, at), w[:d], bias[:d]).view(b, 1, h, d // h).transpose(1, 2)
        kv = F.linear(y, w[d:], bias[d:]).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)
        mask = (torch.arange(n, device=x.device).view(1, n) <= last.view(-1, 1)).view(b, 1, 1, n)
        att = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
        x = x.gather(1, at) + self.drop(self.out(att.transpose(1, 2).reshape(b, 1, d)))
        x = x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.norm2(x))))))
        return x[:, 0]


class _SASRec(nn.Module):
    def __init__(self, n_items: int, dim: int, blocks: int, heads: int, max_len: int,
                 dropout: float, attn_dropout: float, init_std: float,
                 gen: torch.Generator) -> None:
        super().__init__()
        self.scale = sqrt_dim(dim)
        self.item = Embedding(n_items + 1, dim)
        self.position = Embedding(max_len, dim)
        with torch.no_grad():
            self.item.weight.normal_(0.0, init_std, generator=gen)
            self.position.weight.normal_(0.0, init_std, generator=gen)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout, attn_dropout)
                                    for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)

    def _embed(self, inputs: torch.Tensor) -> torch.Tensor:
        # positions count back from the latest item (0), as SASRec's left-padded windows
        # have them: the most recent items, which matter most, always train the same rows
        n = inputs.shape[1]
        lengths = (inputs > 0).sum(1, keepdim=True)
        back = (lengths - 1 - torch.arange(n, device=inputs.device)).clamp(min=0)
        return self.drop(self.item(inputs) * self.scale + self.position(back))

    def encode(self, inputs: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        x = self._embed(inputs)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def encode_last(self, inputs: torch.Tensor, users: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """The state ``[B, d]`` after each right-padded window's last item (what scoring
        reads): ``encode(inputs)`` at that position, with the last block and the final
        norm run for that position only (every other block's output feeds the next
        block's keys and values, so those run over all positions)."""
        last = ((inputs > 0).sum(1) - 1).clamp(min=0)
        x = self._embed(inputs)
        for block in self.blocks[:-1]:
            x = block(x)
        return self.norm(self.blocks[-1].forward_last(x, last))

    def item_table(self) -> torch.Tensor:
        return self.item.weight


class SASRec(SequentialRecommender):
    """SASRec / gSASRec on the shared trainer.

    Parameters (typical ranges in brackets)
    ----------
    embedding_dim: [32, 256] (must be a multiple of ``n_heads``).
    n_blocks: Transformer blocks [1, 4]. n_heads: attention heads [1, 4].
    max_len: items of history read [50, 200]. dropout: [0, 0.5] (embeddings, residual
        branches, FFN). attention_dropout: on the attention weights [0, 0.5].
    loss, n_negatives, gbce_t, negative_sampling, precision, sort_by_length: see
        :class:`~recforge.models.sequential.SequentialRecommender`.
    epochs (40), batch_size (sequences per step, 64), learning_rate (0.003), lr_schedule
    ("cosine"), reg (unused), optimizer, weight_decay, valid_metric, patience, eval_every,
    init_std, device, seed.
    """

    name = "sasrec"
    n_blocks: int = 2
    n_heads: int = 1
    attention_dropout: float = 0.0
    #: the full softmax learned fastest per CPU second on ml-1m-seq and ml-100k (validation
    #: NDCG@10 curves in benchmarks/results/sequential.json and docs/models.md); the sampled
    #: losses with many uniform negatives sat at popularity's level for tens of epochs
    loss: str = "ce"
    learning_rate: float = 0.003
    #: 64 sequences a step with a cosine rate over 40 epochs, chosen across ml-100k,
    #: ml-1m-seq and two generated shapes (docs/benchmarks.md, "Next-item defaults across
    #: datasets"): test NDCG@10 ml-1m-seq 0.1619 -> 0.1725, ml-100k 0.0889 -> 0.0926,
    #: gen-long 0.1885 -> 0.1950, gen-sessions 0.2816 -> 0.2654 (the worst case: 90 % of
    #: that set's best row); the earlier 128 / constant / 20 epochs kept 93-97 %
    batch_size: int = 64
    lr_schedule: str | None = "cosine"
    epochs: int = 40
    #: bfloat16 training where the device computes it natively (same validation curve per
    #: epoch on ml-1m-seq, 2.5x less CPU per epoch with the fused full softmax)
    precision: str = "auto"

    param_rules: ClassVar[dict[str, ParamRule]] = {
        **SequentialRecommender.param_rules, "n_blocks": int_rule(1, MAX_BLOCKS),
        "n_heads": int_rule(1, 64), "attention_dropout": number_rule(0, 0.95)}
    scoring_params = {**SequentialRecommender.scoring_params,
                      "n_blocks": int_rule(1, MAX_BLOCKS), "n_heads": int_rule(1, 64)}
    tuning_space = {"embedding_dim": ("cat", [32, 64, 128]), "n_blocks": ("int", 1, 3),
                    "dropout": ("float", 0.0, 0.5), "learning_rate": ("log", 3e-4, 3e-3),
                    "max_len": ("cat", [50, 100, 200])}
    #: the full softmax learned fastest in short runs (ml-100k, 8 epochs, max_len 50, lr
    #: 0.005: NDCG@10 0.044 against popularity's 0.023, sampled softmax 0.027, gBCE 0.022);
    #: quickstart's budget (3 minutes for every model) allows 3 epochs of 20 positions:
    #: ml-100k next-item NDCG@10 0.061 (seen excluded; pop 0.044), fit 3.6 s for 2 epochs
    quick_params = {"epochs": 3, "max_len": 20, "loss": "ce", "learning_rate": 0.005,
                    "batch_size": 128, "lr_schedule": None}

    def private_loss(self, batch: Batch) -> torch.Tensor:
        """Each sampled user's mean cross-entropy over their window (``dp_epsilon``)."""
        return self._private_window_loss(batch)

    def _validate_params(self) -> None:
        super()._validate_params()
        if int(self.embedding_dim) % int(self.n_heads):
            raise ConfigError(f"{self.name}: embedding_dim ({self.embedding_dim}) must be a "
                              f"multiple of n_heads ({self.n_heads})")

    def _build(self) -> nn.Module:
        dim, heads = int(self.embedding_dim), int(self.n_heads)
        if dim % heads:
            raise ConfigError(f"embedding_dim ({dim}) must be a multiple of n_heads ({heads})")
        with self._seeded():
            return _SASRec(self.n_items, dim, int(self.n_blocks), heads, int(self.max_len),
                           float(self.dropout), float(self.attention_dropout),
                           float(self.init_std), self._generator())
