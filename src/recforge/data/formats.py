"""Text formats of interaction files: delimited text (CSV, TSV, ``::``, whitespace) and
adjacency lists, and telling the formats apart.

Each reader returns validated raw columns (:class:`~recforge.data.frames.Columns`) or
index arrays (:class:`~recforge.data.frames.IndexedEvents`), and raises
:class:`~recforge.errors.DataError` naming the file, the line and the column at fault.
Readers never write anything. The public readers returning ``Interactions`` are in
:mod:`recforge.data.readers`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recforge.data.frames import (
    COLUMN_ALIASES,
    Columns,
    DuplicatePolicy,
    IndexedEvents,
    UnknownPolicy,
    extract_columns,
    index_columns,
    parse_columns,
    resolve_columns,
)
from recforge.data.parsing import integer_ids
from recforge.data.sharding import INTEGER_ID
from recforge.data.vocabulary import Vocabulary
from recforge.errors import DataError

_log = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "adjacency_columns",
    "adjacency_events",
    "check_readable",
    "csv_columns",
    "csv_events",
    "detect_format",
    "header_names",
    "sequences_columns",
    "sequences_events",
]

#: The file formats :func:`detect_format` tells apart (``format=``, ``--format``).
FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet", "adjacency", "sequences")


def check_readable(path: Path) -> None:
    """Refuse a path that is missing, a directory, unreadable or empty."""
    src = os.fspath(path)
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
                                 source=os.fspath(path), line=number)
            offset += len(raw)
    return DataError(f"not valid {shown} text; pass encoding='latin-1' (--encoding latin-1) "
                     "if the file uses it", source=os.fspath(path))


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
        raise DataError("file has no data (only blank lines)", source=os.fspath(path))
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


def csv_columns(path: Path, *, sep: str | None = None, header: bool | None = None,
                names: Sequence[str] | None = None, columns: Mapping[str, str] | None = None,
                encoding: str = "utf-8") -> Columns:
    """The validated columns of a delimited text file (options as for ``read_csv``;
    ``columns`` already parsed), each event numbered by the line its record starts on."""
    src = os.fspath(path)
    check_readable(path)
    shown_encoding = encoding
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"  # a byte-order mark (files saved by Excel or Notepad) is dropped
    try:
        first_lines, leading = _first_lines(path, encoding)
    except UnicodeDecodeError:
        raise _undecodable(path, shown_encoding, encoding) from None
    sep = sep or _sniff_sep(path, first_lines[0])
    guessed_header = header is None
    header, names = _layout(first_lines[0], sep, header, names, src)
    text_source: Any = path
    if sep == "::":
        # MovieLens 1M/10M style; the C parser only takes one-character separators.
        try:
            text_source = io.StringIO(path.read_text(encoding=encoding).replace("::", "\t"))
        except UnicodeDecodeError:
            raise _undecodable(path, shown_encoding, encoding) from None
        sep = "\t"
    try:
        frame = _parse_csv(text_source, sep, header, names, encoding, leading, src)
    except UnicodeDecodeError:
        raise _undecodable(path, shown_encoding, encoding) from None
    lines = _line_numbers(path, text_source, sep, encoding, leading, header, len(frame))
    blank = frame.isna().all(axis=1).to_numpy()
    if blank.any():
        frame = frame.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
    if len(frame) == 0:
        raise DataError("no interactions (the file has a header but no data rows)", source=src)
    if guessed_header and header:
        try:
            resolve_columns(list(frame.columns), columns, src, warn=False)
        except DataError as exc:
            raise DataError(f"{exc.detail} (the first line was taken as a header; if the "
                            "file has none, pass header=False, --no-header on the command "
                            "line)", source=src) from None
    return extract_columns(frame, columns, src, lines, "line")


def csv_events(path: str | os.PathLike, *, sep: str | None = None, header: bool | None = None,
               names: Sequence[str] | None = None,
               columns: Mapping[str, str] | str | None = None, encoding: str = "utf-8",
               users: Vocabulary | None = None, items: Vocabulary | None = None,
               unknown: UnknownPolicy = "error",
               duplicates: DuplicatePolicy = "error") -> IndexedEvents:
    """The events of a delimited text file as index arrays; see ``read_csv``."""
    cols = csv_columns(Path(path), sep=sep, header=header, names=names,
                       columns=parse_columns(columns), encoding=encoding)
    return index_columns(cols, users, items, unknown, duplicates)


def _layout(first: str, sep: str, header: bool | None, names: Sequence[str] | None,
            src: str) -> tuple[bool, Sequence[str] | None]:
    """Whether the first line is a header and, for a file without one whose columns are
    not named, the positional names ``user, item[, rating[, timestamp]]``."""
    fields = re.split(sep if sep in (r"\s+",) else re.escape(sep), first.strip())
    if header is None:
        header = names is None and _looks_like_header(fields)
    if not header and names is None:
        names = ["user", "item", "rating", "timestamp"][: len(fields)]
        if len(fields) > 4:
            names = names + [f"extra_{k}" for k in range(len(fields) - 4)]
        if len(fields) < 2:
            raise DataError(f"expected at least 2 fields (user, item), found {len(fields)} "
                            f"with separator {sep!r}", source=src, line=1)
    return header, names


def _parse_csv(text_source: Any, sep: str, header: bool, names: Sequence[str] | None,
               encoding: str, leading: int, src: str) -> pd.DataFrame:
    """Every field as text (``None`` for an empty one), blank lines kept as empty rows, the
    header's names as written; a line of the wrong width is an error naming it."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(
                text_source, sep=sep, header=0 if header else None,
                names=names if not header else None, dtype=str, keep_default_na=False,
                na_values=[""], skip_blank_lines=False, index_col=False, engine="c",
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
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", source=src) from None
    if header:  # the names as written: pandas has renamed a repeated `user` to `user.1`
        frame.columns = header_names(text_source, sep, encoding, leading, frame.columns)
    return frame


def _line_numbers(path: Path, text_source: Any, sep: str, encoding: str, leading: int,
                  header: bool, n_rows: int) -> np.ndarray:
    """The line each parsed row starts on."""
    lines = np.arange(n_rows) + (2 if header else 1) + leading
    if sep != r"\s+" and _physical_lines(path) > leading + bool(header) + n_rows:
        # a quoted field spans lines: number each record by the line it starts on
        starts = _record_start_lines(path, sep, encoding, text_source)
        lines = np.asarray(starts[leading + bool(header):][:n_rows], dtype=np.int64)
    return lines


def _wider_line(text_source: Any, sep: str, encoding: str, skiprows: int,
                src: str) -> DataError:
    """The error for a line with more fields than the first: parsed with no header, the
    first line sets the width and pandas names the first line wider than it."""
    if isinstance(text_source, io.StringIO):
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


def header_names(text_source: Any, sep: str, encoding: str, skiprows: int,
                 parsed: Sequence[Any]) -> list[str]:
    """The header's fields as written, read by the same parser with the same options.

    pandas renames a repeated column name (``user,user,item`` becomes ``user, user.1,
    item``), so a repeat can only be seen in the header line itself; a column really named
    ``user.1`` is no repeat. An empty field keeps the name pandas gave it (``Unnamed: 2``).
    """
    if isinstance(text_source, io.StringIO):
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
    if isinstance(text_source, io.StringIO):
        handle: Any = io.StringIO(text_source.getvalue())
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


# ---------------------------------------------------------------------------------------
# adjacency lists
def adjacency_columns(path: Path, encoding: str = "utf-8") -> Columns:
    """The (user, item) ids of an adjacency list, ``user item item ...`` per line."""
    src = os.fspath(path)
    check_readable(path)
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
    return Columns(user, item, None, None, where, src, "line")


def _adj_ids(tokens: np.ndarray, where: np.ndarray, src: str) -> np.ndarray:
    s = pd.Series(tokens, dtype="string")
    ints = integer_ids(s)
    if ints is not None:
        return ints
    is_int = s.str.fullmatch(INTEGER_ID).to_numpy(dtype=bool)
    if is_int.mean() > 0.5 and not is_int.all():
        i = int(np.flatnonzero(~is_int)[0])
        raise DataError(f"{tokens[i]!r} is not an integer id (the other ids are)", source=src,
                        line=int(where[i]))
    return tokens


def adjacency_events(path: str | os.PathLike, *, users: Vocabulary | None = None,
                     items: Vocabulary | None = None, unknown: UnknownPolicy = "error",
                     duplicates: DuplicatePolicy = "error",
                     encoding: str = "utf-8") -> IndexedEvents:
    """The events of an adjacency list as index arrays; see ``read_adjacency``."""
    return index_columns(adjacency_columns(Path(path), encoding), users, items, unknown,
                         duplicates)


# ---------------------------------------------------------------------------------------
# ordered sequences
_WHITESPACE = np.frombuffer(b" \t\n\r\x0b\x0c", dtype=np.uint8)  # what bytes.split() splits on


def sequences_columns(path: Path) -> Columns:
    """The (user, item) ids of an ordered adjacency list, ``user item item ...`` per line,
    oldest item first: the events come out in file order (line by line, left to right),
    which is their order in time. Every id must be an integer (``0`` or ``-?[1-9][0-9]*``);
    anything else is an error naming the line and the field (1-based column).

    Tokenized without a Python loop over lines: the token starts and their line numbers
    come from the file's bytes with numpy, the tokens from ``bytes.split``.
    """
    src = os.fspath(path)
    check_readable(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", source=src) from None
    skip = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # a UTF-8 byte-order mark
    buf = np.frombuffer(raw, dtype=np.uint8)[skip:]
    space = np.isin(buf, _WHITESPACE)
    starts = np.flatnonzero(~space & np.concatenate([[True], space[:-1]]))
    line = np.cumsum(buf == 10)[starts] + 1 if len(starts) else np.empty(0, np.int64)
    tokens = raw[skip:].split()
    if len(tokens) != len(starts):  # cannot happen: both split on the same bytes
        raise DataError("cannot tokenize the file", source=src)
    first = np.ones(len(starts), dtype=bool)
    first[1:] = line[1:] != line[:-1]
    idx = np.arange(len(starts))
    field = idx - np.maximum.accumulate(np.where(first, idx, 0)) + 1
    if not (~first).any():
        raise DataError("no interactions (no line lists an item)", source=src)
    text = pd.Series(tokens, dtype=object).str.decode("utf-8", errors="replace")
    digits = text.str.lstrip("-").str.len().to_numpy()  # int64 holds up to 19 digits
    ok = text.str.fullmatch(INTEGER_ID).to_numpy(dtype=bool) & (digits <= 19)
    if ok.all():
        try:
            values = np.asarray(tokens).astype(np.int64)
        except (OverflowError, ValueError):  # a 19-digit number above int64's range
            values = None
    else:
        values = None
    if values is None:
        if ok.all():  # locate the number int64 cannot hold
            big = digits == 19
            ok[big] = text[big].map(lambda t: -2**63 <= int(t) < 2**63).to_numpy(dtype=bool)
        k = int(np.flatnonzero(~ok)[0])
        what = "user" if first[k] else "item"
        raise DataError(f"{what} id {text.iloc[k][:40]!r} is not an integer (a sequences file "
                        "holds integer ids, `user item item ...`, oldest first)", source=src,
                        line=int(line[k]), column=str(int(field[k])))
    owner = np.maximum.accumulate(np.where(first, idx, 0))
    events = ~first
    user = values[owner[events]]
    return Columns(user, values[events], None, None, line[events], src, "line")


def sequences_events(path: str | os.PathLike, *, users: Vocabulary | None = None,
                     items: Vocabulary | None = None, unknown: UnknownPolicy = "error",
                     duplicates: DuplicatePolicy = "error") -> IndexedEvents:
    """The events of an ordered sequences file as index arrays; see ``read_sequences``."""
    return index_columns(sequences_columns(Path(path)), users, items, unknown, duplicates)


# ---------------------------------------------------------------------------------------
# telling the formats apart
def detect_format(path: Path, encoding: str = "utf-8") -> str:
    """One of :data:`FORMATS`, from the file's extension or, failing that, its content."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".tsv":
        return "tsv"
    if suffix == ".csv":
        return "csv"
    check_readable(path)
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
                         "format='adjacency' (--format adjacency)", os.fspath(path),
                         " timestamp" if max(counts) == 4 else "")
    return "csv"
