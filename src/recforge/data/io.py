"""Reading interaction logs: CSV / TSV / Parquet files, pandas DataFrames, adjacency lists.

Every reader validates what it reads and raises :class:`~recforge.errors.DataError` naming
the file, the line (or Parquet row) and the column at fault. Readers never write anything.

Duplicate (user, item) pairs follow an explicit policy (``duplicates=``): by default they
are an error, because silently summing or dropping them changes what a model learns; pass
``"last"`` for re-ratings (keep the latest), ``"sum"`` for click / play counts.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge.data.interactions import (
    COLUMN_ALIASES,
    DuplicatePolicy,
    Interactions,
    UnknownPolicy,
    _plain,
)
from recforge.data.sharding import INTEGER_ID, check_shard, owner_of_ids, user_shard
from recforge.data.vocabulary import Vocabulary
from recforge.errors import DataError

_log = logging.getLogger(__name__)

__all__ = [
    "read_pairs",
    "read_interactions",
    "read_many",
    "read_csv",
    "read_parquet",
    "read_adjacency",
    "interactions_from_frame",
    "parse_columns",
]

_DUP_POLICIES = ("error", "first", "last", "sum", "max", "mean")
_INT64_MAX = 2**63 - 1


def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """Parse ``"user=userId,item=movieId"`` (the CLI's ``--columns``) into a mapping."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        mapping = dict(spec)
    else:
        mapping = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            if "=" not in part:
                raise DataError(f"column mapping {part!r} must look like canonical=name, "
                                "e.g. user=userId")
            key, _, val = part.partition("=")
            key = key.strip()
            if key in mapping:  # the later one would silently win
                raise DataError(f"column mapping names {key} twice ({mapping[key]!r} and "
                                f"{val.strip()!r}); give one column per role")
            mapping[key] = val.strip()
    for key in mapping:
        if key not in COLUMN_ALIASES:
            raise DataError(f"unknown canonical column {key!r} in column mapping; "
                            f"expected some of {sorted(COLUMN_ALIASES)}")
    return mapping


# ---------------------------------------------------------------------------------------
# column resolution and validation
@dataclass
class _Columns:
    """Validated raw columns of one source, before ids are mapped to indices."""

    user: np.ndarray
    item: np.ndarray
    value: np.ndarray | None
    timestamp: np.ndarray | None
    where: np.ndarray  # line (or row) number of each event, for messages
    source: str | None
    unit: str  # "line" or "row"

    def locate(self, i: int) -> dict[str, Any]:
        return {"source": self.source, self.unit: int(self.where[i])}


def _resolve(frame_cols: Sequence[Any], columns: Mapping[str, str] | None,
             source: str | None, warn: bool = True) -> dict[str, Any]:
    present = [str(c) for c in frame_cols]
    seen: dict[str, list[int]] = {}
    for k, name in enumerate(present, start=1):
        seen.setdefault(name, []).append(k)
    twice = {name: at for name, at in seen.items() if len(at) > 1}
    if twice:  # which of the two would be read is anyone's guess: refuse
        name, at = next(iter(twice.items()))
        raise DataError(f"column name {name!r} appears more than once (columns "
                        f"{', '.join(map(str, at))}); rename all but one", source=source)
    by_lower: dict[str, list[str]] = {}
    for c in present:
        by_lower.setdefault(c.lower(), []).append(c)
    resolved: dict[str, Any] = {}
    columns = dict(columns or {})
    for canon, aliases in COLUMN_ALIASES.items():
        if canon in columns:
            name = columns[canon]
            if name not in present:
                hint = get_close_matches(name, present, n=1)
                raise DataError(
                    f"column {name!r} (given for {canon}) not found; columns present: "
                    f"{present}" + (f"; did you mean {hint[0]!r}?" if hint else ""),
                    source=source)
            resolved[canon] = frame_cols[present.index(name)]
            continue
        for alias in aliases:
            if alias in by_lower:
                found = by_lower[alias]
                if len(found) > 1:  # "User" and "user": unless the others are mapped
                    found = [c for c in found if c not in columns.values()]
                if len(found) > 1:
                    raise DataError(
                        f"columns {found} all name the {canon} (names are matched without "
                        f"case); name the one to read with columns={{'{canon}': "
                        f"'<column>'}} (CLI: --columns {canon}=<column>) or rename the "
                        "others", source=source)
                if found:
                    resolved[canon] = frame_cols[present.index(found[0])]
                    break
    for canon in ("user", "item"):
        if canon not in resolved:
            hint = get_close_matches(canon, [c.lower() for c in present], n=1, cutoff=0.5)
            raise DataError(
                f"no {canon} column: columns present are {present}; name it with "
                f"columns={{'{canon}': '<column>'}} (CLI: --columns {canon}=<column>)"
                + (f"; did you mean {by_lower[hint[0]][0]!r}?" if hint else ""),
                source=source)
    roles: dict[str, str] = {}
    for canon, col in resolved.items():
        if str(col) in roles:
            raise DataError(f"column {str(col)!r} would be read as both the "
                            f"{roles[str(col)]} and the {canon}; give each role its own "
                            "column (columns=, CLI --columns)", source=source)
        roles[str(col)] = canon
    used = list(resolved.values())
    if warn:  # a misspelt rating or timestamp column would leave the data without them
        taken = {str(c) for c in used}
        for canon in ("rating", "timestamp"):
            if canon in resolved:
                continue
            for col in present:
                if col in taken:
                    continue
                hint = get_close_matches(col.lower(), COLUMN_ALIASES[canon], n=1, cutoff=0.8)
                if hint:
                    _log.warning("%s: column %r is not read; did you mean %r (the %s)? Name "
                                 "it with --columns %s=%s", source or "data", col, hint[0],
                                 canon, canon, col)
                    break
    return resolved


def _shown(value: Any, limit: int = 40) -> str:
    """``repr`` of a value from the data for a message, cut short (a 5,000-digit id would
    otherwise fill the screen)."""
    text = repr(_plain(value))
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value)):,} characters)"


#: What pandas' ``infer_dtype`` may call a column of ids (text, integers, whole floats).
_ID_KINDS = frozenset({"string", "bytes", "integer", "mixed-integer", "floating",
                       "mixed-integer-float", "empty"})


def _id_type_error(series: pd.Series, name: str, where: np.ndarray, source: str | None,
                   unit: str) -> DataError | None:
    """Ids are integers or text: a column of dates, booleans, decimals, lists or records is
    refused (its values would become ids through their printed form)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _id_type_error(pd.Series(dtype.categories), name, where, source, unit)
    if dtype.kind in "iuf" or isinstance(dtype, pd.StringDtype):
        return None
    if dtype.kind != "O":  # datetime64, timedelta64, bool, complex, period...
        return DataError(f"{name} ids must be integers or text, not {dtype} values",
                         source=source, column=name)
    kind = pd.api.types.infer_dtype(series, skipna=True)
    if kind in ("string", "bytes", "integer", "empty"):
        return None
    ok = (str, bytes, int, float, np.integer, np.floating)
    bad = np.flatnonzero([not (isinstance(v, ok) or v is None or v is pd.NA) or
                          isinstance(v, (bool, np.bool_)) for v in series.tolist()])
    if len(bad) == 0:
        return None
    i = int(bad[0])
    value = series.iloc[i]
    return DataError(f"{name} id {_shown(value)} is a {type(value).__name__}; ids must be "
                     "integers or text", source=source, column=name, **{unit: int(where[i])})


def _ids(series: pd.Series, name: str, where: np.ndarray, source: str | None,
         unit: str) -> np.ndarray:
    """External ids: int64 when every id is a plain integer, else strings."""
    error = _id_type_error(series, name, where, source, unit)
    if error is not None:
        raise error
    series = _decoded(series, f"{name} id", name, where, source, unit)
    missing = series.isna().to_numpy(dtype=bool, copy=True)
    if series.dtype.kind not in "iub":
        # Empty strings count as missing too.
        missing |= (series.astype("string").str.strip() == "").to_numpy(dtype=bool, na_value=True)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"missing {name} id", source=source, column=name,
                        **{unit: int(where[i])})
    kind = series.dtype.kind
    if kind == "u" and len(series) and int(series.max()) > _INT64_MAX:
        # 64-bit unsigned ids above int64 (snowflake-style): exact, as text
        return series.astype(str).to_numpy(dtype=object)
    if kind in "iu":
        return series.to_numpy(dtype=np.int64)
    if kind == "f":
        arr = series.to_numpy(dtype=np.float64)
        # a float column of ids must hold whole numbers that int64 keeps exactly
        bad = ~(np.isfinite(arr) & (arr == np.round(arr)) & (np.abs(arr) < 2.0**63))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{name} id {float(arr[i])!r} is not a whole number that an integer id "
                            "can hold; store ids as integers or text", source=source,
                            column=name, **{unit: int(where[i])})
        return arr.astype(np.int64)
    s = series.astype("string").str.strip()
    ints = _integer_ids(s)
    return ints if ints is not None else s.to_numpy(dtype=object)


def _integer_ids(text: pd.Series) -> np.ndarray | None:
    """The ids as int64 when every one is a plain integer that int64 holds, else None
    (the ids stay text: "007" would lose its zeros, a 5,000-digit number its digits).

    Text longer than int64's 20 characters is never converted: Python refuses ``int()`` of
    more than 4,300 digits, and a float would round it.
    """
    if not text.str.fullmatch(INTEGER_ID).all() or (text.str.len() > 20).any():
        return None
    try:
        return text.astype("int64").to_numpy(dtype=np.int64)
    except (OverflowError, ValueError):  # 19-20 digits beyond int64
        return None


def _decoded(series: pd.Series, what: str, name: str, where: np.ndarray, source: str | None,
             unit: str) -> pd.Series:
    """A column of bytes (Parquet ``binary``) as text; its values must be UTF-8."""
    if series.dtype != object or not any(isinstance(v, bytes) for v in series.tolist()):
        return series

    def text(b: Any) -> Any:
        return b.decode("utf-8") if isinstance(b, bytes) else b
    try:
        return series.map(text)
    except UnicodeDecodeError:
        bad = next(i for i, b in enumerate(series) if isinstance(b, bytes) and not _decodes(b))
        raise DataError(f"{what} {_shown(series.iloc[bad])} is not UTF-8 text", source=source,
                        column=name, **{unit: int(where[bad])}) from None


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _numbers(series: pd.Series, name: str, where: np.ndarray, source: str | None,
             unit: str) -> np.ndarray:
    if series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) == "boolean":
        series = series.astype("boolean")  # True / False with gaps: 1 / 0 and missing
    if series.dtype.kind in "iufb":
        arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "missing value" if np.isnan(arr[i]) else f"{arr[i]} is not a finite number"
            raise DataError(what, source=source, column=name, **{unit: int(where[i])})
        return arr
    if series.dtype.kind not in "O" and not isinstance(series.dtype, pd.StringDtype):
        raise DataError(f"values must be numbers, not {series.dtype} values", source=source,
                        column=name)
    raw = _decoded(series, "value", name, where, source, unit).astype("string")
    num = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64,
                                                                   na_value=np.nan)
    bad = ~np.isfinite(num)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        val = raw.iloc[i]
        if val is pd.NA or str(val).strip() == "":
            what = "missing value"
        else:
            try:
                float(str(val))
                what = f"{_shown(str(val).strip())} is not a finite number"
            except ValueError:
                what = f"{_shown(str(val))} is not a number"
        raise DataError(what, source=source, column=name, **{unit: int(where[i])})
    return num


#: A number as text: what a timestamp column holds as seconds since the epoch.
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)"
#: Whole seconds that int64 holds exactly, read as integers (never through a float).
_WHOLE = r"[+-]?\d{1,18}"
#: Words pandas and numpy read as a date relative to the reading (or as "no date").
_NOT_DATES = frozenset({"now", "today", "tomorrow", "yesterday", "nat"})


def _timestamps(series: pd.Series, name: str, where: np.ndarray, source: str | None,
                unit: str) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(series):
        if series.isna().any():
            i = int(np.flatnonzero(series.isna().to_numpy())[0])
            raise DataError("missing timestamp", source=source, column=name,
                            **{unit: int(where[i])})
        if getattr(series.dt, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        # whole seconds from the column's own unit: no nanosecond range (years 1677-2262)
        return series.to_numpy().astype("datetime64[s]").astype(np.int64)
    if series.dtype.kind in "iu" and not series.isna().any():  # exact, no float between
        if series.dtype.kind == "u" and len(series) and int(series.max()) > _INT64_MAX:
            i = int(np.flatnonzero(series.to_numpy() > _INT64_MAX)[0])
            raise DataError(f"timestamp {_shown(series.iloc[i])} is out of range (seconds "
                            "since the epoch)", source=source, column=name,
                            **{unit: int(where[i])})
        return _warn_ms(series.to_numpy(dtype=np.int64), name, source)
    if series.dtype.kind in "iuf":
        return _seconds(_numbers(series, name, where, source, unit), series, name, where,
                        source, unit)
    if series.dtype.kind not in "O" and not isinstance(series.dtype, pd.StringDtype):
        raise DataError(f"timestamps must be numbers (seconds since the epoch) or dates, not "
                        f"{series.dtype} values", source=source, column=name)
    raw = _decoded(series, "timestamp", name, where, source, unit).astype("string").str.strip()
    # Numbers are seconds since the epoch, dates are parsed; a number is told by its form,
    # not by whether a float holds it (a 5,000-digit number is out of range, not a date).
    is_num = raw.str.fullmatch(_NUMBER, case=False).to_numpy(dtype=bool, na_value=False)
    out = np.zeros(len(raw), dtype=np.int64)
    if is_num.any():
        out[is_num] = _numeric_seconds(raw[is_num], name, where[is_num], source, unit)
    if is_num.all():
        return _warn_ms(out, name, source)
    text = raw[~is_num]
    missing = text.isna() | (text == "")
    if missing.any():
        k = int(np.flatnonzero(~is_num)[int(np.flatnonzero(missing.to_numpy())[0])])
        raise DataError("missing timestamp", source=source, column=name,
                        **{unit: int(where[k])})
    # Dates as text (any year: parsed at second resolution)
    relative = text.str.lower().isin(_NOT_DATES).to_numpy(dtype=bool)
    try:
        ts = pd.to_datetime(text.where(~relative), errors="coerce", utc=True, format="mixed")
        bad = ts.isna().to_numpy()
        # in the unit pandas chose (not always ns); NaT rows are replaced below
        parsed = (ts.dt.tz_localize(None).to_numpy().astype("datetime64[s]")
                  .astype(np.int64))
    except (OverflowError, pd.errors.OutOfBoundsDatetime, ValueError):
        bad, parsed = np.ones(len(text), dtype=bool), np.zeros(len(text), np.int64)
    if bad.any():  # outside pandas' nanosecond range (or not a date): one by one
        for j in np.flatnonzero(bad):
            sec = None if relative[j] else _date_seconds(str(text.iloc[j]))
            if sec is None:
                k = int(np.flatnonzero(~is_num)[j])
                raise DataError(f"{_shown(str(series.iloc[k]))} is not a timestamp (seconds "
                                "since the epoch or a date/time)", source=source,
                                column=name, **{unit: int(where[k])})
            parsed[j] = sec
    out[~is_num] = parsed
    return out


def _numeric_seconds(text: pd.Series, name: str, where: np.ndarray, source: str | None,
                     unit: str) -> np.ndarray:
    """Seconds written as numbers: whole ones read exactly, others through a float (whose
    fraction is dropped); beyond int64 (a 5,000-digit number included) refused."""
    whole = text.str.fullmatch(_WHOLE).to_numpy(dtype=bool)
    out = np.zeros(len(text), dtype=np.int64)
    if whole.any():
        out[whole] = text[whole].astype("int64").to_numpy(dtype=np.int64)
    # 19 digits, some of which int64 holds: exactly, one by one (a float would round them)
    long = np.flatnonzero(~whole & text.str.fullmatch(r"[+-]?\d{19}").to_numpy(dtype=bool))
    for j in long:
        value = int(text.iloc[j])
        if -(2**63) <= value <= _INT64_MAX:
            out[j], whole[j] = value, True
    if not whole.all():
        rest = text[~whole]
        # pandas gives <NA> for a number beyond a float's range; Python's float says inf
        num = pd.to_numeric(rest, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        lost = np.isnan(num) & ~rest.str.lower().str.lstrip("+-").isin(["nan"]).to_numpy()
        num[lost] = [float(t) for t in rest[lost]]
        at = np.flatnonzero(~whole)
        bad = ~np.isfinite(num) | (np.abs(num) >= 2.0**63)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = ("is not a number" if np.isnan(num[i]) else
                    "is out of range (seconds since the epoch)")
            raise DataError(f"timestamp {_shown(rest.iloc[i])} {what}", source=source,
                            column=name, **{unit: int(where[at[i]])})
        out[~whole] = num.astype(np.int64)
    return out


def _warn_ms(seconds: np.ndarray, name: str, source: str | None) -> np.ndarray:
    median = float(np.median(np.abs(seconds.astype(np.float64)))) if len(seconds) else 0.0
    if median > 1e11:  # seconds: beyond the year 5138
        _log.warning("%s: column %r looks like milliseconds (median %.0f); recforge reads "
                     "seconds since the epoch: divide by 1000 if so", source or "data", name,
                     median)
    return seconds


def _seconds(num: np.ndarray, series: pd.Series, name: str, where: np.ndarray,
             source: str | None, unit: str) -> np.ndarray:
    """Numeric timestamps (seconds since the epoch) as int64, refusing what int64 cannot
    hold (instead of wrapping it to a large negative number)."""
    too_big = np.abs(num) >= 2.0**63
    if too_big.any():
        i = int(np.flatnonzero(too_big)[0])
        raise DataError(f"timestamp {_shown(series.iloc[i])} is out of range (seconds since "
                        "the epoch)", source=source, column=name, **{unit: int(where[i])})
    return _warn_ms(num.astype(np.int64), name, source)


def _date_seconds(text: str) -> int | None:
    """Seconds since the epoch of one date/time of any year numpy's datetime64 holds
    (``9999-12-31``, ``1500-01-01T12:00``), or None."""
    text = text.strip().rstrip("Zz").replace(" ", "T")
    year = re.match(r"[+-]?(\d+)", text)
    if year is None or len(year.group(1)) > 6:  # numpy wraps a year of 12 digits around
        return None
    try:
        value = np.datetime64(text, "s")
    except (ValueError, OverflowError):
        return None
    return None if np.isnat(value) else int(value.astype(np.int64))


def _extract(frame: pd.DataFrame, columns: Mapping[str, str] | None, source: str | None,
             where: np.ndarray | None, unit: str) -> _Columns:
    if where is None:
        where = np.arange(1, len(frame) + 1)
    where = np.asarray(where)
    resolved = _resolve(list(frame.columns), columns, source)
    user = _ids(frame[resolved["user"]], str(resolved["user"]), where, source, unit)
    item = _ids(frame[resolved["item"]], str(resolved["item"]), where, source, unit)
    value = None
    if "rating" in resolved:
        rating = _numbers(frame[resolved["rating"]], str(resolved["rating"]), where, source,
                          unit)
        huge = np.abs(rating) > np.finfo(np.float32).max  # would be stored as inf
        if huge.any():
            i = int(np.flatnonzero(huge)[0])
            raise DataError(f"{rating[i]:g} is too large for a rating (float32)",
                            source=source, column=str(resolved["rating"]),
                            **{unit: int(where[i])})
        value = rating.astype(np.float32)
    timestamp = None
    if "timestamp" in resolved:
        timestamp = _timestamps(frame[resolved["timestamp"]], str(resolved["timestamp"]),
                                where, source, unit)
    return _Columns(user, item, value, timestamp, where, source, unit)


# ---------------------------------------------------------------------------------------
# ids -> indices, duplicates
def _check_policies(duplicates: str, unknown: str) -> None:
    if duplicates not in _DUP_POLICIES:
        raise DataError(f"duplicates must be one of {_DUP_POLICIES}, not {duplicates!r}")
    if unknown not in ("error", "drop"):
        raise DataError(f"unknown must be 'error' or 'drop', not {unknown!r}")


def _map_ids(ids: np.ndarray, vocab: Vocabulary, cols: _Columns, name: str,
             unknown: UnknownPolicy) -> np.ndarray:
    idx = vocab.index(ids)
    if unknown == "error" and (idx < 0).any():
        i = int(np.flatnonzero(idx < 0)[0])
        n_bad = int((idx < 0).sum())
        raise DataError(f"{name} {_shown(ids[i])} is not in the {name} vocabulary "
                        f"({n_bad} events with unknown {name}s; pass unknown='drop' to skip them)",
                        **cols.locate(i))
    return idx


def _build(cols: _Columns, users: Vocabulary | None, items: Vocabulary | None,
           unknown: UnknownPolicy, duplicates: DuplicatePolicy) -> Interactions:
    _check_policies(duplicates, unknown)
    if len(cols.user) == 0:
        raise DataError("no interactions (the data has no rows)", source=cols.source)
    if users is None:
        users, u = Vocabulary.from_values(cols.user)
    else:
        u = _map_ids(cols.user, users, cols, "user", unknown)
    if items is None:
        items, i = Vocabulary.from_values(cols.item)
    else:
        i = _map_ids(cols.item, items, cols, "item", unknown)
    keep = (u >= 0) & (i >= 0)
    value, timestamp, where = cols.value, cols.timestamp, cols.where
    if not keep.all():
        u, i, where = u[keep], i[keep], where[keep]
        value = None if value is None else value[keep]
        timestamp = None if timestamp is None else timestamp[keep]
    return _finish(u.astype(np.int32), i.astype(np.int32), value, timestamp, where, users,
                   items, cols.source, cols.unit, duplicates)


def _finish(u: np.ndarray, i: np.ndarray, value: np.ndarray | None,
            timestamp: np.ndarray | None, where: np.ndarray | None, users: Vocabulary,
            items: Vocabulary, source: str | None, unit: str,
            duplicates: DuplicatePolicy) -> Interactions:
    """Check or resolve repeated (user, item) pairs of index arrays; build the result.

    ``where`` holds each event's line or row number; ``None`` means row ``index + 1``.
    """
    def at(j: int) -> int:
        return int(where[j]) if where is not None else j + 1

    key = u.astype(np.int64) * len(items) + i
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    dup_next = sorted_key[1:] == sorted_key[:-1]
    del sorted_key
    if dup_next.any():
        if duplicates == "error":
            j = int(np.flatnonzero(dup_next)[0])
            first, second = order[j], order[j + 1]
            raise DataError(
                f"duplicate (user, item) pair ({_shown(users.ids[u[second]])}, "
                f"{_shown(items.ids[i[second]])}), first seen at {unit} {at(first)}; choose a "
                "policy for repeated pairs (duplicates=, --duplicates): last (re-ratings), sum "
                "(counts), first, max or mean",
                source=source, **{unit: at(second)})
        u, i, value, timestamp = _dedupe(u, i, value, timestamp, key, duplicates)
    del key, order, dup_next
    return Interactions(u, i, value, timestamp, users=users, items=items, source=source,
                        check=False)


def _dedupe(u, i, value, timestamp, key, policy):
    df = pd.DataFrame({"key": key, "u": u, "i": i})
    if value is not None:
        df["v"] = value
    if timestamp is not None:
        df["t"] = timestamp
    if policy in ("first", "last"):
        by = ["key", "t"] if timestamp is not None else ["key"]
        df = df.sort_values(by, kind="stable")
        df = df.drop_duplicates("key", keep=policy)
        df = df.sort_index()
    else:
        agg: dict[str, Any] = {"u": "first", "i": "first"}
        if value is not None:
            agg["v"] = policy
        if timestamp is not None:
            agg["t"] = "max"
        if value is None and policy == "sum":
            df["v"] = np.float32(1)
            agg["v"] = "sum"
        df = df.groupby("key", sort=False).agg(agg)
    return (df["u"].to_numpy(np.int32), df["i"].to_numpy(np.int32),
            df["v"].to_numpy(np.float32) if "v" in df else None,
            df["t"].to_numpy(np.int64) if "t" in df else None)


def interactions_from_frame(frame: pd.DataFrame, *, columns: Mapping[str, str] | None = None,
                            users: Vocabulary | None = None, items: Vocabulary | None = None,
                            unknown: UnknownPolicy = "error",
                            duplicates: DuplicatePolicy = "error", source: str | None = None,
                            line_numbers: Sequence[int] | None = None,
                            unit: str = "row") -> Interactions:
    """Build :class:`Interactions` from a DataFrame; see :meth:`Interactions.from_frame`."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}", source=source)
    if line_numbers is not None:
        unit = "line"
    where = None if line_numbers is None else np.asarray(line_numbers)
    cols = _extract(frame, columns, source, where, unit)
    return _build(cols, users, items, unknown, duplicates)


# ---------------------------------------------------------------------------------------
# files
def _source(path: Any) -> str:
    return os.fspath(path)


def _check_readable(path: Path) -> None:
    src = _source(path)
    if not path.exists():
        raise DataError("file not found", source=src)
    if path.is_dir():
        raise DataError("is a directory, not a file", source=src)
    if not os.access(path, os.R_OK):
        raise DataError("permission denied", source=src)
    if path.stat().st_size == 0:
        raise DataError("file is empty", source=src)


def _undecodable(path: Path, shown: str, encoding: str) -> DataError:
    """The error for a file that is not valid ``encoding`` text, naming the first bad line
    and the byte's offset in the file (a decoder reading in chunks counts from the chunk)."""
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as exc:
                return DataError(f"not valid {shown} text ({exc.reason} at byte "
                                 f"{offset + exc.start} of the file); pass encoding='latin-1' "
                                 "(--encoding latin-1) if the file uses it",
                                 source=_source(path), line=number)
            offset += len(raw)
    return DataError(f"not valid {shown} text; pass encoding='latin-1' (--encoding latin-1) "
                     "if the file uses it", source=_source(path))


def _first_lines(path: Path, encoding: str) -> tuple[list[str], int]:
    """The first two non-blank lines (one if there is only one) and how many blank lines
    come before the first."""
    found: list[str] = []
    leading = 0
    with open(path, encoding=encoding, errors="replace") as fh:
        for line in fh:
            if line.strip():
                found.append(line.rstrip("\r\n"))
                if len(found) == 2:
                    break
            elif not found:
                leading += 1
    if not found:
        raise DataError("file has no data (only blank lines)", source=_source(path))
    return found, leading


def _sniff_sep(path: Path, line: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tsv" or "\t" in line:
        return "\t"
    if "::" in line:
        return "::"
    for sep in (",", ";", "|"):
        if sep in line:
            return sep
    return r"\s+"


def _looks_like_header(fields: list[str]) -> bool:
    """Whether a first line names the columns rather than holding an event.

    A header when a field is a known column name (``user``, ``movieId``...); not one when
    any field is a number (a header holds names: ``A1,item9,5`` is an event with text ids,
    ``1,10,5,2020-01-31`` one with a date); a line of names alone (``customer,product,
    stars``, but also ``alice,matrix``) is taken as a header, and ``header=False``
    (``--no-header``) says otherwise.
    """
    def numeric(x: str) -> bool:
        try:
            float(x)
            return True
        except ValueError:
            return False

    names = [f.strip().strip('"').strip() for f in fields]
    known = {a.lower() for aliases in COLUMN_ALIASES.values() for a in aliases}
    if any(n.lower() in known for n in names):
        return True
    return not any(numeric(n) for n in names if n)


_PARSER_RE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


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
    return _build(
        _read_csv_columns(Path(path), sep=sep, header=header, names=names,
                          columns=parse_columns(columns), encoding=encoding),
        users, items, unknown, duplicates)


def _read_csv_columns(path: Path, *, sep: str | None, header: bool | None,
                      names: Sequence[str] | None, columns: Mapping[str, str],
                      encoding: str) -> _Columns:
    src = _source(path)
    _check_readable(path)
    shown_encoding = encoding
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"  # a byte-order mark (files saved by Excel or Notepad) is dropped
    try:
        first_lines, leading = _first_lines(path, encoding)
    except UnicodeDecodeError:
        raise _undecodable(path, shown_encoding, encoding) from None
    first = first_lines[0]
    sep = sep or _sniff_sep(path, first)

    def split(line: str) -> list[str]:
        return re.split(sep if sep in (r"\s+",) else re.escape(sep), line.strip())

    fields = split(first)
    guessed_header = header is None
    if header is None:
        header = names is None and _looks_like_header(fields)
    if not header and names is None:
        names = ["user", "item", "rating", "timestamp"][: len(fields)]
        if len(fields) > 4:
            names = names + [f"extra_{k}" for k in range(len(fields) - 4)]
        if len(fields) < 2:
            raise DataError(f"expected at least 2 fields (user, item), found {len(fields)} "
                            f"with separator {sep!r}", source=src, line=1)
    text_source: Any = path
    engine = "c"
    if sep == "::":
        # MovieLens 1M/10M style; the C parser only takes one-character separators.
        import io as _io

        try:
            text_source = _io.StringIO(path.read_text(encoding=encoding).replace("::", "\t"))
        except UnicodeDecodeError:
            raise _undecodable(path, shown_encoding, encoding) from None
        sep = "\t"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(
                text_source, sep=sep, header=0 if header else None,
                names=names if not header else None, dtype=str, keep_default_na=False,
                na_values=[""], skip_blank_lines=False, index_col=False, engine=engine,
                encoding=encoding, skipinitialspace=True, skiprows=leading)
        if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
            # a line wider than the header (or the names): pandas would drop its extra
            # fields with only a warning (index_col=False); a misread, so an error
            raise _wider_line(text_source, sep, encoding, leading, src)
    except pd.errors.EmptyDataError:
        raise DataError("file is empty", source=src) from None
    except pd.errors.ParserError as exc:
        m = _PARSER_RE.search(str(exc))
        if m:
            raise DataError(f"expected {m.group(1)} fields, saw {m.group(3)}", source=src,
                            line=int(m.group(2))) from None
        raise DataError(f"cannot parse: {exc}", source=src) from None
    except UnicodeDecodeError:
        raise _undecodable(path, shown_encoding, encoding) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", source=src) from None
    if header:  # the names as written: pandas has renamed a repeated `user` to `user.1`
        frame.columns = _header_names(text_source, sep, encoding, leading, frame.columns)
    lines = np.arange(len(frame)) + (2 if header else 1) + leading
    if sep != r"\s+" and _physical_lines(path) > leading + bool(header) + len(frame):
        # a quoted field spans lines: number each record by the line it starts on
        starts = _record_start_lines(path, sep, encoding, text_source)
        lines = np.asarray(starts[leading + bool(header):][:len(frame)], dtype=np.int64)
    blank = frame.isna().all(axis=1).to_numpy()
    if blank.any():
        frame = frame.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
    if len(frame) == 0:
        raise DataError("no interactions (the file has a header but no data rows)", source=src)
    if guessed_header and header:
        try:
            _resolve(list(frame.columns), columns, src, warn=False)
        except DataError as exc:
            raise DataError(f"{exc.detail} (the first line was taken as a header; if the "
                            "file has none, pass header=False, --no-header on the command "
                            "line)", source=src) from None
    return _extract(frame, columns, src, lines, "line")


def _wider_line(text_source: Any, sep: str, encoding: str, skiprows: int,
                src: str) -> DataError:
    """The error for a line with more fields than the first: parsed with no header, the
    first line sets the width and pandas names the first line wider than it."""
    import io as _io

    if isinstance(text_source, _io.StringIO):
        text_source.seek(0)
    try:
        pd.read_csv(text_source, sep=sep, header=None, dtype=str, keep_default_na=False,
                    skip_blank_lines=False, index_col=False, engine="c", encoding=encoding,
                    skipinitialspace=True, skiprows=skiprows)
    except pd.errors.ParserError as exc:
        m = _PARSER_RE.search(str(exc))
        if m:
            return DataError(f"expected {m.group(1)} fields (as the first line), saw "
                             f"{m.group(3)}", source=src, line=int(m.group(2)))
    return DataError("a line has more fields than the first line (the header)", source=src)


def _header_names(text_source: Any, sep: str, encoding: str, skiprows: int,
                  parsed: Sequence[Any]) -> list[str]:
    """The header's fields as written, read by the same parser with the same options.

    pandas renames a repeated column name (``user,user,item`` becomes ``user, user.1,
    item``), so a repeat can only be seen in the header line itself; a column really named
    ``user.1`` is no repeat. An empty field keeps the name pandas gave it (``Unnamed: 2``).
    """
    import io as _io

    if isinstance(text_source, _io.StringIO):
        text_source.seek(0)
    row = pd.read_csv(text_source, sep=sep, header=None, nrows=1, dtype=str,
                      keep_default_na=False, index_col=False, engine="c", encoding=encoding,
                      skipinitialspace=True, skiprows=skiprows)
    raw = [str(v).strip() for v in row.iloc[0]] if len(row) else []
    if len(raw) != len(parsed):  # cannot happen with one parser; keep what pandas read
        return [str(c).strip() for c in parsed]
    return [r or str(c).strip() for r, c in zip(raw, parsed, strict=True)]


def _physical_lines(path: Path) -> int:
    """The number of lines of a file (a last line without a newline counts)."""
    count, last = 0, b"\n"
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _record_start_lines(path: Path, sep: str, encoding: str, text_source: Any) -> list[int]:
    """The line each CSV record starts on (blank lines are records of their own, as
    pandas reads them with ``skip_blank_lines=False``)."""
    import csv
    import io as _io

    if isinstance(text_source, _io.StringIO):
        handle: Any = _io.StringIO(text_source.getvalue())
    else:
        handle = open(path, encoding=encoding, newline="")
    starts: list[int] = []
    with handle:
        reader = csv.reader(handle, delimiter=sep, skipinitialspace=True)  # as pandas
        line = 1
        for _ in reader:
            starts.append(line)
            line = reader.line_num + 1
    return starts


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
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_policies(duplicates, unknown)
    path = Path(path)
    src = _source(path)
    _check_readable(path)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", source=src) from None
    resolved = _resolve(list(pf.schema_arrow.names), parse_columns(columns), src)
    mapping = {k: str(v) for k, v in resolved.items()}
    n = pf.metadata.num_rows
    if n == 0:
        raise DataError("no interactions (the file has no rows)", source=src)
    u = np.empty(n, dtype=np.int32)
    i = np.empty(n, dtype=np.int32)
    value = np.empty(n, dtype=np.float32) if "rating" in resolved else None
    timestamp = np.empty(n, dtype=np.int64) if "timestamp" in resolved else None
    user_ids = None if users is not None else _StreamingIds()
    item_ids = None if items is not None else _StreamingIds()
    rank, world = check_shard(shard) if shard is not None else (0, 1)
    # With a shard, the arrays are filled only up to the kept events: np.empty does not
    # touch the pages past them, so they never take memory. ``rows`` keeps the file's row
    # number of each kept event for error messages.
    rows = np.empty(n, dtype=np.int64) if world > 1 else None
    offset = row = 0
    try:
        for batch in pf.iter_batches(batch_size=int(batch_rows),
                                     columns=[resolved[k] for k in resolved]):
            frame = batch.to_pandas()
            cols = _extract(frame, mapping, src, np.arange(row + 1, row + len(frame) + 1),
                            "row")
            row += len(frame)
            del frame
            bu = (user_ids.codes(cols.user) if user_ids is not None
                  else _map_ids(cols.user, users, cols, "user", unknown))
            bi = (item_ids.codes(cols.item) if item_ids is not None
                  else _map_ids(cols.item, items, cols, "item", unknown))
            bv, bt = cols.value, cols.timestamp
            if rows is not None:  # every id enters the vocabularies; only owned rows stay
                mine = owner_of_ids(cols.user, world) == rank
                bu, bi = bu[mine], bi[mine]
                bv = None if bv is None else bv[mine]
                bt = None if bt is None else bt[mine]
                rows[offset:offset + len(bu)] = np.asarray(cols.where)[mine]
            end = offset + len(bu)
            u[offset:end] = bu
            i[offset:end] = bi
            if value is not None:
                value[offset:end] = bv
            if timestamp is not None:
                timestamp[offset:end] = bt
            offset = end
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read Parquet data: {exc}", source=src) from None
    if rows is not None:  # copy the kept part out; the untouched tails are never resident
        if offset == 0:
            raise DataError(f"no interactions for shard {rank} of {world} (the file's users "
                            "all belong to other ranks)", source=src)
        u, i, rows = u[:offset].copy(), i[:offset].copy(), rows[:offset].copy()
        value = None if value is None else value[:offset].copy()
        timestamp = None if timestamp is None else timestamp[:offset].copy()
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
        if len(u) == 0:
            raise DataError("no interactions left after dropping unknown ids", source=src)
    del keep
    return _finish(u, i, value, timestamp, where, users, items, src, "row", duplicates)


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

    def finish(self) -> tuple[Vocabulary, np.ndarray]:
        ids = np.concatenate(self._parts) if self._parts else np.empty(0, dtype=np.int64)
        if len(self._kinds) > 1:  # integer-looking ids in some batches, text in others
            ids = np.asarray([str(x) for x in ids], dtype=object)
        uniq, remap = np.unique(ids, return_inverse=True)
        return Vocabulary(uniq), remap.astype(np.int32)


def _read_parquet_columns(path: Path, columns: Mapping[str, str]) -> _Columns:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = _source(path)
    _check_readable(path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", source=src) from None
    resolved = _resolve(list(schema.names), columns, src)
    try:
        table = pq.read_table(path, columns=[resolved[k] for k in resolved])
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read Parquet data: {exc}", source=src) from None
    frame = table.to_pandas()
    if len(frame) == 0:
        raise DataError("no interactions (the file has no rows)", source=src)
    mapping = {k: str(v) for k, v in resolved.items()}
    return _extract(frame, mapping, src, None, "row")


def read_adjacency(path: str | os.PathLike, *, users: Vocabulary | None = None,
                   items: Vocabulary | None = None, unknown: UnknownPolicy = "error",
                   duplicates: DuplicatePolicy = "error", encoding: str = "utf-8") -> Interactions:
    """Read an adjacency list: one line per user, ``user item item ...`` separated by blanks.

    This is the layout of the LightGCN / NGCF benchmark splits (``train.txt``). Ids are
    integers when every token is an integer, else strings. A line with a user and no items
    is allowed (a user with no events here).
    """
    return _build(_read_adjacency_columns(Path(path), encoding), users, items, unknown,
                  duplicates)


def _read_adjacency_columns(path: Path, encoding: str) -> _Columns:
    src = _source(path)
    _check_readable(path)
    user_tok: list[str] = []
    item_tok: list[str] = []
    lengths: list[int] = []
    line_no: list[int] = []
    try:
        with open(path, encoding=encoding) as fh:
            for n, line in enumerate(fh, start=1):
                toks = line.split()
                if not toks:
                    continue
                user_tok.append(toks[0])
                item_tok.extend(toks[1:])
                lengths.append(len(toks) - 1)
                line_no.append(n)
    except UnicodeDecodeError:
        raise _undecodable(path, encoding, encoding) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", source=src) from None
    if not item_tok:
        raise DataError("no interactions (no line lists an item)", source=src)
    counts = np.asarray(lengths, dtype=np.int64)
    where = np.repeat(np.asarray(line_no), counts)
    u_raw = np.repeat(np.asarray(user_tok, dtype=object), counts)
    i_raw = np.asarray(item_tok, dtype=object)
    user = _adj_ids(u_raw, where, src)
    item = _adj_ids(i_raw, where, src)
    return _Columns(user, item, None, None, where, src, "line")


def _adj_ids(tokens: np.ndarray, where: np.ndarray, src: str) -> np.ndarray:
    s = pd.Series(tokens, dtype="string")
    ints = _integer_ids(s)
    if ints is not None:
        return ints
    is_int = s.str.fullmatch(INTEGER_ID).to_numpy(dtype=bool)
    if is_int.mean() > 0.5 and not is_int.all():
        i = int(np.flatnonzero(~is_int)[0])
        raise DataError(f"{tokens[i]!r} is not an integer id (the other ids are)", source=src,
                        line=int(where[i]))
    return tokens


# ---------------------------------------------------------------------------------------
# dispatch
_FORMATS = ("csv", "tsv", "parquet", "adjacency")


def _detect_format(path: Path, encoding: str = "utf-8") -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".tsv":
        return "tsv"
    if suffix == ".csv":
        return "csv"
    _check_readable(path)
    with open(path, "rb") as fh:
        if fh.read(4) == b"PAR1":
            return "parquet"
    # Whitespace-separated lines of varying length are an adjacency list. Lines of 3 or 4
    # tokens each are read as `user item value [timestamp]`; when the third token could be
    # an item id (`user item item`, a leave-two-out test file) a warning says how to read
    # the file as an adjacency list (a count of plays looks the same).
    counts = set()
    third: list[str] = []
    with open(path, encoding=encoding, errors="replace") as fh:
        for n, line in enumerate(fh):
            if n >= 200:
                break
            if line.strip():
                if any(c in line for c in ",\t;|") or "::" in line:
                    return "csv"
                toks = line.split()
                counts.add(len(toks))
                if len(toks) >= 3:
                    third.append(toks[2])
    if len(counts) > 1 or (counts and max(counts) > 4):
        return "adjacency"
    if counts and min(counts) >= 3:
        values = pd.to_numeric(pd.Series(third), errors="coerce").dropna().to_numpy()
        if len(values) and np.all(values == np.round(values)) and values.max() > 10:
            # a count (plays, clicks) or an item id (a leave-two-out test.txt): the
            # columns are read as user, item, value; an adjacency list must say so
            _log.warning("%s: read as 'user item value%s' (the third column holds whole "
                         "numbers above 10); if each line is 'user item item ...', pass "
                         "format='adjacency' (--format adjacency)", _source(path),
                         " timestamp" if max(counts) == 4 else "")
    return "csv"


def _read_columns(path: Path, format: str | None, columns: Mapping[str, str],
                  encoding: str, sep: str | None, header: bool | None) -> _Columns:
    fmt = format or _detect_format(path, encoding)
    if fmt not in _FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {_FORMATS}", source=str(path))
    if fmt == "parquet":  # read_interactions streams Parquet; read_many needs raw columns
        return _read_parquet_columns(path, columns)
    if fmt == "adjacency":
        return _read_adjacency_columns(path, encoding)
    return _read_csv_columns(path, sep=sep or ("\t" if fmt == "tsv" else None), header=header,
                             names=None, columns=columns, encoding=encoding)


def read_interactions(path: str | os.PathLike, *, format: str | None = None,
                      columns: Mapping[str, str] | str | None = None, encoding: str = "utf-8",
                      sep: str | None = None, header: bool | None = None,
                      users: Vocabulary | None = None, items: Vocabulary | None = None,
                      unknown: UnknownPolicy = "error",
                      duplicates: DuplicatePolicy = "error",
                      shard: tuple[int, int] | None = None) -> Interactions:
    """Read any supported file, detecting the format from the extension and content.

    ``format`` is one of ``csv``, ``tsv``, ``parquet``, ``adjacency``. ``shard=(rank,
    world_size)`` keeps only the events of the users that rank owns (the vocabularies keep
    every id): Parquet is filtered while it streams, other formats after reading.
    """
    fmt = format or _detect_format(Path(path), encoding)
    if fmt == "parquet":
        return read_parquet(path, columns=columns, users=users, items=items, unknown=unknown,
                            duplicates=duplicates, shard=shard)
    cols = _read_columns(Path(path), fmt, parse_columns(columns), encoding, sep, header)
    data = _build(cols, users, items, unknown, duplicates)
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
    out = [_build(c, users, items, "error", duplicates) for c in parts]
    return out if shard is None else [user_shard(d, *shard) for d in out]


def _concat_ids(arrays: list[np.ndarray]) -> np.ndarray:
    if all(a.dtype.kind in "iu" for a in arrays):
        return np.concatenate(arrays)
    return np.concatenate([a.astype(str).astype(object) for a in arrays])
