"""Display metadata of items (titles, genres, any columns to show beside an id): read from
an item table, kept with a trained model (``recforge train --item-metadata``) and shown
by ``recommend``, ``similar`` and the server. Unlike item *features*, nothing here is
learned from: every model takes it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from recforge.data.parsing import shown
from recforge.errors import DataError

__all__ = ["ID_COLUMNS", "read_item_metadata"]

#: Names an item table's id column is found by, in this order (else the first column).
ID_COLUMNS = ("item", "item_id", "itemid", "movieid", "id")


def _read_table(path: Path) -> tuple[pd.DataFrame, bool]:
    """The table as text (ids stay as written: ``1`` is not ``1.0``), and whether its
    rows are lines of a text file (row r is line r + 2, after the header)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            for col in frame.columns:  # a year with gaps is 1999, not 1999.0
                values = frame[col]
                if values.dtype.kind == "f" and (values.dropna() % 1 == 0).all():
                    frame[col] = values.astype("Int64")
            return frame.astype(object).where(frame.notna(), None), False
        sep = "\t" if suffix in (".tsv", ".tab") else ","
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False,
                            encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read item metadata: not UTF-8 text ({exc.reason} at byte "
                        f"{exc.start})", source=str(path)) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as exc:
        text = " ".join(str(exc).split())
        raise DataError(f"cannot read item metadata: {text}", source=str(path)) from None
    return frame.where(frame != "", None), True


def read_item_metadata(path: str | os.PathLike, id_column: str | None = None
                       ) -> pd.DataFrame:
    """Item display metadata from a CSV / TSV / Parquet table: one row per item, an id
    column (``id_column``, else the first of :data:`ID_COLUMNS` present, in any case,
    else the first column) and any display columns (``title``, ``genres``, ...).

    Returns the display columns as text (missing values ``None``), indexed by the item id
    as written. Raises :class:`DataError` naming the file, the line (or row, in Parquet)
    and the column: no such id column, a missing id, an id given twice, no display column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file" if not path.exists() else "not a file",
                        source=str(path))
    frame, lines = _read_table(path)
    if frame.empty or len(frame.columns) == 0:
        raise DataError("the item metadata table has no rows", source=str(path))
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if id_column is None:
        lower = {c.lower(): c for c in columns}
        id_column = next((lower[n] for n in ID_COLUMNS if n in lower), columns[0])
    elif id_column not in columns:
        raise DataError(f"no id column {id_column!r}; the columns are {columns}",
                        source=str(path), column=id_column)

    def where(row: int) -> dict[str, int]:  # row 0 is line 2 of a text file
        return {"line": row + 2} if lines else {"row": row + 1}

    ids = frame[id_column]
    missing = ids.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataError("missing item id", source=str(path), column=id_column, **where(row))
    key = ids.astype(str).str.strip()
    dup = key.duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((key == key.iloc[row]).to_numpy())[0])
        before = f"line {first + 2}" if lines else f"row {first + 1}"
        raise DataError(f"item id {shown(key.iloc[row])} appears twice (first at {before})",
                        source=str(path), column=id_column, **where(row))
    display = [c for c in columns if c != id_column]
    if not display:
        raise DataError(f"the item metadata table has only the id column {id_column!r}; "
                        "add display columns such as title", source=str(path))
    out = frame[display].copy()
    out.index = pd.Index(key.to_numpy(dtype=object), name="item")
    return out
