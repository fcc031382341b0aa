"""Reading interactions from Parquet in one streaming pass.

Only the needed columns are read, a record batch at a time: each batch is validated, its
ids are mapped to indices, and it is copied into preallocated compact arrays (int32
indices, float32 values, int64 timestamps; 12-20 bytes per event). No DataFrame of the
whole file is built, so peak memory stays near the size of the result (docs/scaling.md).
The public reader returning ``Interactions`` is :func:`recforge.data.readers.read_parquet`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recforge.data.formats import check_readable
from recforge.data.frames import (
    Columns,
    DuplicatePolicy,
    IndexedEvents,
    UnknownPolicy,
    check_policies,
    extract_columns,
    map_ids,
    parse_columns,
    resolve_columns,
    resolve_duplicates,
)
from recforge.data.sharding import check_shard, owner_of_ids
from recforge.data.vocabulary import Vocabulary
from recforge.errors import DataError

__all__ = ["parquet_columns", "parquet_events"]


def parquet_events(path: str | os.PathLike, *, columns: Mapping[str, str] | str | None = None,
                   users: Vocabulary | None = None, items: Vocabulary | None = None,
                   unknown: UnknownPolicy = "error", duplicates: DuplicatePolicy = "error",
                   batch_rows: int = 1 << 20,
                   shard: tuple[int, int] | None = None) -> IndexedEvents:
    """The events of a Parquet file as index arrays, read ``batch_rows`` rows at a time;
    see ``read_parquet``. Errors name the row (1-based)."""
    check_policies(duplicates, unknown)
    path = Path(path)
    src = os.fspath(path)
    pf = _open(path)
    resolved = resolve_columns(list(pf.schema_arrow.names), parse_columns(columns), src)
    n = pf.metadata.num_rows
    if n == 0:
        raise DataError("no interactions (the file has no rows)", source=src)
    rank, world = check_shard(shard) if shard is not None else (0, 1)
    buf = _Buffer(n, "rating" in resolved, "timestamp" in resolved, sharded=world > 1,
                  has_session="session" in resolved)
    session_ids = _StreamingIds() if "session" in resolved else None
    user_ids = None if users is not None else _StreamingIds()
    item_ids = None if items is not None else _StreamingIds()
    try:
        for cols in _batches(pf, resolved, src, batch_rows):
            bu = (user_ids.codes(cols.user) if user_ids is not None
                  else map_ids(cols.user, users, cols, "user", unknown))
            bi = (item_ids.codes(cols.item) if item_ids is not None
                  else map_ids(cols.item, items, cols, "item", unknown))
            # with a shard every id enters the vocabularies; only owned rows stay
            mine = owner_of_ids(cols.user, world) == rank if world > 1 else None
            bs = None if session_ids is None else session_ids.codes(cols.session)
            buf.append(cols, bu, bi, mine, bs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read Parquet data: {exc}", source=src) from None
    if world > 1 and buf.size == 0:
        raise DataError(f"no interactions for shard {rank} of {world} (the file's users "
                        "all belong to other ranks)", source=src)
    u, i, value, timestamp, rows = buf.result()
    session = None
    if session_ids is not None:  # integer ids as they are, others numbered by appearance
        session = buf.session_result()
        if session_ids.all_integer():
            session = session_ids.in_order()[session]
    if user_ids is not None:
        users, remap = user_ids.finish()
        np.take(remap, u, out=u)
    if item_ids is not None:
        items, remap = item_ids.finish()
        np.take(remap, i, out=i)
    assert users is not None and items is not None
    where = rows
    keep = (u >= 0) & (i >= 0)
    if not keep.all():  # unknown="drop"
        where = (np.flatnonzero(keep) + 1) if rows is None else rows[keep]
        u, i = u[keep], i[keep]
        value = None if value is None else value[keep]
        timestamp = None if timestamp is None else timestamp[keep]
        session = None if session is None else session[keep]
        if len(u) == 0:
            raise DataError("no interactions left after dropping unknown ids", source=src)
    del keep
    return resolve_duplicates(u, i, value, timestamp, where, users, items, src, "row",
                              duplicates, session)


def parquet_columns(path: Path, columns: Mapping[str, str]) -> Columns:
    """The validated raw columns of a whole Parquet file (``columns`` already parsed)."""
    src = os.fspath(path)
    schema = _open(path).schema_arrow
    resolved = resolve_columns(list(schema.names), columns, src)
    try:
        table = pq.read_table(path, columns=[resolved[k] for k in resolved])
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read Parquet data: {exc}", source=src) from None
    frame = table.to_pandas()
    if len(frame) == 0:
        raise DataError("no interactions (the file has no rows)", source=src)
    mapping = {k: str(v) for k, v in resolved.items()}
    return extract_columns(frame, mapping, src, None, "row")


def _open(path: Path) -> pq.ParquetFile:
    """The file opened for reading its schema and batches; not Parquet is a DataError."""
    check_readable(path)
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", source=os.fspath(path)) from None


def _batches(pf: pq.ParquetFile, resolved: Mapping[str, Any], src: str,
             batch_rows: int) -> Iterator[Columns]:
    """The validated columns of each record batch, rows numbered from 1 across batches."""
    mapping = {k: str(v) for k, v in resolved.items()}
    row = 0
    for batch in pf.iter_batches(batch_size=int(batch_rows),
                                 columns=[resolved[k] for k in resolved]):
        frame = batch.to_pandas()
        cols = extract_columns(frame, mapping, src, np.arange(row + 1, row + len(frame) + 1),
                               "row")
        row += len(frame)
        del frame
        yield cols


class _Buffer:
    """Compact event arrays preallocated for the whole file and filled batch by batch.

    With a shard, the arrays are filled only up to the kept events: ``np.empty`` does not
    touch the pages past them, so they never take memory. ``rows`` (sharded only) keeps
    the file's row number of each kept event for error messages.
    """

    def __init__(self, n: int, has_value: bool, has_timestamp: bool, sharded: bool,
                 has_session: bool = False):
        self.user = np.empty(n, dtype=np.int32)
        self.item = np.empty(n, dtype=np.int32)
        self.value = np.empty(n, dtype=np.float32) if has_value else None
        self.timestamp = np.empty(n, dtype=np.int64) if has_timestamp else None
        self.rows = np.empty(n, dtype=np.int64) if sharded else None
        self.session = np.empty(n, dtype=np.int64) if has_session else None
        self.size = 0

    def append(self, cols: Columns, u: np.ndarray, i: np.ndarray,
               mine: np.ndarray | None, session: np.ndarray | None = None) -> None:
        """Add a batch's index arrays (and its values and times), only rows ``mine``
        when given."""
        value, timestamp = cols.value, cols.timestamp
        if mine is not None:
            u, i = u[mine], i[mine]
            value = None if value is None else value[mine]
            timestamp = None if timestamp is None else timestamp[mine]
            session = None if session is None else session[mine]
        start, end = self.size, self.size + len(u)
        if self.rows is not None:
            self.rows[start:end] = np.asarray(cols.where)[mine]
        self.user[start:end] = u
        self.item[start:end] = i
        if self.value is not None:
            self.value[start:end] = value
        if self.timestamp is not None:
            self.timestamp[start:end] = timestamp
        if self.session is not None:
            self.session[start:end] = session
        self.size = end

    def session_result(self) -> np.ndarray:
        """The session codes of the kept events (int64)."""
        assert self.session is not None
        return self.session[:self.size] if self.rows is not None else self.session

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None,
                              np.ndarray | None]:
        """``(user, item, value, timestamp, rows)``: with a shard, the kept part copied out
        (the untouched tails are never resident)."""
        if self.rows is None:
            return self.user, self.item, self.value, self.timestamp, None
        k = self.size
        return (self.user[:k].copy(), self.item[:k].copy(),
                None if self.value is None else self.value[:k].copy(),
                None if self.timestamp is None else self.timestamp[:k].copy(),
                self.rows[:k].copy())


class _StreamingIds:
    """Maps external ids to indices batch by batch; the vocabulary is sorted at the end.

    Indices are first given in order of first appearance; :meth:`finish` sorts the distinct
    ids (the order :meth:`Vocabulary.from_values` uses) and returns the permutation that
    renumbers what was handed out.
    """

    def __init__(self) -> None:
        self._index = pd.Index([])
        self._parts: list[np.ndarray] = []
        self._kinds: set[str] = set()

    def codes(self, ids: np.ndarray) -> np.ndarray:
        self._kinds.add("int" if ids.dtype.kind in "iu" else "str")
        local, uniq = pd.factorize(ids)
        uniq = np.asarray(uniq)
        pos = self._index.get_indexer(uniq) if len(self._index) else np.full(len(uniq), -1)
        new = pos < 0
        if new.any():
            start = len(self._index)
            pos[new] = np.arange(start, start + int(new.sum()))
            self._parts.append(uniq[new])
            self._index = self._index.append(pd.Index(uniq[new]))
        return pos[local].astype(np.int32)

    def all_integer(self) -> bool:
        return self._kinds <= {"int"}

    def in_order(self) -> np.ndarray:
        """The distinct ids in order of first appearance (index = code)."""
        return np.concatenate(self._parts) if self._parts else np.empty(0, dtype=np.int64)

    def finish(self) -> tuple[Vocabulary, np.ndarray]:
        ids = np.concatenate(self._parts) if self._parts else np.empty(0, dtype=np.int64)
        if len(self._kinds) > 1:  # integer-looking ids in some batches, text in others
            ids = np.asarray([str(x) for x in ids], dtype=object)
        uniq, remap = np.unique(ids, return_inverse=True)
        return Vocabulary(uniq), remap.astype(np.int32)


