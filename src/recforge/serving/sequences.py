"""What an order-reading model (``capabilities.reads_order``) knows of a user's order, and
the ordered history the server scores: the user's training sequence as the model keeps it,
then the items the user posted since training, in the order they were posted.

The model keeps its training sequences in its own form: next-item networks
(:class:`~recforge.models.sequential.SequentialRecommender`) each user's last ``max_len``
items, right-padded and 1-based (``sequences_``); session-kNN
(:class:`~recforge.models.sknn.SessionKNN`) each user's last training session
(``user_last_``, a row of ``sessions_`` whose values are the items' places). A model that
keeps neither contributes no training items: its posted items alone are its sequence.

:func:`compile_encoder` traces a next-item network's encoder once with TorchScript for a
server that loaded the model from disk (a served SASRec answer spends most of its time in
the forward pass, whose Python overhead tracing halves).

Everything is array arithmetic over a batch of users (no Python loop over users): one
gather of the training rows, one stable sort that puts each user's training items before
its posted ones.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recforge.data.interactions import Interactions

__all__ = ["training_sequences", "ordered_history", "compile_encoder", "score_histories"]

_EMPTY = np.empty(0, dtype=np.int64)


def training_sequences(model: Any, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(row, items)``: the training items of each of ``users`` (internal indices), oldest
    first, as flat arrays (``row[j]`` the position in ``users`` of ``items[j]``)."""
    users = np.asarray(users, dtype=np.int64)
    windows = getattr(model, "sequences_", None)
    if windows is not None:  # [n_users, max_len], right-padded, 1-based
        rows = np.asarray(windows[users], dtype=np.int64)
        b, j = np.nonzero(rows)  # row-major: each row's items in order
        return b.astype(np.int64), rows[b, j] - 1
    last = getattr(model, "user_last_", None)
    sessions = getattr(model, "sessions_", None)
    if last is not None and isinstance(sessions, sp.csr_matrix):
        at = np.asarray(last)[users]
        lo = sessions.indptr[np.maximum(at, 0)]
        n = np.where(at >= 0, sessions.indptr[np.maximum(at, 0) + 1] - lo, 0)
        row = np.repeat(np.arange(len(users), dtype=np.int64), n)
        pos = np.repeat(lo, n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        # a session row's values are its items' places: order each row by them
        order = np.lexsort((sessions.data[pos], row))
        return row[order], sessions.indices[pos][order].astype(np.int64)
    return _EMPTY, _EMPTY


def ordered_history(model: Any, users: np.ndarray, posted: list[np.ndarray]
                    ) -> Interactions:
    """The history :meth:`~recforge.models.base.Recommender.score_sequences` reads for
    ``users`` (distinct internal indices): each user's training sequence, then
    ``posted[b]`` (item indices in the order posted), newest last. The events carry one
    session id per user (what was posted continues the user's last training session) and
    no timestamps: their order is the input order."""
    users = np.asarray(users, dtype=np.int64)
    t_row, t_items = training_sequences(model, users)
    counts = np.fromiter((len(p) for p in posted), dtype=np.int64, count=len(posted))
    p_row = np.repeat(np.arange(len(users), dtype=np.int64), counts)
    p_items = np.concatenate(posted).astype(np.int64) if len(posted) else _EMPTY
    row = np.concatenate([t_row, p_row])
    items = np.concatenate([t_items, p_items])
    order = np.argsort(row, kind="stable")  # stable: training items before posted ones
    row, items = row[order], items[order]
    return Interactions(users[row], items, users=model.users_, items=model.items_,
                        session=users[row], check=False, source="posted events")


def score_histories(model: Any, histories: list[np.ndarray]) -> torch.Tensor:
    """Scores ``[len(histories), n_items]`` (float32) of anonymous histories (item indices
    in order, no values), each row what ``model._score_history(history, None)`` gives:
    one call for all where the model scores a batch (``_score_histories``: the next-item
    networks, one forward pass; session-kNN, one block), else one by one."""
    batched = getattr(model, "_score_histories", None)
    if batched is not None:
        return batched(histories).float()
    if not histories:
        return torch.zeros(0, int(model.n_items))
    return torch.stack([model._score_history(np.asarray(h, dtype=np.int64), None)
                        .float().reshape(-1) for h in histories])


def compile_encoder(model: Any) -> bool:
    """Replace the encoder of ``model``'s network (``module_.encode``, and
    ``module_.encode_last`` where it has one) with a frozen TorchScript trace of it, for
    inference only; ``True`` when done.

    Only for a model that encodes right-padded windows without user indices
    (``needs_users`` false; scoring is float32 whatever ``precision`` trained it), and only when the trace gives the
    eager encoder's states (to 1e-4) on windows of several batch sizes and lengths;
    otherwise, or on any error, the model is left as it was. Call it on a model the caller
    owns (the server's own load of a model directory): it changes the module in place.
    """
    module = getattr(model, "module_", None)
    if (module is None or not callable(getattr(module, "encode", None))
            or getattr(model, "needs_users", True)
            or str(getattr(model, "device_", "cpu")) != "cpu"):
        return False
    max_len, n_items = int(model.max_len), int(model.n_items)

    class _Encode(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, last: bool) -> None:
            super().__init__()
            self.inner = inner
            self.last = last

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.inner.encode_last(inputs) if self.last else self.inner.encode(inputs)

    gen = torch.Generator().manual_seed(0)

    def window(rows: int, length: int) -> torch.Tensor:
        w = torch.randint(1, n_items + 1, (rows, length), generator=gen)
        cut = torch.randint(1, length + 1, (rows,), generator=gen)
        w[torch.arange(length)[None, :] >= cut[:, None]] = 0  # right padding
        w[:, 0] = torch.randint(1, n_items + 1, (rows,), generator=gen)
        return w

    eager = {"encode": module.encode}
    if callable(getattr(module, "encode_last", None)):  # what scoring calls, when there
        eager["encode_last"] = module.encode_last
    traced: dict[str, Any] = {}
    try:
        module.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = window(1, min(50, max_len))
            for name in eager:
                traced[name] = torch.jit.freeze(torch.jit.trace(
                    _Encode(module, name == "encode_last"), example).eval())
            for rows, length in ((1, min(50, max_len)), (1, 1), (3, max_len),
                                 (2, max(1, max_len // 3))):
                x = window(rows, length)
                for name, fn in eager.items():
                    if not torch.allclose(traced[name](x), fn(x), atol=1e-4, rtol=1e-4):
                        return False
    except Exception:  # an encoder TorchScript cannot trace: keep the eager one
        return False

    def wrap(fn: Any) -> Any:
        def run(inputs: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
            return fn(inputs)
        return run

    for name, fn in traced.items():
        setattr(module, name, wrap(fn))
    return True
