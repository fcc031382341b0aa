"""Loss functions for recommendation, as small pure functions of score tensors.

Every function returns a scalar (mean over the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mse", "bpr", "bce", "sampled_softmax", "l2"]


def mse(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error (rating prediction)."""
    return F.mse_loss(predicted, target)


def bpr(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking (Rendle et al. 2009): ``-log sigmoid(pos - neg)``.

    ``pos`` is ``[B]``; ``neg`` is ``[B]`` or ``[B, N]`` (each negative paired with the
    positive of its row).
    """
    if neg.dim() == 2:
        pos = pos.unsqueeze(1)
    return -F.logsigmoid(pos - neg).mean()


def bce(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits, positives labelled 1 and sampled negatives 0
    (the NCF objective). Shapes ``[B]`` and ``[B]`` or ``[B, N]``; each term is averaged
    over its own entries and summed, as in the NCF paper's pointwise loss."""
    pos_term = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="sum")
    neg_term = F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="sum")
    return (pos_term + neg_term) / (pos.numel() + neg.numel())


def sampled_softmax(pos: torch.Tensor, neg: torch.Tensor, temperature: float = 1.0
                    ) -> torch.Tensor:
    """Softmax cross-entropy of the positive against sampled negatives ``[B, N]``."""
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1) / temperature
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def l2(*tensors: torch.Tensor) -> torch.Tensor:
    """``0.5 * sum of squares / batch size`` of the given (batch) tensors: the usual
    per-batch embedding regulariser of BPR-MF and LightGCN."""
    batch = tensors[0].shape[0]
    return 0.5 * sum(t.pow(2).sum() for t in tensors) / batch
