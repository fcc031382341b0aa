"""Mini-batches of ordered histories for next-item models (SASRec, GRU4Rec, Caser).

A :class:`SequenceSampler` holds one window per training user: the user's last
``max_len + 1`` items, 1-based (0 is padding) and *right*-padded (the oldest item in
column 0). A batch is ``inputs = window[:, :-1]`` and ``targets = window[:, 1:]``: every
position is trained to predict the item after it, padding positions have target 0.
Right padding keeps a causal model exact (a real position never attends to, or reads the
state of, a padding position) with no key mask, so the fused causal attention kernel
applies; each batch is cut to its longest sequence, so short histories cost little.

Everything an epoch draws comes from the trainer's generator in a few vectorized calls
(a permutation, a sort by length within chunks, one negatives array per batch); there is
no Python loop over users.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from recforge.errors import ConfigError, DataError

__all__ = ["SequenceSampler", "right_aligned", "NEGATIVES"]

Batch = dict[str, torch.Tensor]

#: How a sampler draws negatives: none, one per position (``[B, L]``), ``n_negatives``
#: per sequence shared by its positions (``[B, n_negatives]``), or ``n_negatives`` shared
#: by every position of a batch (``[n_negatives]``).
NEGATIVES = ("none", "position", "sequence", "shared")


def right_aligned(left: np.ndarray, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded rows (as :meth:`Sequences.last` gives them) moved to the left edge,
    padding at the end; returns ``(rows, lengths)``."""
    left = np.asarray(left)
    if left.ndim != 2:
        raise ValueError("right_aligned: expected a 2-d array")
    width = left.shape[1]
    lengths = (left != pad).sum(axis=1)
    # entry j of a row with n items is the row's entry (j + width - n) mod width: the
    # items for j < n, then the left padding (which it wraps around to)
    idx = (np.arange(width)[None, :] + (width - lengths)[:, None]) % max(width, 1)
    return np.take_along_axis(left, idx, axis=1), lengths


class SequenceSampler:
    """The batches of each epoch over training windows.

    Parameters
    ----------
    windows:
        ``[n, W]`` int, right-padded 1-based items (see :func:`right_aligned`); rows with
        fewer than two items have nothing to predict and are left out.
    batch_size:
        Sequences per batch (over all ranks together).
    n_items:
        Items of the catalogue (negatives are drawn from ``1..n_items``).
    negatives, n_negatives:
        ``"none"``, ``"position"`` (one uniform negative per position, ``[B, L]``),
        ``"sequence"`` (``n_negatives`` uniform per sequence, ``[B, n_negatives]``) or
        ``"shared"`` (``n_negatives`` for the whole batch, ``[n_negatives]``).
    popularity:
        For shared negatives: draw them proportional to these weights (``[n_items]``)
        instead of uniformly; the batch then carries ``"log_q"``, the log of each
        drawn item's probability (for a log-q correction in the loss).
    sort_chunk:
        Batches of similar lengths: each epoch's shuffled rows are sorted by length within
        chunks of ``sort_chunk`` batches, and the batches shuffled again (0: plain shuffle).
        Cutting each batch to its longest row then removes most of the padding.
    users:
        The user index of each window (passed in the batch as ``"users"``, for models
        with a user table).
    sequences, random_windows:
        Every row's whole sequence (``(indptr, items)``, CSR-like, 1-based items, row ``r``
        the source of ``windows[r]``) and the probability that an epoch trains a row
        longer than the window on a window ending at a uniformly drawn earlier position
        instead of its last one. With 0 (or no ``sequences``) the items before a long
        history's last window are never trained on (a third of ml-1m-seq's events at a
        window of 201).
    """

    def __init__(self, windows: np.ndarray, batch_size: int, n_items: int, *,
                 negatives: str = "none", n_negatives: int = 0,
                 popularity: np.ndarray | None = None, sort_chunk: int = 0,
                 users: np.ndarray | None = None, shard: tuple[int, int] = (0, 1),
                 sequences: tuple[np.ndarray, np.ndarray] | None = None,
                 random_windows: float = 0.0) -> None:
        if negatives not in NEGATIVES:
            raise ConfigError(f"negatives must be one of {NEGATIVES}, not {negatives!r}")
        self.rank, self.world = shard
        self.batch_size = max(1, int(batch_size) // self.world)
        lengths = (np.asarray(windows) > 0).sum(axis=1)
        keep = np.flatnonzero(lengths >= 2)
        if len(keep) == 0:
            raise DataError("no training user has two events in order: a next-item model "
                            "has nothing to learn")
        self._windows = torch.from_numpy(np.ascontiguousarray(windows[keep], dtype=np.int64))
        self._lengths = lengths[keep]
        self._users = (torch.from_numpy(np.asarray(users, dtype=np.int64)[keep])
                       if users is not None else None)
        self.n_rows = len(keep)
        self.n_items = int(n_items)
        self.negatives = negatives
        self.n_negatives = int(n_negatives)
        self.sort_chunk = int(sort_chunk)
        self._prob: np.ndarray | None = None
        if popularity is not None:
            p = np.asarray(popularity, dtype=np.float64)
            self._prob = p / p.sum()
        self._local_size: int | None = None
        # rows longer than the window: where their sequence starts and how many windows
        # fit in it (a window may end at any of the last ``n_ends`` positions)
        self.random_windows = float(random_windows) if sequences is not None else 0.0
        if self.random_windows > 0:
            indptr, items = sequences  # type: ignore[misc]
            width = self._windows.shape[1]
            full = np.diff(np.asarray(indptr, dtype=np.int64))[keep]
            self._long = np.flatnonzero(full > width)
            self._long_start = np.asarray(indptr, dtype=np.int64)[keep][self._long]
            self._long_ends = full[self._long] - width + 1
            self._items = torch.from_numpy(np.asarray(items, dtype=np.int64))

    # -- the Sampler protocol -------------------------------------------------------------
    def use_local_shard(self, events_per_rank: int,
                        item_counts: np.ndarray | None = None) -> None:
        """This rank's windows are its own users' (data sharded by user)."""
        self._local_size = max(1, min(int(events_per_rank), self.n_rows))

    def _shard_size(self) -> int:
        if self._local_size is not None:
            return self._local_size
        return self.n_rows if self.world == 1 else self.n_rows // self.world

    def steps_per_epoch(self) -> int:
        return max(1, -(-self._shard_size() // self.batch_size))

    def positions_per_epoch(self) -> int:
        """Trained positions (targets) in one epoch: the sum of ``length - 1``."""
        return int((self._lengths - 1).sum())

    def _epoch_windows(self, rng: np.random.Generator) -> torch.Tensor:
        """This epoch's windows: each long row, with probability ``random_windows``, on
        a window ending at a uniformly drawn position (its last window included)."""
        if self.random_windows <= 0 or not len(self._long):
            return self._windows
        move = rng.random(len(self._long)) < self.random_windows
        rows = self._long[move]
        offset = (rng.random(len(rows)) * self._long_ends[move]).astype(np.int64)
        width = self._windows.shape[1]
        idx = torch.from_numpy(self._long_start[move] + offset)[:, None] + torch.arange(width)
        windows = self._windows.clone()
        windows[torch.from_numpy(rows)] = self._items[idx]
        return windows

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        windows = self._epoch_windows(rng)  # before the ranks' generators part: the same
        perm = rng.permutation(self.n_rows)
        if self._local_size is not None:
            perm = perm[:self._local_size]
        elif self.world > 1:
            perm = perm[self.rank::self.world][:self._shard_size()]
            rng = np.random.default_rng([int(rng.integers(2**62)), self.rank])
        bs = self.batch_size
        starts = np.arange(0, len(perm), bs)
        if self.sort_chunk > 0 and len(perm) > bs:
            chunk = np.arange(len(perm)) // (bs * self.sort_chunk)
            perm = perm[np.lexsort((self._lengths[perm], chunk))]
            starts = starts[rng.permutation(len(starts))]
        for start in starts:
            rows = torch.from_numpy(perm[start:start + bs])
            longest = int(self._lengths[perm[start:start + bs]].max())
            win = windows.index_select(0, rows)[:, :longest]
            batch: Batch = {"inputs": win[:, :-1], "targets": win[:, 1:]}
            if self._users is not None:
                batch["users"] = self._users.index_select(0, rows)
            if self.negatives == "position":
                batch["negatives"] = torch.from_numpy(
                    rng.integers(1, self.n_items + 1, size=(len(rows), longest - 1)))
            elif self.negatives == "sequence":
                batch["negatives"] = torch.from_numpy(
                    rng.integers(1, self.n_items + 1, size=(len(rows), self.n_negatives)))
            elif self.negatives == "shared":
                if self._prob is None:
                    neg = rng.integers(1, self.n_items + 1, size=self.n_negatives)
                else:
                    neg = rng.choice(self.n_items, size=self.n_negatives, p=self._prob) + 1
                    batch["log_q"] = torch.from_numpy(
                        np.log(self._prob[neg - 1]).astype(np.float32))
                batch["negatives"] = torch.from_numpy(neg.astype(np.int64))
            yield batch
