"""External id <-> contiguous index mapping, one per side (users, items).

External ids are whatever the user's data holds (ints or strings). They are mapped to
``0..n-1`` once, when data is loaded, and mapped back only at the edges (recommendation
output, CLI, HTTP). An unknown id maps to ``-1``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd


def _as_id_array(values: Any) -> np.ndarray:
    """Normalise external ids to an int64 array when they are all integers, else ``object`` str."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        return arr.astype(str).astype(object)
    return np.asarray([str(v) for v in arr.ravel()], dtype=object).reshape(arr.shape)


class Vocabulary:
    """An ordered set of external ids; position in the set is the internal index.

    >>> v = Vocabulary(["a", "b", "c"])
    >>> v.index(["b", "zz"]).tolist()
    [1, -1]
    >>> v.ids[[2, 0]].tolist()
    ['c', 'a']
    """

    __slots__ = ("_ids", "_index")

    def __init__(self, ids: Iterable[Any]):
        arr = _as_id_array(list(ids) if not isinstance(ids, (np.ndarray, pd.Index, pd.Series)) else ids)
        index = pd.Index(arr)
        if not index.is_unique:
            dup = index[index.duplicated()][0]
            raise ValueError(f"vocabulary ids must be unique; {dup!r} appears more than once")
        arr = arr.copy()
        arr.flags.writeable = False
        self._ids = arr
        self._index = index

    @classmethod
    def from_values(cls, values: Any) -> tuple[Vocabulary, np.ndarray]:
        """Build a vocabulary of the sorted distinct ``values``; return it and the codes."""
        arr = _as_id_array(values)
        codes, uniques = pd.factorize(arr, sort=True)
        return cls(np.asarray(uniques)), codes.astype(np.int32)

    @property
    def ids(self) -> np.ndarray:
        """The external ids, in index order (read-only)."""
        return self._ids

    @property
    def is_integer(self) -> bool:
        return self._ids.dtype.kind in "iu"

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id: Any) -> bool:
        return bool(self.index([external_id])[0] >= 0)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self is other or (len(self) == len(other) and bool(np.all(self._ids == other._ids)))

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self._ids[:3].tolist())
        more = ", ..." if len(self) > 3 else ""
        return f"Vocabulary([{head}{more}], n={len(self)})"

    def _coerce(self, external_ids: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Convert ids from an edge (CLI, HTTP: often strings) to this vocabulary's type.

        Returns the converted ids and, for integer vocabularies, a mask of the ids that
        could be converted (the others can only be unknown).
        """
        arr = np.atleast_1d(np.asarray(external_ids)).ravel()
        if self.is_integer:
            if arr.dtype.kind in "iu":
                return arr.astype(np.int64, copy=False), None
            num = pd.to_numeric(pd.Series(arr, dtype=object), errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan)
            # integral and within int64 (a larger number can only be an unknown id; casting
            # it would wrap around to some other id)
            # (float64 rounds the largest int64 values up to 2**63: those are checked exactly
            # below; True / False are not ids)
            ok = np.isfinite(num) & (num == np.round(num)) & (np.abs(num) <= 2.0**63)
            if arr.dtype == object:
                ok &= np.fromiter((not isinstance(v, (bool, np.bool_)) for v in arr), bool,
                                  count=arr.size)
            out = np.zeros(arr.size, dtype=np.int64)
            # float64 holds integers exactly only up to 2**53: larger ones (e.g. 64-bit
            # snowflake ids sent as text) are parsed again, exactly, one by one
            big = ok & (np.abs(num) >= 2.0**53)
            small = ok & ~big
            out[small] = num[small].astype(np.int64)
            for j in np.flatnonzero(big):
                try:
                    value = int(str(arr[j]).strip())
                except ValueError:  # integral but written as a float ("1e17")
                    value = int(num[j])
                if -(2**63) <= value < 2**63:
                    out[j] = value
                else:
                    ok[j] = False
            return out, ok
        if arr.dtype == object and all(isinstance(v, str) for v in arr[:1]):
            return arr, None
        return arr.astype(str).astype(object), None

    def index(self, external_ids: Any) -> np.ndarray:
        """Internal indices (int64) of ``external_ids``; ``-1`` for ids not in the vocabulary."""
        arr, ok = self._coerce(external_ids)
        if arr.size == 0:
            return np.empty(0, dtype=np.int64)
        idx = self._index.get_indexer(pd.Index(arr, dtype=self._ids.dtype)).astype(np.int64)
        if ok is not None:
            idx[~ok] = -1
        return idx

    def id(self, indices: Any) -> np.ndarray:
        """External ids at ``indices``."""
        return self._ids[np.asarray(indices, dtype=np.int64)]

    def take(self, indices: Any) -> Vocabulary:
        """A new vocabulary holding the ids at ``indices`` (in that order)."""
        return Vocabulary(self._ids[np.asarray(indices, dtype=np.int64)])

    def fingerprint(self) -> str:
        """A short stable hash of the ids, recorded in saved models."""
        h = hashlib.sha256()
        if self.is_integer:
            h.update(b"int:")
            h.update(np.ascontiguousarray(self._ids, dtype="<i8").tobytes())
        else:
            h.update(b"str:")
            h.update("\x1f".join(self._ids.tolist()).encode("utf-8"))
        return h.hexdigest()[:16]

    def to_list(self) -> list:
        return self._ids.tolist()
