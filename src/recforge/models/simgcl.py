"""SimGCL and XSimGCL (Yu et al., SIGIR 2022 and TKDE 2023): LightGCN with a contrastive
term between noise-perturbed views of the propagated embeddings.

Both reuse :class:`~recforge.models.lightgcn.LightGCN`'s propagation (its sparse
products, options and cached scoring); what they add is in the training loss:

* **Noise.** A perturbed propagation adds ``sign(E) * normalize(U(0, 1)) * eps`` to every
  propagated layer ``E`` (row-wise: a random direction in the row's own orthant, of length
  ``eps``) before it is propagated further.
* **InfoNCE.** Between two views ``V1, V2`` of the batch's *unique* users (and, apart,
  of its unique positive items): rows scaled to unit length, ``logits = V1 @ V2^T / tau``,
  the loss the mean over rows of ``logsumexp(logits_r) - logits_rr`` (each row's positive is
  its own other view, the rest of the batch its negatives). One ``[n, n]`` product per
  side, no loop.
* **SimGCL** (``simgcl``): BPR on a clean propagation, and InfoNCE between two further
  perturbed propagations: three propagations per step.
* **XSimGCL** (``xsimgcl``): one perturbed propagation serves both: BPR on its pooled
  final embeddings, InfoNCE between those and its layer ``l_star``.

The loss is ``BPR + reg * L2(batch's layer-0 rows) + cl_rate * (InfoNCE_users +
InfoNCE_items)``. As in the papers' code the final embeddings skip layer 0 (``gamma = 0``,
the mean of layers ``1..K``; ``gamma = None`` restores LightGCN's mean over every layer),
and scoring uses a clean propagation. The L2 term is LightGCN's (on the layer-0 rows of the
batch's users, positives and negatives; SELFRec's code puts an unsquared norm on the
propagated rows instead). LightGCN++'s options (``alpha``, ``beta``, ``unit_norm``) apply
to these propagations too, and are the defaults here: see :class:`SimGCL`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recforge.errors import ConfigError
from recforge.models.lightgcn import MAX_LAYERS, LightGCN, _LightGCN
from recforge.models.params import (
    MAX_COUNT,
    MAX_NUMBER,
    int_rule,
    number_rule,
    optional_rule,
    positive_rule,
)

__all__ = ["SimGCL", "XSimGCL", "info_nce"]


def info_nce(view1: torch.Tensor, view2: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE between the rows of two views (cosine similarity over ``tau``): the mean
    over rows ``r`` of ``-log softmax_r(V1 V2^T / tau)[r]``."""
    v1 = F.normalize(view1, dim=1)
    v2 = F.normalize(view2, dim=1)
    logits = (v1 @ v2.T) / tau
    pos = (v1 * v2).sum(1) / tau
    return (torch.logsumexp(logits, dim=1) - pos).mean()


class SimGCL(LightGCN):
    """SimGCL: LightGCN trained with BPR plus InfoNCE between two noise-perturbed views.

    Parameters (typical ranges in brackets; the rest as ``lightgcn``)
    ----------
    eps: length of each layer's noise [0.05, 0.2] (paper: 0.1).
    cl_rate: weight of the contrastive term, the papers' lambda [0.05, 1] (paper: 0.5;
        0.1 here: see docs/models.md).
    tau: InfoNCE temperature [0.1, 0.5] (paper: 0.2).
    n_layers: [1, 3] (paper: 2).
    gamma: layer-0 weight of the pooling; 0 (default) skips layer 0, as the paper does.
    alpha, beta, unit_norm: LightGCN++'s normalisation (``lightgcn``'s options), on by
        default: with LightGCN's (0.5, 0.5, no unit rows) and these CPU settings the
        contrastive term swamped BPR (docs/models.md has the figures).
    cl_rows: the most users (and, apart, items) of a batch that InfoNCE contrasts, drawn at
        random from the batch's unique ones; None: all. Its cost grows with the square of
        this number: the papers' batches of 2,048 events hold fewer than 2,048 of either.
    """

    name = "simgcl"
    #: ``tau`` and the others shape only training; loading needs LightGCN's scoring params
    scoring_params = LightGCN.scoring_params
    tuning_space = {"learning_rate": ("log", 1e-3, 5e-2), "eps": ("float", 0.02, 0.3),
                    "cl_rate": ("log", 0.02, 1.0), "tau": ("float", 0.1, 0.5)}
    quick_params = {"epochs": 20, "batch_size": 2048}

    n_layers: int = 2
    epochs: int | None = 30
    min_steps: int = 0  # (lightgcn's floor was not measured with the contrastive term)
    batch_size: int = 16384
    learning_rate: float = 0.01
    reg: float = 1e-4
    n_negatives: int = 4
    gamma: float | None = 0.0
    alpha: float = 0.4
    beta: float = 0.1
    unit_norm: bool = True
    eps: float = 0.1
    cl_rate: float = 0.1
    tau: float = 0.2
    cl_rows: int | None = 2048

    param_rules = {**LightGCN.param_rules, "eps": number_rule(0.0, MAX_NUMBER),
                   "cl_rate": number_rule(0.0, MAX_NUMBER), "tau": positive_rule(),
                   "cl_rows": optional_rule(int_rule(2, MAX_COUNT))}

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        """The generator of the noise, seeded from ``seed`` when training starts."""
        gen = self.__dict__.get("_noise_gen")
        if gen is None or gen.device != device:
            gen = torch.Generator(device=device)
            gen.manual_seed(int(self.seed or 0) + 1)
            self._noise_gen = gen
        return gen

    def _contrast(self, batch: dict[str, torch.Tensor], view1: torch.Tensor,
                  view2: torch.Tensor) -> torch.Tensor:
        """``cl_rate`` times InfoNCE over the batch's unique users plus over its unique
        positive items (at most ``cl_rows`` of each, drawn at random), between two
        ``[users + items, d]`` views."""
        m: _LightGCN = self.module_
        gen = self._noise_generator(view1.device)
        users = self._at_most(torch.unique(batch["users"]), gen)
        items = self._at_most(torch.unique(batch["items"]), gen) + m.n_users
        tau = float(self.tau)
        return float(self.cl_rate) * (info_nce(view1[users], view2[users], tau)
                                      + info_nce(view1[items], view2[items], tau))

    def _at_most(self, rows: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``rows``, or ``cl_rows`` of them drawn without replacement."""
        cap = self.cl_rows
        if cap is None or len(rows) <= int(cap):
            return rows
        pick = torch.randperm(len(rows), generator=gen, device=rows.device)[: int(cap)]
        return rows[pick]

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m: _LightGCN = self.module_
        loss = self.bpr_loss(m.propagate(), batch)
        if float(self.cl_rate) == 0.0:
            return loss
        gen = self._noise_generator(m.embedding.weight.device)
        eps = float(self.eps)
        view1 = m.pool(m.layers(eps, gen))
        view2 = m.pool(m.layers(eps, gen))
        return loss + self._contrast(batch, view1, view2)


class XSimGCL(SimGCL):
    """XSimGCL: one perturbed propagation for BPR and for InfoNCE between the final
    embeddings and layer ``l_star``'s.

    Parameters (typical ranges in brackets; the rest as ``simgcl``)
    ----------
    eps: [0.05, 0.3] (paper: 0.2).
    cl_rate: [0.05, 0.5] (paper: 0.2; 0.1 here).
    tau: [0.1, 0.3] (paper: 0.15).
    l_star: the layer contrasted with the final embeddings, 0..n_layers (paper: 1).
    batch_size, epochs: 4,096 and 25 (one propagation per step: more steps than simgcl for
        the same CPU time; ml-1m-implicit, papers' protocol, NDCG@20 0.3171 against 0.3137
        at 8,192 and 0.2946 at 16,384 for 20 epochs).
    """

    name = "xsimgcl"
    tuning_space = {"learning_rate": ("log", 1e-3, 5e-2), "eps": ("float", 0.02, 0.4),
                    "cl_rate": ("log", 0.02, 1.0), "tau": ("float", 0.1, 0.5)}

    batch_size: int = 4096
    epochs: int = 25
    eps: float = 0.2
    cl_rate: float = 0.1
    tau: float = 0.15
    l_star: int = 1

    param_rules = {**SimGCL.param_rules, "l_star": int_rule(0, MAX_LAYERS)}

    def _validate_params(self) -> None:
        super()._validate_params()
        if int(self.l_star) > int(self.n_layers):
            raise ConfigError(f"{self.name}: l_star={self.l_star} names a layer beyond "
                              f"n_layers={self.n_layers}; use 0..{self.n_layers}")

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m: _LightGCN = self.module_
        gen = self._noise_generator(m.embedding.weight.device)
        layers = m.layers(float(self.eps), gen)
        final = m.pool(layers)
        loss = self.bpr_loss(final, batch)
        if float(self.cl_rate) == 0.0:
            return loss
        return loss + self._contrast(batch, final, layers[int(self.l_star)])
