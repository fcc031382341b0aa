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
* :func:`full_softmax`: cross-entropy over every item, its gradients computed with the
  loss chunk by chunk (never the whole ``[N, n_items]`` logits).
* :func:`bpr_max`: GRU4Rec's BPR-max with its score regularisation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

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


#: Logits (positions x items) that :func:`full_softmax` holds at once: it works through
#: chunks of positions of about this many logits (2^22: 16 MB of float32, so a chunk stays
#: in cache; ml-1m-seq's 3,416 items give chunks of 1,227 positions).
CE_LOGITS_AT_ONCE = 2**22


#: where :class:`_SoftmaxCrossEntropy` floors a logit below its row's largest one
_LOG_FLOOR = -60.0


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """Cross-entropy over all items with the gradients computed in the forward pass, one
    chunk of positions at a time: a chunk's logits become its softmax in place, the
    target's ``-1`` is added, and the two gradient products are taken at once, so neither
    the ``[N, n_items]`` logits nor their softmax outlive the chunk, nothing is recomputed,
    and the backward pass only scales the stored gradients. ``dtype`` is the precision of
    the three matrix products (bfloat16 under autocast); the softmax and the loss are
    float32, the loss summed in float64. No double backward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                dtype: torch.dtype, chunk: int) -> torch.Tensor:
        n = hidden.shape[0]
        need_h, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.autocast(hidden.device.type, enabled=False):
            h_all, t_all = hidden.detach().to(dtype), table.detach().to(dtype)
            grad_h = torch.empty_like(h_all) if need_h else None
            grad_t = (torch.zeros(table.shape, dtype=torch.float32, device=table.device)
                      if need_t else None)
            total = torch.zeros((), dtype=torch.float64, device=hidden.device)
            # one buffer of logits (and one of their low-precision copies) for every chunk:
            # a fresh 16 MB block per chunk costs the copies into it their page faults
            shape = (min(chunk, n), t_all.shape[0])
            buffer = torch.empty(shape, dtype=torch.float32, device=hidden.device)
            low = (torch.empty(shape, dtype=dtype, device=hidden.device)
                   if dtype != torch.float32 else None)
            for i in range(0, n, chunk):
                h, t = h_all[i:i + chunk], targets[i:i + chunk].unsqueeze(1)
                logits = buffer[:len(h)]
                if low is None:
                    torch.mm(h, t_all.T, out=logits)
                else:
                    logits.copy_(torch.mm(h, t_all.T, out=low[:len(h)]))
                top = logits.amax(1, keepdim=True)
                picked = logits.gather(1, t)
                # floored at e^-60 (1e-26 of the largest term): without it the exp and
                # the softmax underflow to subnormal floats, which cost CPUs 6-8x per value
                norm = logits.sub_(top).clamp_(min=_LOG_FLOOR).exp_().sum(1, keepdim=True)
                total += (norm.log() + top - picked).sum(dtype=torch.float64)
                if not (need_h or need_t):
                    continue
                grad = logits.div_(norm).scatter_add_(1, t, torch.full_like(picked, -1.0))
                if low is not None:
                    grad = low[:len(h)].copy_(grad)
                if need_h:
                    torch.mm(grad, t_all, out=grad_h[i:i + chunk])
                if need_t:
                    grad_t += (grad.T @ h).float()
        ctx.save_for_backward(*(g for g in (grad_h, grad_t) if g is not None))
        ctx.parts, ctx.n = (need_h, need_t), max(1, n)
        ctx.dtypes = (hidden.dtype, table.dtype)
        return (total / ctx.n).to(torch.float32)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = iter(ctx.saved_tensors)
        scale = grad_out / ctx.n
        need_h, need_t = ctx.parts
        grad_h = (next(saved) * scale).to(ctx.dtypes[0]) if need_h else None
        grad_t = (next(saved) * scale).to(ctx.dtypes[1]) if need_t else None
        return grad_h, grad_t, None, None, None


def full_softmax(hidden: torch.Tensor, targets: torch.Tensor, items: torch.Tensor
                 ) -> torch.Tensor:
    """Cross-entropy over all items (the padding row left out), fused with its gradients
    (:class:`_SoftmaxCrossEntropy`, in chunks of about :data:`CE_LOGITS_AT_ONCE` logits);
    the matrix products in bfloat16 under a bfloat16 autocast, else in ``hidden``'s
    precision. Equal to ``F.cross_entropy(hidden @ items[1:].T, targets - 1)``."""
    n_items = items.shape[0] - 1
    device = hidden.device.type
    dtype = (torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device)
             else hidden.dtype)
    if dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        dtype = torch.float32
    chunk = max(1, CE_LOGITS_AT_ONCE // max(1, n_items))
    return _SoftmaxCrossEntropy.apply(hidden, items[1:], targets - 1, dtype, chunk)


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
