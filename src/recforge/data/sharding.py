"""Partitioning events by user across the processes of a distributed job.

Rank ``r`` of ``world`` owns the users whose id hashes to ``r`` (``owner_of_ids``); its
shard is all the events of those users. Partitioning by user, not by row, keeps each
user's whole history on one rank, so a rank can exclude a user's positives when it samples
negatives and exclude seen items when it evaluates its users, without asking the others.

The hash depends only on the id's value (integers through a 64-bit mixer, text through
pandas' stable SipHash), never on file order or the process, so every rank, every file
(train, validation) and every run agrees on who owns whom. An id written as an integer
in text (``"42"``) hashes as the integer 42: a reader may see one file's ids as integers
in one block and as text in another (Parquet read batch by batch), and a user's events
must still meet on one rank.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recforge.errors import ConfigError

__all__ = ["owner_of_ids", "user_owners", "user_shard", "check_shard"]


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """``(rank, world)`` validated."""
    try:
        rank, world = (int(x) for x in shard)
    except (TypeError, ValueError):
        raise ConfigError(f"shard must be (rank, world_size), got {shard!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"shard (rank={rank}, world_size={world}) needs 0 <= rank < world_size")
    return rank, world


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer: a well-spread 64-bit hash of integers (vectorized)."""
    z = x.astype(np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def owner_of_ids(ids: np.ndarray, world: int) -> np.ndarray:
    """The rank (``0 .. world-1``) that owns each external user id."""
    ids = np.asarray(ids)
    if world == 1:
        return np.zeros(len(ids), dtype=np.int32)
    if ids.dtype.kind in "iu":
        h = _mix64(ids)
    else:
        text = pd.Series(ids.astype(str).astype(object))
        h = pd.util.hash_array(text.to_numpy(dtype=object), categorize=True)
        as_int = _integers_in_text(text)
        if as_int is not None:
            where, values = as_int
            h[where] = _mix64(values)
    return (h % np.uint64(world)).astype(np.int32)


#: Text the readers turn into an integer id ("007" and "-0" stay text: they would lose
#: their zeros or their sign, and "-0" would become the id "0").
INTEGER_ID = r"(?:0|-?[1-9][0-9]*)"


def _integers_in_text(text: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """Positions and int64 values of the entries that are integers int64 holds."""
    looks = text.str.fullmatch(INTEGER_ID).to_numpy(dtype=bool)
    if not looks.any():
        return None
    where = np.flatnonzero(looks)
    digits = text.iloc[where]
    short = (digits.str.len() <= 18).to_numpy()  # 18 digits always fit in int64
    values = np.zeros(len(where), dtype=np.int64)
    values[short] = digits[short].astype("int64").to_numpy()
    fits = short.copy()
    for k in np.flatnonzero(~short):  # 19+ characters: rare, checked one by one
        v = int(digits.iloc[k])
        if -(2**63) <= v < 2**63:
            values[k], fits[k] = v, True
    return where[fits], values[fits]


def user_owners(data, world: int) -> np.ndarray:
    """The owning rank of each user index of ``data``'s user vocabulary."""
    return owner_of_ids(data.users.ids, world)


def user_shard(data, rank: int, world: int):
    """The events of the users that rank ``rank`` of ``world`` owns (vocabularies shared)."""
    rank, world = check_shard((rank, world))
    if world == 1:
        return data
    owned = user_owners(data, world) == rank
    return data.subset(owned[data.user])
