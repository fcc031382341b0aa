"""Losses of next-item models, on the hidden states of the trained positions.

Every function takes ``hidden`` ``[N, d]`` (one row per trained position, padding already
left out), ``targets`` ``[N]`` (1-based item indices) and the item table ``items``
``[n_items + 1, d]`` (row 0 the padding item, never a target nor a negative), and returns
a scalar: the mean over the positions. Sampled losses never build the ``[N, n_items]``
logits; only :func:`full_softmax` does.

* :func:`bce_one_negative`: SASRec (Kang & McAuley 2018): ``-log s(pos) - log(1 - s(neg))``
  with one sampled negative per position.
* :func:`sampled_softmax`: cross-entropy of the target against ``K`` negatives shared by
  the batch, optionally with the log-q correction of a non-uniform sampler (Yi et al.
  2019; as TensorFlow's ``sampled_softmax_loss``, ``log q`` is subtracted from the target's
  logit and the negatives').
* :func:`gbce`: gSASRec's generalised BCE (Petrov & Macdonald 2023) with ``K`` negatives
  (shared by the batch; :func:`sequence_negative_scores` draws them per sequence): the positive's log-sigmoid is weighted by ``beta = alpha (t (1 - 1/alpha) +
  1/alpha)``, ``alpha = K / (n_items - 1)`` the sampling rate and ``t`` the calibration
  (``t = 0`` is plain BCE, ``t = 1`` calibrates the sigmoid to the full softmax's
  probabilities); the loss of a position is the mean over its ``1 + K`` terms, as in the
  authors' code, where ``-log s(s+)^beta = beta * softplus(-s+)`` replaces their float64
  transform of the positive logit by the same value in one stable step.
* :func:`full_softmax`: cross-entropy over every item.
* :func:`bpr_max`: GRU4Rec's BPR-max with its score regularisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from recforge.training.embedding import lookup

__all__ = ["bce_one_negative", "sampled_softmax", "gbce", "gbce_beta", "gbce_scores",
           "sequence_negative_scores", "full_softmax", "bpr_max"]


def _positive_scores(hidden: torch.Tensor, targets: torch.Tensor,
                     items: torch.Tensor) -> torch.Tensor:
    return (hidden * lookup(items, targets)).sum(-1)


def bce_one_negative(hidden: torch.Tensor, targets: torch.Tensor, items: torch.Tensor,
                     negatives: torch.Tensor) -> torch.Tensor:
    """SASRec's loss: one negative ``[N]`` per position (a negative that is the target
    itself counts for nothing)."""
    pos = _positive_scores(hidden, targets, items)
    neg = (hidden * lookup(items, negatives)).sum(-1)
    neg_term = F.softplus(neg) * (negatives != targets).to(neg.dtype)
    return (F.softplus(-pos) + neg_term).mean()


def _shared_logits(hidden: torch.Tensor, targets: torch.Tensor, items: torch.Tensor,
                   negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The positive scores ``[N]``, the negatives' ``[N, K]`` and where a negative is the
    position's own target (``[N, K]`` bool)."""
    pos = _positive_scores(hidden, targets, items)
    neg = hidden @ lookup(items, negatives).T
    same = negatives.unsqueeze(0) == targets.unsqueeze(1)
    return pos, neg, same


def sampled_softmax(hidden: torch.Tensor, targets: torch.Tensor, items: torch.Tensor,
                    negatives: torch.Tensor, log_q: torch.Tensor | None = None,
                    target_log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax cross-entropy of each target against the ``K`` shared ``negatives``;
    ``log_q`` (``[K]``) and ``target_log_q`` (``[N]``): the sampling log-probabilities to
    subtract (a non-uniform sampler), else none. A negative equal to the target is left
    out of its row."""
    pos, neg, same = _shared_logits(hidden, targets, items, negatives)
    if log_q is not None:
        neg = neg - log_q.unsqueeze(0)
        if target_log_q is not None:
            pos = pos - target_log_q
    neg = neg.masked_fill(same, float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1).float()
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's ``beta`` for ``K`` negatives out of ``n_items`` and calibration ``t``."""
    alpha = n_negatives / max(1, n_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce(hidden: torch.Tensor, targets: torch.Tensor, items: torch.Tensor,
         negatives: torch.Tensor, beta: float) -> torch.Tensor:
    """gSASRec's gBCE with ``K`` shared negatives and the weight ``beta``
    (:func:`gbce_beta`); a negative equal to the target counts for nothing."""
    pos, neg, same = _shared_logits(hidden, targets, items, negatives)
    return gbce_scores(pos, neg, same, beta)


def gbce_scores(pos: torch.Tensor, neg: torch.Tensor, same: torch.Tensor, beta: float
                ) -> torch.Tensor:
    """gBCE from the positives' scores ``[N]``, the negatives' ``[N, K]`` and where a
    negative is the position's target (``[N, K]``, left out)."""
    neg_terms = F.softplus(neg.float()).masked_fill(same, 0.0).sum(1)
    per_position = (beta * F.softplus(-pos.float()) + neg_terms) / (1 + neg.shape[1])
    return per_position.mean()


def sequence_negative_scores(hidden: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
                             items: torch.Tensor, negatives: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores of ``K`` negatives per *sequence* (``negatives`` ``[B, K]``) at every trained
    position: ``hidden`` ``[B, L, d]``, ``mask`` ``[B, L]`` the trained positions,
    ``targets`` ``[B, L]``. One batched product (``[B, L, K]``), never an ``[N, K, d]``
    gather. Returns the positives' scores ``[N]``, the negatives' ``[N, K]`` and where a
    negative is the position's target."""
    neg = torch.bmm(hidden, lookup(items, negatives).transpose(1, 2))[mask]
    rows = mask.nonzero()[:, 0]
    tgt = targets[mask]
    pos = _positive_scores(hidden[mask], tgt, items)
    same = negatives[rows] == tgt.unsqueeze(1)
    return pos, neg, same


#: Logits (positions x items) that :func:`full_softmax` builds at once; past it, it works
#: through chunks of positions, each recomputed in the backward pass (checkpointed), so a
#: large catalogue costs a third more compute instead of ``[N, n_items]`` floats held for
#: the backward pass (2^27: 512 MB of float32 logits; ml-1m-seq's 25,600 x 3,416 fit).
CE_LOGITS_AT_ONCE = 2**27


def _ce_sum(hidden: torch.Tensor, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((hidden @ items[1:].T).float(), targets - 1, reduction="sum")


def full_softmax(hidden: torch.Tensor, targets: torch.Tensor, items: torch.Tensor
                 ) -> torch.Tensor:
    """Cross-entropy over all items (the padding row left out); in checkpointed chunks of
    positions when the logits would pass :data:`CE_LOGITS_AT_ONCE` (same value and
    gradients)."""
    n, n_items = hidden.shape[0], items.shape[0] - 1
    if n * n_items <= CE_LOGITS_AT_ONCE:
        return F.cross_entropy((hidden @ items[1:].T).float(), targets - 1)
    step = max(1, CE_LOGITS_AT_ONCE // max(1, n_items))
    grad = torch.is_grad_enabled()
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, n, step):
        h, t = hidden[i:i + step], targets[i:i + step]
        total = total + (checkpoint(_ce_sum, h, t, items, use_reentrant=False) if grad
                         else _ce_sum(h, t, items))
    return total / n


def bpr_max(hidden: torch.Tensor, targets: torch.Tensor, items: torch.Tensor,
            negatives: torch.Tensor, reg: float) -> torch.Tensor:
    """GRU4Rec's BPR-max (Hidasi & Karatzoglou, CIKM 2018, eq. 6 and 8) over ``K`` shared
    negatives: with ``s_j = softmax_j(r_j)`` over the negatives' scores,
    ``-log sum_j s_j sigmoid(r_i - r_j) + reg * sum_j s_j r_j^2`` (the score
    regularisation of the paper). A negative equal to the target is left out of its row."""
    pos, neg, same = _shared_logits(hidden, targets, items, negatives)
    pos, neg = pos.float(), neg.float()
    weights = torch.softmax(neg.masked_fill(same, float("-inf")), dim=1)
    ranked = (weights * torch.sigmoid(pos.unsqueeze(1) - neg)).sum(1)
    penalty = (weights * neg.masked_fill(same, 0.0).square()).sum(1)
    return (-torch.log(ranked + 1e-24) + reg * penalty).mean()
