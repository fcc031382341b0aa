"""LightGCN (He et al., SIGIR 2020): linear graph convolution on the user-item graph.

The bipartite graph's adjacency ``A = [[0, R], [R^T, 0]]`` is normalised symmetrically,
``Â = D^-1/2 A D^-1/2``, and held as one torch sparse CSR matrix. Layer ``k+1`` is
``E^(k+1) = Â E^(k)``; the final embeddings are the mean of layers ``0..K``; the score of
``(u, i)`` is the dot product of the final embeddings. Training uses the BPR loss with L2
on the batch's layer-0 ("ego") embeddings, as in the paper.

Because ``Â`` is symmetric, the backward pass of a propagation step is the same sparse
product as the forward pass; a small autograd function uses that, so each layer costs one
sparse x dense product forward and one backward, with no transposed copy of ``Â``.

After training, the propagated embeddings are computed once and cached: scoring a request
is a single dense product, never a propagation.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recforge.models.contracts import Capabilities
from recforge.models.gradient import GradientRecommender, SampledGradientRecommender
from recforge.models.params import int_rule
from recforge.ranking import torch_csr
from recforge.training import losses
from recforge.training.embedding import lookup

#: The most propagation layers (beyond a few, every embedding converges to the same
#: vector; the bound keeps a doctored saved model from propagating for ever on load).
MAX_LAYERS = 64


class _SymmetricSpMM(torch.autograd.Function):
    """``Â @ X`` for a symmetric sparse ``Â``: the gradient is ``Â @ grad``."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, ctx.adj @ grad


def normalized_adjacency(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1/2 [[0, R], [R^T, 0]] D^-1/2`` for a users x items matrix ``R`` (binarised)."""
    r = interactions.tocsr().astype(np.float32)
    r.data[:] = 1.0
    n_users, n_items = r.shape
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    nz = deg > 0
    inv_sqrt[nz] = deg[nz] ** -0.5
    d = sp.diags(inv_sqrt.astype(np.float32))
    out = (d @ adj @ d).tocsr()
    out.sort_indices()
    return out


class _LightGCN(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int,
                 adjacency: sp.csr_matrix, gen: torch.Generator, init_std: float):
        super().__init__()
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        self.embedding = nn.Embedding(n_users + n_items, dim)
        with torch.no_grad():
            self.embedding.weight.normal_(0.0, init_std, generator=gen)
        self.adj = torch_csr(adjacency.indptr, adjacency.indices, adjacency.data,
                             adjacency.shape)

    def _apply(self, fn, recurse=True):  # keep the sparse adjacency on the module's device
        super()._apply(fn, recurse)
        self.adj = fn(self.adj)
        return self

    def propagate(self) -> torch.Tensor:
        x = self.embedding.weight
        total = x
        for _ in range(self.n_layers):
            x = _SymmetricSpMM.apply(self.adj, x)
            total = total + x
        return total / (self.n_layers + 1)

    def split(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return emb[: self.n_users], emb[self.n_users:]


class LightGCN(SampledGradientRecommender):
    """LightGCN with BPR loss.

    Parameters (typical ranges in brackets)
    ----------
    embedding_dim: [32, 256].
    n_layers: propagation layers [1, 4].
    epochs, batch_size: the defaults use large batches (and a matching learning rate) so
        that an epoch is a few dozen propagations and training converges in minutes on a
        CPU; the paper used 2,048 and 1e-3 on a GPU.
    learning_rate: [1e-4, 5e-2].
    reg: L2 on the batch's layer-0 embeddings [1e-5, 1e-3] (paper: 1e-4).
    n_negatives: negatives per positive, each a BPR pair [1, 8].
    optimizer, weight_decay, lr_schedule, valid_metric, patience, eval_every, init_std,
    device, seed.
    """

    name = "lightgcn"
    #: loading propagates the saved embeddings n_layers times
    scoring_params = {**GradientRecommender.scoring_params, "n_layers": int_rule(0, MAX_LAYERS)}
    #: Every step propagates over the whole user-item graph: each rank needs all events
    #: (no ``sharded_data``), and reads the user rows whole (no ``sparse_user_updates``).
    capabilities = Capabilities(similar_items=True, gradient=True, seeded=True)
    tuning_space = {"n_layers": ("int", 1, 4), "learning_rate": ("log", 1e-3, 5e-2),
                    "reg": ("log", 1e-5, 1e-2)}
    #: the defaults were tuned on ml-1m; on quickstart's ml-100k, smaller batches
    quick_params = {"epochs": 30, "batch_size": 2048}

    n_layers: int = 3
    epochs: int = 50
    batch_size: int = 16384
    learning_rate: float = 0.02
    reg: float = 3e-4
    init_std: float = 0.1

    param_rules = {**SampledGradientRecommender.param_rules,
                   "n_layers": int_rule(0, MAX_LAYERS)}

    def _build(self) -> nn.Module:
        return _LightGCN(self.n_users, self.n_items, int(self.embedding_dim),
                         int(self.n_layers), normalized_adjacency(self.seen_), self._generator(),
                         float(self.init_std))

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m: _LightGCN = self.module_
        final = m.propagate()
        ego = m.embedding.weight
        u = batch["users"]
        i = batch["items"] + m.n_users
        j = batch["negatives"] + m.n_users  # [B, N]
        # lookup's backward is one vectorized index_add_ on a CPU (F.embedding's adds row
        # by row; tensor indexing's is slower still)
        eu = lookup(final, u)
        pos = (eu * lookup(final, i)).sum(-1)
        neg = (eu.unsqueeze(1) * lookup(final, j)).sum(-1)
        reg = losses.l2(lookup(ego, u), lookup(ego, i), lookup(ego, j.reshape(-1)))
        return losses.bpr(pos, neg) + float(self.reg) * reg

    def _prepare_scoring(self) -> None:
        m: _LightGCN = self.module_
        with torch.no_grad():
            self.user_embeddings_, self.item_embeddings_ = (
                t.detach().clone() for t in m.split(m.propagate()))

    def _score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_embeddings_[users] @ self.item_embeddings_.T

    def dot_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embeddings_.detach().cpu(), self.item_embeddings_.detach().cpu()

    def _item_embeddings(self) -> torch.Tensor:
        return self.item_embeddings_.cpu()
