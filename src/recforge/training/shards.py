"""Training data sharded by user across DDP ranks: statistics over every rank's shard,
the check that each rank holds what ``sharded`` says, and the collections at the end
(one fingerprint, every rank's seen items) that a saved model needs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from recforge.data.interactions import Interactions
from recforge.data.sharding import owner_of_ids
from recforge.errors import ConfigError, DataError
from recforge.training.distributed import active, collective_device

__all__ = ["DataStats", "check_rank_data", "combined_fingerprint", "gather_seen"]


@dataclass
class DataStats:
    """Counts and value statistics of the training events: of this process's data, or of
    every rank's shard together when each rank holds only the events of its users."""

    n_events: int
    user_counts: np.ndarray
    item_counts: np.ndarray
    value_sum: float = 0.0
    value_min: float = float("nan")
    value_max: float = float("nan")

    @property
    def value_mean(self) -> float:
        return self.value_sum / max(1, self.n_events)

    @classmethod
    def of(cls, train: Interactions, *, sharded: bool = False,
           device: torch.device | None = None) -> DataStats:
        stats = cls(n_events=len(train), user_counts=train.user_counts(),
                    item_counts=train.item_counts())
        if train.value is not None and len(train):
            v = train.value.astype(np.float64)
            stats.value_sum, stats.value_min, stats.value_max = (
                float(v.sum()), float(v.min()), float(v.max()))
        if not sharded:
            return stats
        dev = device or torch.device("cpu")
        counts = torch.from_numpy(np.concatenate(
            [stats.user_counts, stats.item_counts, [stats.n_events]]).astype(np.int64)).to(dev)
        dist.all_reduce(counts)
        counts = counts.cpu().numpy()
        total = torch.tensor([stats.value_sum], dtype=torch.float64, device=dev)
        dist.all_reduce(total)
        inf = float("inf")
        lo = torch.tensor([stats.value_min if stats.value_min == stats.value_min else inf],
                          dtype=torch.float64, device=dev)
        hi = torch.tensor([stats.value_max if stats.value_max == stats.value_max else -inf],
                          dtype=torch.float64, device=dev)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        nu = len(stats.user_counts)
        return cls(n_events=int(counts[-1]), user_counts=counts[:nu],
                   item_counts=counts[nu:-1], value_sum=float(total.item()),
                   value_min=float(lo.item()) if train.value is not None else float("nan"),
                   value_max=float(hi.item()) if train.value is not None else float("nan"))


def check_rank_data(train: Interactions, valid: Interactions | None, rank: int, world: int,
                    sharded: bool, device: torch.device) -> None:
    """Refuse, on every rank alike, data that does not match ``sharded``: with
    ``sharded=True`` a rank holding events of users another rank owns (they would be
    trained twice, and the compact user tables cannot look them up); with
    ``sharded=False`` ranks holding different numbers of events (each rank's shard,
    which would train on part of the data, or end in a collective mismatch)."""
    if not active():
        raise ConfigError("distributed training needs an initialised process group: "
                          "launch with `recforge train --nproc N` or torchrun")
    foreign = 0
    if sharded:
        for data in (train, valid):
            if data is not None and len(data):
                ids = data.users.ids[np.unique(data.user)]
                foreign += int((owner_of_ids(ids, world) != rank).sum())
    figures = torch.tensor([foreign, len(train), -len(train)], dtype=torch.int64,
                           device=collective_device(device))
    dist.all_reduce(figures, op=dist.ReduceOp.MAX)
    foreign_max, most, fewest = (int(figures[0]), int(figures[1]), -int(figures[2]))
    if sharded and foreign_max:
        raise DataError(f"sharded=True, but a rank holds the events of {foreign_max:,} "
                        "users that another rank owns: give each rank only its users' "
                        "events (recforge.data.sharding.user_shard, or a reader's "
                        "shard=), or pass sharded=False when every rank holds all events")
    if not sharded and most != fewest:
        raise DataError(f"sharded=False, but the ranks hold different training data "
                        f"({fewest:,} to {most:,} events): every rank needs all events; "
                        "pass sharded=True when each rank holds its own users' shard")


def combined_fingerprint(fingerprint: str) -> str:
    """One training-data fingerprint of every rank's shard (checkpoints, meta.json)."""
    prints: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(prints, fingerprint)
    return hashlib.sha256("|".join(prints).encode()).hexdigest()[:16]


def gather_seen(seen: sp.csr_matrix, rank: int) -> sp.csr_matrix:
    """Every rank's training events on rank 0 (the seen items a saved model keeps for
    every user); the other ranks keep their own."""
    coo = seen.tocoo()
    mine = (coo.row.astype(np.int32), coo.col.astype(np.int32),
            coo.data.astype(np.float32))
    if dist.get_backend() == "nccl":  # gather_object is not implemented for NCCL
        parts: list[Any] | None = [None] * dist.get_world_size()
        dist.all_gather_object(parts, mine)
    else:
        parts = [None] * dist.get_world_size() if rank == 0 else None
        dist.gather_object(mine, parts, dst=0)
    if rank != 0:
        return seen
    assert parts is not None
    rows = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts])
    return sp.csr_matrix((vals, (rows, cols)), shape=seen.shape)
