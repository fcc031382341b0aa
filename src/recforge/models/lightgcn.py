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

LightGCN++ (Lee, Kim & Shin, RecSys 2024, "Revisiting LightGCN") is the same model with
three options: the normalisation ``D^-alpha A D^-beta`` (``alpha`` on the receiving node's
degree, ``beta`` on the sender's; LightGCN is ``0.5, 0.5``), each layer's input scaled to
unit length before it is propagated (``unit_norm``), and the pooling ``gamma * E^(0) +
(1 - gamma) * mean(E^(1..K))`` (``gamma``; LightGCN's mean over all layers is
``gamma = None``). With ``alpha != beta`` the matrix is not symmetric and a propagation's
backward pass multiplies by its transpose, built once beside it.

:mod:`recforge.models.simgcl` reuses this propagation with noise added to each layer
(SimGCL, XSimGCL).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recforge.models.contracts import Capabilities
from recforge.models.gradient import GradientRecommender, SampledGradientRecommender
from recforge.models.params import choice_rule, int_rule, number_rule
from recforge.ranking import torch_csr
from recforge.training import losses
from recforge.training.embedding import lookup

#: The most propagation layers (beyond a few, every embedding converges to the same
#: vector; the bound keeps a doctored saved model from propagating for ever on load).
MAX_LAYERS = 64


#: The normalisation exponents' range (beyond it the degree terms overflow float32 on any
#: graph with a node of degree ~10^4; the LightGCN++ study searched -0.1..0.7).
MAX_EXPONENT = 4.0


class _SymmetricSpMM(torch.autograd.Function):
    """``Â @ X`` for a symmetric sparse ``Â``: the gradient is ``Â @ grad``."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, ctx.adj @ grad


class _SpMM(torch.autograd.Function):
    """``Â @ X`` for a sparse ``Â`` whose transpose ``Â^T`` is given: the gradient is
    ``Â^T @ grad`` (torch's own backward of a sparse CSR product goes through COO)."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, adj_t: torch.Tensor,  # type: ignore[override]
                x: torch.Tensor) -> torch.Tensor:
        ctx.adj_t = adj_t
        return adj @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, None, ctx.adj_t @ grad


def normalized_adjacency(interactions: sp.csr_matrix, alpha: float = 0.5,
                         beta: float = 0.5) -> sp.csr_matrix:
    """``D^-alpha [[0, R], [R^T, 0]] D^-beta`` for a users x items matrix ``R``
    (binarised): entry ``(a, b)``, ``b``'s message to ``a``, is ``1 / (deg_a^alpha *
    deg_b^beta)``. ``alpha = beta = 0.5`` is LightGCN's symmetric normalisation; nodes
    without events get zero rows and columns."""
    r = interactions.tocsr().astype(np.float32)
    r.data[:] = 1.0
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(adj.sum(axis=1), dtype=np.float64).ravel()
    nz = deg > 0

    def power(exponent: float) -> sp.dia_matrix:
        out = np.zeros_like(deg)
        out[nz] = deg[nz] ** -float(exponent)
        return sp.diags(out.astype(np.float32))

    left = power(alpha)
    right = left if alpha == beta else power(beta)
    out = (left @ adj @ right).tocsr()
    out.sort_indices()
    return out


class _LightGCN(nn.Module):
    """The embedding table and the propagation over ``adjacency``.

    ``gamma`` None pools the mean of layers ``0..K``; a number pools ``gamma * E^(0) +
    (1 - gamma) * mean(E^(1..K))``. ``unit_norm`` scales each layer's input rows to unit
    length before they are propagated (LightGCN++).
    """

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int,
                 adjacency: sp.csr_matrix, gen: torch.Generator, init_std: float, *,
                 gamma: float | None = None, unit_norm: bool = False,
                 symmetric: bool = True):
        super().__init__()
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        self.gamma, self.unit_norm = gamma, unit_norm
        self.embedding = nn.Embedding(n_users + n_items, dim)
        with torch.no_grad():
            self.embedding.weight.normal_(0.0, init_std, generator=gen)
        self.adj = torch_csr(adjacency.indptr, adjacency.indices, adjacency.data,
                             adjacency.shape)
        self.adj_t: torch.Tensor | None = None
        if not symmetric:
            t = adjacency.T.tocsr()
            t.sort_indices()
            self.adj_t = torch_csr(t.indptr, t.indices, t.data, t.shape)

    def _apply(self, fn, recurse=True):  # keep the sparse adjacency on the module's device
        super()._apply(fn, recurse)
        self.adj = fn(self.adj)
        if self.adj_t is not None:
            self.adj_t = fn(self.adj_t)
        return self

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One propagation ``Â @ x`` (after scaling ``x``'s rows to unit length with
        ``unit_norm``), differentiable."""
        if self.unit_norm:
            x = F.normalize(x, dim=1, eps=1e-12)
        if self.adj_t is None:
            return _SymmetricSpMM.apply(self.adj, x)
        return _SpMM.apply(self.adj, self.adj_t, x)

    def layers(self, eps: float = 0.0, gen: torch.Generator | None = None
               ) -> list[torch.Tensor]:
        """``[E^(0), ..., E^(K)]``. With ``eps > 0`` each propagated layer gets SimGCL's
        noise, ``sign(E) * normalize(U(0, 1)) * eps`` row-wise (a random direction in
        ``E``'s orthant, of length ``eps``), before it is propagated further."""
        x = self.embedding.weight
        out = [x]
        for _ in range(self.n_layers):
            x = self.step(x)
            if eps > 0:
                noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
                x = x + torch.sign(x) * F.normalize(noise, dim=1) * eps
            out.append(x)
        return out

    def pool(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """The final embeddings of ``layers`` (see the class docstring)."""
        if self.gamma is None or len(layers) == 1:
            return torch.stack(layers).mean(0) if len(layers) > 1 else layers[0]
        rest = torch.stack(layers[1:]).mean(0)
        return self.gamma * layers[0] + (1.0 - self.gamma) * rest

    def propagate(self) -> torch.Tensor:
        return self.pool(self.layers())

    def split(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return emb[: self.n_users], emb[self.n_users:]


class LightGCN(SampledGradientRecommender):
    """LightGCN with BPR loss; LightGCN++ with ``alpha``, ``beta``, ``gamma`` and
    ``unit_norm``.

    Parameters (typical ranges in brackets)
    ----------
    embedding_dim: [32, 256].
    n_layers: propagation layers [1, 4].
    epochs, batch_size: the defaults use large batches (and a matching learning rate) so
        that an epoch is a few dozen propagations and training converges in minutes on a
        CPU; the paper used 2,048 and 1e-3 on a GPU. ``epochs=None`` (default): 50, or as
        many as make ``min_steps`` steps on a smaller log.
    min_steps: the fewest optimizer steps of a fit with ``epochs=None``.
    learning_rate: [1e-4, 5e-2].
    reg: L2 on the batch's layer-0 embeddings [1e-5, 1e-3] (paper: 1e-4).
    n_negatives: negatives per positive, each a BPR pair [1, 8].
    alpha, beta: the normalisation ``D^-alpha A D^-beta`` [-0.1, 0.7] (LightGCN: 0.5, 0.5;
        the LightGCN++ study's ml-1m optimum: 0.4, 0.1).
    gamma: the layer-0 weight of the pooling, the rest the mean of layers 1..K [0, 1];
        None: the mean over every layer (LightGCN). With ``n_layers=0`` the final
        embeddings are layer 0, whatever ``gamma``.
    unit_norm: scale each layer's rows to unit length before propagating (LightGCN++).
    optimizer, weight_decay, lr_schedule, valid_metric, patience, eval_every, init_std,
    device, seed.
    """

    name = "lightgcn"
    #: loading propagates the saved embeddings n_layers times, with these options
    scoring_params = {**GradientRecommender.scoring_params, "n_layers": int_rule(0, MAX_LAYERS),
                      "alpha": number_rule(-MAX_EXPONENT, MAX_EXPONENT),
                      "beta": number_rule(-MAX_EXPONENT, MAX_EXPONENT),
                      "gamma": number_rule(0.0, 1.0, optional=True),
                      "unit_norm": choice_rule(True, False)}
    #: Every step propagates over the whole user-item graph: each rank needs all events
    #: (no ``sharded_data``), and reads the user rows whole (no ``sparse_user_updates``).
    capabilities = Capabilities(similar_items=True, gradient=True, seeded=True)
    tuning_space = {"n_layers": ("int", 1, 4), "learning_rate": ("log", 1e-3, 5e-2),
                    "reg": ("log", 1e-5, 1e-2)}
    #: the defaults were tuned on ml-1m; on quickstart's ml-100k, smaller batches
    quick_params = {"epochs": 30, "batch_size": 2048}

    n_layers: int = 3
    #: 50 epochs on a log of 600,000 events or more (2,050 steps on ml-1m-implicit); on
    #: smaller logs at least 1,200 steps (docs/models.md, lightgcn's "Training length")
    auto_epochs = 50
    epochs: int | None = None
    min_steps: int = 1200
    batch_size: int = 16384
    learning_rate: float = 0.02
    reg: float = 3e-4
    init_std: float = 0.1
    alpha: float = 0.5
    beta: float = 0.5
    gamma: float | None = None
    unit_norm: bool = False

    param_rules = {**SampledGradientRecommender.param_rules,
                   "n_layers": int_rule(0, MAX_LAYERS),
                   "alpha": scoring_params["alpha"], "beta": scoring_params["beta"],
                   "gamma": scoring_params["gamma"], "unit_norm": scoring_params["unit_norm"]}

    def _build(self) -> nn.Module:
        alpha, beta = float(self.alpha), float(self.beta)
        return _LightGCN(self.n_users, self.n_items, int(self.embedding_dim),
                         int(self.n_layers), normalized_adjacency(self.seen_, alpha, beta),
                         self._generator(), float(self.init_std),
                         gamma=None if self.gamma is None else float(self.gamma),
                         unit_norm=bool(self.unit_norm), symmetric=alpha == beta)

    def bpr_loss(self, final: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BPR over the batch's (user, positive, negatives) with the final embeddings
        ``final``, plus ``reg`` times L2 on the batch's layer-0 rows."""
        m: _LightGCN = self.module_
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

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.bpr_loss(self.module_.propagate(), batch)

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
