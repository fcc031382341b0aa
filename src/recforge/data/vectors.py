"""Precomputed item vectors of any modality (image, audio, text) as a feature block.

An embedding made elsewhere (CLIP image vectors, CLAP audio vectors, a text model's
output, the ``recforge[vision]`` image encoder) reaches every feature model (``content``,
``hybrid``, ``hybrid_bpr``, ``vbpr``) as a dense :class:`~recforge.data.features.Features`
block named after its modality, combinable with genres or text like any other block.

Layouts :func:`item_vectors` reads:

- **Parquet**: an id column plus either one list column (``list<float>`` or
  ``fixed_size_list<float, d>``, every row the same length; name it with ``column=`` when
  there are several) or only numeric columns, one per dimension.
- **.npy, 2-D** ``float [n, d]``: the ids come from ``ids=`` (a sequence, or the path of a
  text file with one id per line); by default from ``<name>.ids.txt`` beside the
  ``<name>.npy`` file.
- **.npy, structured**: ``np.save(path, rows)`` of a structured array with an id field
  (``id_column``) and one vector field of shape ``(d,)``, e.g.
  ``dtype=[("item", "i8"), ("vector", "f4", (512,))]``.

Everything is checked and reported as :class:`~recforge.errors.DataError` naming the file,
row (1-based) and column: an unreadable file, a missing or duplicate id, a missing vector,
vectors of differing lengths, a dimension other than ``dim=``, NaN or infinite values.
Ids the interactions do not know (``known=``) are, by ``unknown``: ``"keep"`` (the
default: they join the catalogue as items without interactions, recommendable from their
vectors alone, as with any feature table), ``"drop"``, or ``"error"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recforge.data.features import Features, dense
from recforge.data.parsing import shown
from recforge.data.vocabulary import Vocabulary
from recforge.errors import ConfigError, DataError

__all__ = ["item_vectors", "vectors_from_arrays", "write_item_vectors"]

Unknown = Literal["keep", "drop", "error"]


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or ":" in name or "=" in name:
        raise ConfigError(f"vector block name must be a non-empty word without ':' or '=', "
                          f"got {name!r}")
    return name


def _normalise_ids(ids: np.ndarray) -> np.ndarray:
    """Ids as the interaction readers give them: integers when every id is an integer
    (``"42"`` from a text file is item 42), else text."""
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    values = ids.astype(object)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
           for v in values):
        return values.astype(np.int64)
    if all(isinstance(v, (float, np.floating)) and float(v).is_integer() and abs(v) < 2**53
           for v in values):
        return values.astype(np.int64)
    text = np.array([str(v).strip() for v in values], dtype=object)
    if all(t.lstrip("-").isdigit() and len(t.lstrip("-")) < 19 for t in text):
        return text.astype(np.int64)
    return text


def vectors_from_arrays(ids: Any, matrix: Any, *, name: str = "vectors",
                        source: str = "<arrays>", id_column: str = "item",
                        dim: int | None = None, known: Vocabulary | None = None,
                        unknown: Unknown = "keep") -> Features:
    """Validate ``ids`` and a ``[len(ids), d]`` ``matrix`` and return them as a feature
    block ``name`` (see the module docstring for the checks)."""
    _check_name(name)
    if unknown not in ("keep", "drop", "error"):
        raise ConfigError(f"unknown must be 'keep', 'drop' or 'error', got {unknown!r}")
    id_arr = np.asarray(ids, dtype=object).ravel() if not isinstance(ids, np.ndarray) \
        else ids.ravel()
    m = np.asarray(matrix)
    if m.dtype.kind not in "fiub":
        raise DataError(f"vectors must be numbers, got {m.dtype}", source=source)
    if m.ndim != 2:
        raise DataError(f"vectors must be a 2-D array [items, dimensions], got shape "
                        f"{m.shape}", source=source)
    if len(id_arr) != m.shape[0]:
        raise DataError(f"{len(id_arr):,} ids for {m.shape[0]:,} vectors", source=source)
    if m.shape[0] == 0:
        raise DataError("no vectors", source=source)
    if m.shape[1] == 0:
        raise DataError("the vectors have no dimensions", source=source)
    if dim is not None and m.shape[1] != int(dim):
        raise DataError(f"the vectors have {m.shape[1]} dimensions, expected {int(dim)}",
                        source=source)
    series = pd.Series(id_arr, dtype=object)
    missing = series.isna().to_numpy().copy()
    if id_arr.dtype == object:
        missing |= np.array([isinstance(v, str) and not v.strip() for v in id_arr], bool)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError("missing id", source=source, row=row + 1, column=id_column)
    normalised = _normalise_ids(id_arr)
    key = pd.Series(normalised)
    dup = key.duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((key == key.iloc[row]).to_numpy())[0])
        raise DataError(f"id {shown(key.iloc[row])} appears twice (first at row {first + 1})",
                        source=source, row=row + 1, column=id_column)
    values = m.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        row, col = (int(x) for x in np.argwhere(~finite)[0])
        raise DataError(f"{m[row, col]} in dimension {col} of the vector of id "
                        f"{shown(key.iloc[row])}", source=source, row=row + 1,
                        column=f"{name}[{col}]")
    vocab = Vocabulary(normalised)
    if known is not None and unknown != "keep":
        known_ids = known.index(vocab.ids) >= 0
        if unknown == "error" and not known_ids.all():
            row = int(np.flatnonzero(~known_ids)[0])
            raise DataError(f"id {shown(vocab.ids[row])} is not an item of the interactions "
                            f"({(~known_ids).sum():,} such ids; unknown='keep' makes them "
                            "cold items, 'drop' leaves them out)", source=source, row=row + 1,
                            column=id_column)
        if unknown == "drop":
            keep = np.flatnonzero(known_ids)
            if len(keep) == 0:
                raise DataError("no id of the vectors is an item of the interactions "
                                f"(vectors: {vocab.ids[:3].tolist()}..., items: "
                                f"{known.ids[:3].tolist()}...)", source=source,
                                column=id_column)
            vocab, values = vocab.take(keep), values[keep]
    return dense(vocab, values, name)


def _ids_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"ids file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                        source=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read the ids file: {exc.strerror}", source=str(path)) from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def _read_npy(path: Path, id_column: str, ids: Sequence[Any] | str | os.PathLike | None
              ) -> tuple[np.ndarray, np.ndarray]:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays, a malformed header
        raise DataError(f"cannot read the .npy file ({exc}); store numbers, not objects",
                        source=str(path)) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read the .npy file: {exc}", source=str(path)) from None
    if not isinstance(arr, np.ndarray):
        raise DataError("not a single .npy array", source=str(path))
    if arr.dtype.names:  # structured: an id field and a vector field
        fields = list(arr.dtype.names)
        if id_column not in fields:
            raise DataError(f"no id field {id_column!r}; the fields are {fields}",
                            source=str(path), column=id_column)
        others = [f for f in fields if f != id_column]
        if len(others) != 1:
            raise DataError(f"a structured .npy needs one vector field besides the id, "
                            f"found {others}", source=str(path))
        vec = arr[others[0]]
        if vec.ndim == 1:
            vec = vec[:, None]
        return np.asarray(arr[id_column]).astype(object), vec.reshape(len(arr), -1)
    if ids is None:
        sidecar = path.with_suffix(".ids.txt")
        if not sidecar.is_file():
            raise DataError(f"a plain .npy array needs its ids: pass ids= (a list or a text "
                            f"file with one id per line) or put them in {sidecar.name} "
                            "beside it", source=str(path))
        id_list: Any = _ids_file(sidecar)
    elif isinstance(ids, (str, os.PathLike)):
        if not Path(ids).is_file():
            raise DataError("ids file not found", source=str(ids))
        id_list = _ids_file(Path(ids))
    else:
        id_list = list(ids)
    return np.asarray(id_list, dtype=object), arr


def _read_parquet(path: Path, id_column: str, column: str | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    # lazy: pyarrow is a dependency, but only Parquet vectors need its compute module
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"cannot read the Parquet file: {' '.join(str(exc).split())}",
                        source=str(path)) from None
    names = list(table.column_names)
    if id_column not in names:
        raise DataError(f"no id column {id_column!r}; the columns are {names}",
                        source=str(path), column=id_column)
    ids = np.asarray(table.column(id_column).to_pylist(), dtype=object)
    rest = [c for c in names if c != id_column]
    lists = [c for c in rest if pa.types.is_list(table.schema.field(c).type)
             or pa.types.is_large_list(table.schema.field(c).type)
             or pa.types.is_fixed_size_list(table.schema.field(c).type)]
    if column is not None:
        if column not in names:
            raise DataError(f"no vector column {column!r}; the columns are {names}",
                            source=str(path), column=column)
        if column not in lists:
            raise DataError(f"column {column!r} is not a list of numbers "
                            f"({table.schema.field(column).type})", source=str(path),
                            column=column)
        lists = [column]
    elif len(lists) > 1:
        raise DataError(f"several list columns {lists}: name the vectors with column=",
                        source=str(path))
    if lists:
        col = lists[0]
        chunked = table.column(col).combine_chunks()
        value_type = chunked.type.value_type
        if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
            raise DataError(f"the vectors must be numbers, got {chunked.type}",
                            source=str(path), column=col)
        null = np.asarray(chunked.is_null().to_numpy(zero_copy_only=False), bool)
        if null.any():
            row = int(np.flatnonzero(null)[0])
            raise DataError("missing vector", source=str(path), row=row + 1, column=col)
        lengths = np.asarray(pc.list_value_length(chunked).to_numpy(zero_copy_only=False),
                             np.int64)
        if len(lengths) and (lengths != lengths[0]).any():
            row = int(np.flatnonzero(lengths != lengths[0])[0])
            raise DataError(f"a vector of {lengths[row]} numbers where the first row has "
                            f"{lengths[0]}", source=str(path), row=row + 1, column=col)
        flat = chunked.flatten()
        if flat.null_count:
            at = int(np.flatnonzero(np.asarray(flat.is_null().to_numpy(
                zero_copy_only=False)))[0])
            row = int(at // max(int(lengths[0]), 1))
            raise DataError(f"a missing number in dimension {at - row * int(lengths[0])}",
                            source=str(path), row=row + 1, column=col)
        values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64)
        d = int(lengths[0]) if len(lengths) else 0
        return ids, values.reshape(len(ids), d)
    if not rest:
        raise DataError("no vector column besides the id", source=str(path))
    for c in rest:
        t = table.schema.field(c).type
        if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            raise DataError(f"column {c!r} is {t}: vectors are one list column or only "
                            "numeric columns", source=str(path), column=c)
        if table.column(c).null_count:
            null = np.asarray(table.column(c).is_null().to_numpy(), bool)
            row = int(np.flatnonzero(null)[0])
            raise DataError("missing value", source=str(path), row=row + 1, column=c)
    values = np.column_stack([table.column(c).to_numpy().astype(np.float64) for c in rest])
    return ids, values


def item_vectors(path: str | os.PathLike, id_column: str = "item", *,
                 name: str = "vectors", ids: Sequence[Any] | str | os.PathLike | None = None,
                 column: str | None = None, dim: int | None = None,
                 known: Vocabulary | None = None, unknown: Unknown = "keep") -> Features:
    """Read precomputed item vectors (Parquet or ``.npy``; see the module docstring for
    the layouts) into a feature block ``name`` (``image``, ``audio``, ...).

    ``dim`` checks the dimension; ``known`` (e.g. ``train.items``) with ``unknown``
    decides what becomes of ids the interactions do not have.
    """
    _check_name(name)
    p = Path(path)
    if not p.is_file():
        raise DataError("no such file" if not p.exists() else "not a file", source=str(p))
    suffix = p.suffix.lower()
    if suffix == ".npy":
        id_arr, matrix = _read_npy(p, id_column, ids)
    elif suffix in (".parquet", ".pq"):
        if ids is not None:
            raise ConfigError("ids= is for plain .npy arrays; a Parquet file has its id "
                              "column")
        id_arr, matrix = _read_parquet(p, id_column, column)
    else:
        raise DataError("item vectors are read from .npy or .parquet files", source=str(p))
    return vectors_from_arrays(id_arr, matrix, name=name, source=str(p), id_column=id_column,
                               dim=dim, known=known, unknown=unknown)


def write_item_vectors(path: str | os.PathLike, ids: Sequence[Any], matrix: Any, *,
                       id_column: str = "item", column: str = "vector") -> Path:
    """Write vectors as Parquet (an id column and a ``fixed_size_list<float32, d>``
    column) or, for a ``.npy`` path, a 2-D array with ``<name>.ids.txt`` beside it;
    :func:`item_vectors` reads both back."""
    # lazy: only writing Parquet needs pyarrow's table API
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    m = np.ascontiguousarray(np.asarray(matrix, dtype=np.float32))
    if m.ndim != 2 or m.shape[0] != len(ids):
        raise DataError(f"{len(ids)} ids for vectors of shape {m.shape}", source=str(p))
    if p.suffix.lower() == ".npy":
        np.save(p, m)
        p.with_suffix(".ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        return p
    values = pa.FixedSizeListArray.from_arrays(pa.array(m.ravel()), m.shape[1])
    pq.write_table(pa.table({id_column: pa.array(list(ids)), column: values}), p)
    return p
