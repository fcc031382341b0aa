"""Loss functions for recommendation, as small pure functions of score tensors.

Every function returns a scalar (mean over the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mse", "bpr", "bce", "sampled_softmax", "l2", "sum_of_squares"]


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


class _SumOfSquares(torch.autograd.Function):
    """``(x ** 2).sum()`` in one pass each way.

    Autograd's ``x.pow(2).sum()`` writes a squared copy forward and takes three passes
    backward (``pow(x, 1) * 2 * grad``, each a new tensor): for BPR's three ``[B, d]``
    batch tensors that was about a sixth of a CPU training step (17 ms of 108 ms at
    65,536 events, one thread). Here the forward is one dot product (summed in float32,
    like the rest of the loss) and the backward one multiplication.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        flat = x.reshape(-1)
        return torch.dot(flat, flat)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return x * (2.0 * grad)


def sum_of_squares(t: torch.Tensor) -> torch.Tensor:
    """``(t ** 2).sum()`` with a one-pass forward and backward (floating-point ``t``)."""
    if t.dtype not in (torch.float32, torch.float64):
        return t.pow(2).sum()
    return _SumOfSquares.apply(t)


def l2(*tensors: torch.Tensor) -> torch.Tensor:
    """``0.5 * sum of squares / batch size`` of the given (batch) tensors: the usual
    per-batch embedding regulariser of BPR-MF and LightGCN."""
    batch = tensors[0].shape[0]
    return 0.5 * sum(sum_of_squares(t) for t in tensors) / batch
