"""Reading interaction logs into :class:`~recforge.data.interactions.Interactions`: CSV /
TSV / Parquet files, adjacency lists, pandas DataFrames.

Every reader validates what it reads and raises :class:`~recforge.errors.DataError` naming
the file, the line (or Parquet row) and the column at fault. Readers never write anything.

Duplicate (user, item) pairs follow an explicit policy (``duplicates=``): by default they
are an error, because silently summing or dropping them changes what a model learns; pass
``"last"`` for re-ratings (keep the latest), ``"sum"`` for click / play counts. The
validation itself is in :mod:`recforge.data.frames`, the formats in
:mod:`recforge.data.formats` and :mod:`recforge.data.parquet`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recforge.data.formats import (
    FORMATS,
    adjacency_columns,
    adjacency_events,
    csv_columns,
    csv_events,
    detect_format,
    sequences_columns,
    sequences_events,
)
from recforge.data.frames import (
    Columns,
    DuplicatePolicy,
    UnknownPolicy,
    events_from_frame,
    index_columns,
    parse_columns,
)
from recforge.data.interactions import Interactions
from recforge.data.parquet import parquet_columns, parquet_events
from recforge.data.sharding import user_shard
from recforge.data.vocabulary import Vocabulary
from recforge.errors import DataError

__all__ = [
    "read_pairs",
    "read_interactions",
    "read_many",
    "read_csv",
    "read_parquet",
    "read_adjacency",
    "read_sequences",
    "interactions_from_frame",
]


def interactions_from_frame(frame: pd.DataFrame, *, columns: Mapping[str, str] | None = None,
                            users: Vocabulary | None = None, items: Vocabulary | None = None,
                            unknown: UnknownPolicy = "error",
                            duplicates: DuplicatePolicy = "error", source: str | None = None,
                            line_numbers: Sequence[int] | None = None,
                            unit: str = "row") -> Interactions:
    """Build :class:`Interactions` from a DataFrame; see :meth:`Interactions.from_frame`."""
    return Interactions.from_events(events_from_frame(
        frame, columns=columns, users=users, items=items, unknown=unknown,
        duplicates=duplicates, source=source, line_numbers=line_numbers, unit=unit))


def read_csv(path: str | os.PathLike, *, sep: str | None = None, header: bool | None = None,
             names: Sequence[str] | None = None, columns: Mapping[str, str] | str | None = None,
             encoding: str = "utf-8", users: Vocabulary | None = None,
             items: Vocabulary | None = None, unknown: UnknownPolicy = "error",
             duplicates: DuplicatePolicy = "error") -> Interactions:
    """Read a delimited text file (CSV, TSV, ``::``-separated, whitespace-separated).

    Parameters
    ----------
    sep:
        The delimiter; sniffed from the first line when omitted (tab, ``::``, comma,
        semicolon, pipe, whitespace).
    header:
        Whether the first line names the columns. When omitted, a first line whose fields
        are all numbers is taken as data, and columns are then named by position
        ``user, item[, rating[, timestamp]]`` (the MovieLens ``u.data`` layout).
    names:
        Column names to use for a file without a header.
    columns:
        Canonical name -> column name mapping (see :meth:`Interactions.from_frame`).
    """
    return Interactions.from_events(csv_events(
        path, sep=sep, header=header, names=names, columns=columns, encoding=encoding,
        users=users, items=items, unknown=unknown, duplicates=duplicates))


def read_parquet(path: str | os.PathLike, *, columns: Mapping[str, str] | str | None = None,
                 users: Vocabulary | None = None, items: Vocabulary | None = None,
                 unknown: UnknownPolicy = "error", duplicates: DuplicatePolicy = "error",
                 batch_rows: int = 1 << 20,
                 shard: tuple[int, int] | None = None) -> Interactions:
    """Read a Parquet file in a streaming pass; errors name the row (1-based).

    Only the needed columns are read, ``batch_rows`` rows at a time (pyarrow record
    batches): each batch is validated, its ids are mapped to indices, and it is copied into
    preallocated compact arrays (int32 indices, float32 values, int64 timestamps; 12-20
    bytes per event). No DataFrame of the whole file is built, so peak memory stays near the
    size of the result: 20M events take about 0.4 GB (docs/scaling.md).

    ``shard=(rank, world_size)`` keeps only the events of the users that rank owns
    (:mod:`recforge.data.sharding`): the vocabularies still hold every id of the file, so
    all ranks index users and items alike, but a rank stores only its share of the events.
    """
    return Interactions.from_events(parquet_events(
        path, columns=columns, users=users, items=items, unknown=unknown,
        duplicates=duplicates, batch_rows=batch_rows, shard=shard))


def read_adjacency(path: str | os.PathLike, *, users: Vocabulary | None = None,
                   items: Vocabulary | None = None, unknown: UnknownPolicy = "error",
                   duplicates: DuplicatePolicy = "error", encoding: str = "utf-8") -> Interactions:
    """Read an adjacency list: one line per user, ``user item item ...`` separated by blanks.

    This is the layout of the LightGCN / NGCF benchmark splits (``train.txt``). Ids are
    integers when every token is an integer, else strings. A line with a user and no items
    is allowed (a user with no events here).
    """
    return Interactions.from_events(adjacency_events(
        path, users=users, items=items, unknown=unknown, duplicates=duplicates,
        encoding=encoding))


def read_sequences(path: str | os.PathLike, *, users: Vocabulary | None = None,
                   items: Vocabulary | None = None, unknown: UnknownPolicy = "error",
                   duplicates: DuplicatePolicy = "error") -> Interactions:
    """Read ordered sequences: one line per user, ``user item item ...``, oldest first.

    The position in the line is the order: the events are kept in file order and have no
    timestamps, so their order in time (:meth:`Interactions.order`,
    :meth:`Interactions.sequences`) is that order. Ids must be integers; a bad token is an
    error naming the line and its field. ``format="sequences"`` in
    :func:`read_interactions` does the same.
    """
    return Interactions.from_events(sequences_events(
        path, users=users, items=items, unknown=unknown, duplicates=duplicates))


def _read_columns(path: Path, format: str | None, columns: Mapping[str, str],
                  encoding: str, sep: str | None, header: bool | None) -> Columns:
    fmt = format or detect_format(path, encoding)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {FORMATS}", source=str(path))
    if fmt == "parquet":  # read_interactions streams Parquet; read_many needs raw columns
        return parquet_columns(path, columns)
    if fmt == "adjacency":
        return adjacency_columns(path, encoding)
    if fmt == "sequences":
        return sequences_columns(path)
    return csv_columns(path, sep=sep or ("\t" if fmt == "tsv" else None), header=header,
                       names=None, columns=columns, encoding=encoding)


def read_interactions(path: str | os.PathLike, *, format: str | None = None,
                      columns: Mapping[str, str] | str | None = None, encoding: str = "utf-8",
                      sep: str | None = None, header: bool | None = None,
                      users: Vocabulary | None = None, items: Vocabulary | None = None,
                      unknown: UnknownPolicy = "error",
                      duplicates: DuplicatePolicy = "error",
                      shard: tuple[int, int] | None = None) -> Interactions:
    """Read any supported file, detecting the format from the extension and content.

    ``format`` is one of ``csv``, ``tsv``, ``parquet``, ``adjacency``, ``sequences``
    (never detected: an ordered adjacency list reads the same as ``adjacency``, but with
    integer ids only and the position in the line as the order). ``shard=(rank,
    world_size)`` keeps only the events of the users that rank owns (the vocabularies keep
    every id): Parquet is filtered while it streams, other formats after reading.
    """
    fmt = format or detect_format(Path(path), encoding)
    if fmt == "parquet":
        return read_parquet(path, columns=columns, users=users, items=items, unknown=unknown,
                            duplicates=duplicates, shard=shard)
    cols = _read_columns(Path(path), fmt, parse_columns(columns), encoding, sep, header)
    data = Interactions.from_events(index_columns(cols, users, items, unknown, duplicates))
    return data if shard is None else user_shard(data, *shard)


def read_pairs(path: str | os.PathLike, *, format: str | None = None,
               columns: Mapping[str, str] | str | None = None, encoding: str = "utf-8",
               header: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (user, item) external ids of every row of a file, in order, repeats kept (what
    ``recforge predict`` answers row for row); errors as for :func:`read_interactions`."""
    cols = _read_columns(Path(path), format, parse_columns(columns), encoding, None, header)
    return cols.user, cols.item


def read_many(paths: Sequence[str | os.PathLike], *, format: str | None = None,
              columns: Mapping[str, str] | str | None = None, encoding: str = "utf-8",
              duplicates: DuplicatePolicy = "error", shard: tuple[int, int] | None = None,
              header: bool | None = None) -> list[Interactions]:
    """Read several files (e.g. train / valid / test) into one shared pair of vocabularies.

    The vocabularies hold the sorted union of the ids of all files, so the same id has the
    same index in every returned :class:`Interactions`. ``shard=(rank, world_size)`` keeps
    only the events of the users that rank owns, in every file alike.
    """
    mapping = parse_columns(columns)
    parts = [_read_columns(Path(p), format, mapping, encoding, None, header) for p in paths]
    users, _ = Vocabulary.from_values(_concat_ids([c.user for c in parts]))
    items, _ = Vocabulary.from_values(_concat_ids([c.item for c in parts]))
    sessions = [c.session for c in parts if c.session is not None]
    if sessions and any(s.dtype.kind not in "iu" for s in sessions):
        # text session ids numbered over all files alike (each file alone would restart at 0)
        codes, _ = pd.factorize(_concat_ids(sessions))
        bounds = np.cumsum([0] + [len(s) for s in sessions])
        k = 0
        for c in parts:
            if c.session is not None:
                c.session = codes[bounds[k]:bounds[k + 1]].astype(np.int64)
                k += 1
    out = [Interactions.from_events(index_columns(c, users, items, "error", duplicates))
           for c in parts]
    return out if shard is None else [user_shard(d, *shard) for d in out]


def _concat_ids(arrays: list[np.ndarray]) -> np.ndarray:
    if all(a.dtype.kind in "iu" for a in arrays):
        return np.concatenate(arrays)
    return np.concatenate([a.astype(str).astype(object) for a in arrays])
