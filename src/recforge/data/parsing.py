"""Parsing one column of events: external ids, numeric values, timestamps.

Each parser takes a pandas Series and the line (or row) number of each entry, and returns
a numpy array or raises :class:`~recforge.errors.DataError` naming the source, the line or
row and the column: ids are int64 when every one is a plain integer, else text; values are
finite floats; timestamps are int64 seconds since the epoch, read from numbers or dates of
any year.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd

from recforge.data.sharding import INTEGER_ID
from recforge.errors import DataError

_log = logging.getLogger(__name__)

__all__ = ["integer_ids", "parse_ids", "parse_numbers", "parse_timestamps", "plain", "shown"]

_INT64_MAX = 2**63 - 1


def plain(x: Any) -> Any:
    """A numpy scalar as the Python value it holds (for messages: 7, not np.int64(7))."""
    return x.item() if isinstance(x, np.generic) else x


def shown(value: Any, limit: int = 40) -> str:
    """``repr`` of a value from the data for a message, cut short (a 5,000-digit id would
    otherwise fill the screen)."""
    text = repr(plain(value))
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
    return DataError(f"{name} id {shown(value)} is a {type(value).__name__}; ids must be "
                     "integers or text", source=source, column=name, **{unit: int(where[i])})


def parse_ids(series: pd.Series, name: str, where: np.ndarray, source: str | None,
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
    ints = integer_ids(s)
    return ints if ints is not None else s.to_numpy(dtype=object)


def integer_ids(text: pd.Series) -> np.ndarray | None:
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
        raise DataError(f"{what} {shown(series.iloc[bad])} is not UTF-8 text", source=source,
                        column=name, **{unit: int(where[bad])}) from None


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def parse_numbers(series: pd.Series, name: str, where: np.ndarray, source: str | None,
                  unit: str) -> np.ndarray:
    """Numeric values as float64: finite numbers, from numbers, booleans or text."""
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
                what = f"{shown(str(val).strip())} is not a finite number"
            except ValueError:
                what = f"{shown(str(val))} is not a number"
        raise DataError(what, source=source, column=name, **{unit: int(where[i])})
    return num


#: A number as text: what a timestamp column holds as seconds since the epoch.
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)"
#: Whole seconds that int64 holds exactly, read as integers (never through a float).
_WHOLE = r"[+-]?\d{1,18}"
#: Words pandas and numpy read as a date relative to the reading (or as "no date").
_NOT_DATES = frozenset({"now", "today", "tomorrow", "yesterday", "nat"})


def parse_timestamps(series: pd.Series, name: str, where: np.ndarray, source: str | None,
                     unit: str) -> np.ndarray:
    """Timestamps as int64 seconds since the epoch: from datetimes, numbers (seconds) or
    text holding numbers or dates of any year."""
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
            raise DataError(f"timestamp {shown(series.iloc[i])} is out of range (seconds "
                            "since the epoch)", source=source, column=name,
                            **{unit: int(where[i])})
        return _warn_ms(series.to_numpy(dtype=np.int64), name, source)
    if series.dtype.kind in "iuf":
        return _seconds(parse_numbers(series, name, where, source, unit), series, name, where,
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
                raise DataError(f"{shown(str(series.iloc[k]))} is not a timestamp (seconds "
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
            raise DataError(f"timestamp {shown(rest.iloc[i])} {what}", source=source,
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
        raise DataError(f"timestamp {shown(series.iloc[i])} is out of range (seconds since "
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
