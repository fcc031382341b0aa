"""Fuzzing the file readers: whatever a file holds, reading it ends in a valid
:class:`Interactions` whose ids are the file's, exactly, or in a :class:`DataError` that names
the file; never in another exception.

Arbitrary bytes, CSV-ish text (random delimiters, quotes, byte-order marks, blank lines,
5,000-digit numbers, NaN, unicode) and Parquet files of odd schemas go to the CSV, TSV,
adjacency-list and Parquet readers. Each test is bounded (``max_examples``, 120 unless
``RECFORGE_FUZZ_EXAMPLES`` says otherwise) so the file runs in well under half a minute.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recforge import DataError, Interactions
from recforge.data.readers import (
    read_adjacency,
    read_csv,
    read_interactions,
    read_many,
    read_parquet,
    read_sequences,
)
from recforge.data.sharding import INTEGER_ID

#: RECFORGE_FUZZ_EXAMPLES=5000 searches longer (the default keeps the file under ~20 s).
_FUZZ = settings(deadline=None, max_examples=int(os.environ.get("RECFORGE_FUZZ_EXAMPLES", 120)),
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])
_INT64 = (-(2**63), 2**63 - 1)
_HUGE = "9" * 5000  # beyond Python's int-from-text limit (4,300 digits) and any float


# ---------------------------------------------------------------------------------------
# the property
def _checked(read, path: Path) -> Interactions | None:
    """Read ``path``; return the data when it is valid, None after a DataError naming it."""
    try:
        data = read(path)
    except DataError as exc:
        assert os.fspath(path) in str(exc), f"the error does not name the file: {exc}"
        _checked.refusal = str(exc)  # type: ignore[attr-defined]
        return None
    assert isinstance(data, Interactions)
    n = len(data)
    assert n > 0 and len(data.user) == n and len(data.item) == n
    assert data.user.dtype == np.int32 and data.item.dtype == np.int32
    assert 0 <= data.user.min() and data.user.max() < data.n_users == len(data.users)
    assert 0 <= data.item.min() and data.item.max() < data.n_items == len(data.items)
    for ids in (data.users.ids, data.items.ids):
        assert ids.dtype == np.int64 or all(isinstance(x, str) for x in ids)
        assert len(set(ids.tolist())) == len(ids)
    if data.value is not None:
        assert data.value.dtype == np.float32 and np.isfinite(data.value).all()
    if data.timestamp is not None:
        assert data.timestamp.dtype == np.int64
    pairs = data.user.astype(np.int64) * data.n_items + data.item
    assert len(np.unique(pairs)) == n  # duplicates="error": no repeated pair got through
    return data


def _expected_ids(tokens: list[str]) -> set:
    """The documented rule: integers when every id is a plain integer that int64 holds
    (``007`` is text), else every id as text."""
    plain = [re.fullmatch(INTEGER_ID, t) is not None and len(t) <= 20 for t in tokens]
    if all(plain):
        values = [int(t) for t in tokens]
        if all(_INT64[0] <= v <= _INT64[1] for v in values):
            return set(values)
    return set(tokens)


# ---------------------------------------------------------------------------------------
# strategies
_unicode = st.characters(blacklist_categories=("Cs",))  # any code point UTF-8 can encode
# numbers of 4,301-5,000 digits, built as text (Python will not print such an int either)
_huge_int = st.builds(lambda sign, head, body, n: sign + head + (body * n)[:n],
                      st.sampled_from(["", "-"]), st.sampled_from("123456789"),
                      st.text("0123456789", min_size=1, max_size=6), st.integers(4300, 5000))
_plain_int = st.one_of(st.integers(*_INT64).map(str), st.integers(-(10**30), 10**30).map(str),
                       _huge_int)
_odd_text = st.sampled_from([
    "NaN", "nan", "NA", "N/A", "null", "None", "inf", "-inf", "1e5", "1.0", "-0", "007", "+5",
    "0x1F", "١٢", "１２", "True", "\u00e9t\u00e9", "日本", "a b", 'say "hi"', "x,y", "a\tb",
    "a;b", "p|q", "1::2", "#1", "'q'", "\ufeffbom", _HUGE, "-" + _HUGE, _HUGE + ".5",
    '"a\nb"', '"a\r\nb"', 'a"b', '""', '"', '"x"y', '"1,2"', "\x00", "\\", "1\r2",
])
_token = st.one_of(_plain_int, _odd_text,
                   st.text(_unicode, min_size=1, max_size=8))
# an id as a user writes one: no blanks around it (the readers strip them)
_id = st.one_of(_plain_int, _odd_text, st.text(_unicode, min_size=1, max_size=8)
                ).filter(lambda s: s.strip() == s and s != "")


@st.composite
def _csv_table(draw):
    """A well-formed delimited file (written by the csv module) and its id columns."""
    n = draw(st.integers(1, 8))
    user_pool = draw(st.lists(_id, min_size=1, max_size=4))
    item_pool = draw(st.lists(_id, min_size=1, max_size=4))
    pairs = draw(st.lists(st.tuples(st.sampled_from(user_pool), st.sampled_from(item_pool)),
                          min_size=1, max_size=n, unique=True))
    # distinct as text, distinct as read: an integer id has one spelling ("05", "-0" are text)
    users = [u for u, _ in pairs]
    items = [i for _, i in pairs]
    sep = draw(st.sampled_from([",", "\t", ";", "|"]))
    buf = io.StringIO()
    # the csv module leaves a lone "\r" unquoted when lines end in "\n": quote every field
    # then, else the file would hold a line break the table does not
    breaks = any("\r" in x or "\n" in x for x in users + items)
    writer = csv.writer(buf, delimiter=sep, lineterminator=draw(st.sampled_from(["\n", "\r\n"])),
                        quoting=csv.QUOTE_ALL if breaks else draw(st.sampled_from(
                            [csv.QUOTE_MINIMAL, csv.QUOTE_ALL])))
    rated = draw(st.booleans())
    writer.writerow(["user", "item"] + (["rating"] if rated else []))
    for u, i in pairs:
        writer.writerow([u, i] + ([draw(st.sampled_from(["1", "2.5", "-3", "1e3"]))]
                                  if rated else []))
    text = buf.getvalue()
    if draw(st.booleans()):
        text = "\n" * draw(st.integers(1, 3)) + text
    if draw(st.booleans()):  # a byte-order mark comes first, before any blank line
        text = "\ufeff" + text
    return text, users, items, sep


@st.composite
def _csvish(draw):
    """Text that looks a bit like a delimited file: random tokens, separators, quotes."""
    sep = draw(st.sampled_from([",", "\t", ";", "|", "::", " ", "  ", ", "]))
    width = draw(st.integers(1, 5))
    lines = []
    if draw(st.booleans()):
        names = ["user", "item", "rating", "timestamp", "user", "User", "user.1", "", "x",
                 "userId", "movieId", "ts", "stars"]
        lines.append(sep.join(draw(st.lists(st.sampled_from(names), min_size=width,
                                            max_size=width))))
    for _ in range(draw(st.integers(0, 6))):
        k = draw(st.one_of(st.just(width), st.integers(0, width + 2)))
        fields = draw(st.lists(_token, min_size=k, max_size=k))
        if draw(st.booleans()):
            fields = [f'"{f}"' if draw(st.booleans()) else f for f in fields]
        lines.append(sep.join(fields))
        if draw(st.integers(0, 4)) == 0:
            lines.append(draw(st.sampled_from(["", " ", "\t", '"', '""'])))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(lines) + draw(st.sampled_from(["", end]))
    if draw(st.booleans()):
        text = "\ufeff" + text
    return text


@st.composite
def _adjacency(draw):
    """An adjacency list: ``user item item ...`` per line, blanks of any kind between."""
    users = draw(st.lists(_id.filter(lambda s: not any(c.isspace() for c in s)),
                          min_size=1, max_size=5, unique=True))
    item_tok = _id.filter(lambda s: not any(c.isspace() for c in s))
    lines, pairs = [], []
    for u in users:
        items = draw(st.lists(item_tok, min_size=0, max_size=4, unique=True))
        pairs += [(u, i) for i in items]
        blank = draw(st.sampled_from([" ", "\t", "  "]))
        lines.append(blank.join([u, *items]))
    return "\n".join(lines) + "\n", pairs


# ---------------------------------------------------------------------------------------
# arbitrary bytes, to every reader
_READERS = {
    "auto": read_interactions,
    "csv": read_csv,
    "tsv": lambda p: read_interactions(p, format="tsv"),
    "adjacency": read_adjacency,
    "header": lambda p: read_csv(p, header=True),
    "no-header": lambda p: read_csv(p, header=False),
    "latin-1": lambda p: read_csv(p, encoding="latin-1"),
    "many": lambda p: read_many([p, p], duplicates="last")[0],
    "sequences": read_sequences,
}


@_FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".tsv", ".txt", ""]),
       reader=st.sampled_from(sorted(_READERS)))
@example(data=b"user,item\n" + _HUGE.encode() + b",1\n", suffix=".csv", reader="auto")
@example(data=_HUGE.encode() + b" 1 2\n3 4\n", suffix=".txt", reader="adjacency")
@example(data=b"\xef\xbb\xbf\n\nuser\titem\n1\t2\n", suffix="", reader="auto")
@example(data=b"\x00\x01,\x02\n", suffix=".csv", reader="csv")
def test_arbitrary_bytes(tmp_path_factory, data, suffix, reader):
    path = tmp_path_factory.mktemp("bytes") / f"data{suffix}"
    path.write_bytes(data)
    _checked(_READERS[reader], path)


@_FUZZ
@given(text=_csvish(), reader=st.sampled_from(["auto", "csv", "header", "no-header", "tsv",
                                               "adjacency", "many", "sequences"]))
@example(text="user,item,timestamp\n1,2," + _HUGE + "\n", reader="auto")
@example(text="user,item,timestamp\n1,2,NaT\n", reader="auto")
@example(text="user,item,rating\n1,2," + _HUGE + "\n", reader="auto")
@example(text="user,item,timestamp\n1,2,1111111111111111111\n", reader="auto")
def test_csvish_text(tmp_path_factory, text, reader):
    path = tmp_path_factory.mktemp("text") / "data.csv"
    path.write_text(text, encoding="utf-8")
    got = _checked(_READERS[reader], path)
    if got is not None and '"' not in text:
        # every id read is text of the file (or, for an integer, its digits there)
        for ids in (got.users.ids, got.items.ids):
            for x in ids.tolist():
                assert str(x) in text


# ---------------------------------------------------------------------------------------
# well-formed files: the ids come back exactly
@_FUZZ
@given(lines=st.lists(st.tuples(st.integers(*_INT64),
                                st.lists(st.integers(*_INT64), min_size=1, max_size=6,
                                         unique=True)),
                      min_size=1, max_size=8, unique_by=lambda line: line[0]),
       sep=st.sampled_from([" ", "\t", "  "]))
@example(lines=[(2**63 - 1, [-(2**63), 0])], sep=" ")
def test_sequences_keep_the_line_order(tmp_path_factory, lines, sep):
    """A well-formed ordered-sequences file: every user's items come back in the order of
    its line (the position is the order), with the file's ids."""
    path = tmp_path_factory.mktemp("seq") / "sequences.txt"
    path.write_text("".join(sep.join(map(str, [u, *items])) + "\n" for u, items in lines))
    data = _checked(read_sequences, path)
    assert data is not None, _checked.refusal  # type: ignore[attr-defined]
    seqs = data.sequences()
    users = data.users.ids.tolist()
    for u, items in lines:
        row = users.index(u)
        got = data.items.ids[seqs.items[seqs.indptr[row]:seqs.indptr[row + 1]]].tolist()
        assert got == items


@_FUZZ
@given(table=_csv_table())
@example(table=("user,item\n" + _HUGE + ",1\n2,3\n", [_HUGE, "2"], ["1", "3"], ","))
@example(table=("user,item\n-0,1\n0,2\n", ["-0", "0"], ["1", "2"], ","))
def test_csv_ids_round_trip(tmp_path_factory, table):
    text, users, items, sep = table
    path = tmp_path_factory.mktemp("csv") / ("data.tsv" if sep == "\t" else "data.csv")
    path.write_bytes(text.encode("utf-8"))
    try:
        data = _checked(lambda p: read_interactions(p, duplicates="error"), path)
    except Exception as exc:  # noqa: BLE001 (shown with the file that caused it)
        raise AssertionError(f"{text[:400]!r}") from exc
    assert data is not None, (f"a well-formed file was refused: {text[:400]!r}: "
                              f"{_checked.refusal[:300]}")  # type: ignore[attr-defined]
    assert set(data.users.ids.tolist()) == _expected_ids(users)
    assert set(data.items.ids.tolist()) == _expected_ids(items)
    # each row's pair, in file order, is the written one
    frame = data.to_frame()
    as_read = [(str(u), str(i)) for u, i in zip(frame["user"], frame["item"], strict=True)]
    ints_u, ints_i = data.users.ids.dtype == np.int64, data.items.ids.dtype == np.int64
    assert as_read == [(str(int(u)) if ints_u else u, str(int(i)) if ints_i else i)
                       for u, i in zip(users, items, strict=True)]


@_FUZZ
@given(adj=_adjacency())
@example(adj=(_HUGE + " 1 2\n3 4\n", [(_HUGE, "1"), (_HUGE, "2"), ("3", "4")]))
def test_adjacency_ids_round_trip(tmp_path_factory, adj):
    text, pairs = adj
    path = tmp_path_factory.mktemp("adj") / "train.txt"
    path.write_bytes(text.encode("utf-8"))
    data = _checked(read_adjacency, path)
    if not pairs:
        assert data is None
        return
    users = [u for u, _ in pairs]
    items = [i for _, i in pairs]
    mostly_int = [np.mean([re.fullmatch(INTEGER_ID, t) is not None for t in col])
                  for col in (users, items)]
    if data is None:  # refused: only a column of integers with a stray text id may be
        assert any(0.5 < m < 1 for m in mostly_int), _checked.refusal  # type: ignore[attr-defined]
        return
    assert set(data.users.ids.tolist()) == _expected_ids(users)
    assert set(data.items.ids.tolist()) == _expected_ids(items)


# ---------------------------------------------------------------------------------------
# Parquet files of odd schemas
def _arrow_column(draw, role: str):
    import decimal

    import pyarrow as pa

    n = 4
    kind = draw(st.sampled_from([
        "int8", "int64", "uint64", "float64", "float32", "string", "large_string", "binary",
        "dictionary", "bool", "null", "list", "struct", "timestamp", "date32", "decimal",
        "duration", "huge_text"]))
    if kind in ("int8", "int64"):
        info = np.iinfo(kind)
        vals = draw(st.lists(st.one_of(st.integers(int(info.min), int(info.max)), st.none()),
                             min_size=n, max_size=n))
        return pa.array(vals, type=getattr(pa, kind)())
    if kind == "uint64":
        return pa.array(draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n)),
                        pa.uint64())
    if kind in ("float64", "float32"):
        return pa.array(draw(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True,
                                                           width=64 if kind == "float64"
                                                           else 32), st.none()),
                                      min_size=n, max_size=n)), getattr(pa, kind)())
    if kind in ("string", "large_string"):
        return pa.array(draw(st.lists(st.one_of(_token, st.none()), min_size=n, max_size=n)),
                        getattr(pa, kind)())
    if kind == "huge_text":
        return pa.array([_HUGE, "1", "-" + _HUGE, "2"])
    if kind == "binary":
        return pa.array(draw(st.lists(st.binary(max_size=6), min_size=n, max_size=n)),
                        pa.binary())
    if kind == "dictionary":
        return pa.array(draw(st.lists(_token, min_size=n, max_size=n))).dictionary_encode()
    if kind == "bool":
        return pa.array(draw(st.lists(st.one_of(st.booleans(), st.none()), min_size=n,
                                      max_size=n)), pa.bool_())
    if kind == "null":
        return pa.nulls(n)
    if kind == "list":
        return pa.array([[1], [2, 3], [], None])
    if kind == "struct":
        return pa.array([{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}])
    if kind == "timestamp":
        return pa.array(np.array([0, 10**18, -(10**18), 5], dtype="datetime64[ns]"))
    if kind == "date32":
        return pa.array(np.array(["1970-01-01", "2262-04-12", "1500-01-01", "9999-12-31"],
                                 dtype="datetime64[D]"))
    if kind == "decimal":
        return pa.array([decimal.Decimal("1.5"), decimal.Decimal("2"), None,
                         decimal.Decimal("1e20")], pa.decimal128(38, 2))
    return pa.array(np.array([1, 2, 3, 4], dtype="timedelta64[s]"))


@st.composite
def _parquet_table(draw):
    import pyarrow as pa

    roles = ["user", "item"] + [r for r in ("rating", "timestamp") if draw(st.booleans())]
    arrays = [_arrow_column(draw, r) for r in roles]
    return pa.Table.from_arrays(arrays, names=roles)


@_FUZZ
@given(table=_parquet_table(), streaming=st.booleans())
def test_parquet_of_odd_schemas(tmp_path_factory, table, streaming):
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("pq") / "data.parquet"
    pq.write_table(table, path)
    import pyarrow as pa

    read = read_parquet if streaming else (lambda p: read_many([p])[0])
    data = _checked(read, path)
    id_types = [table.schema.field(r).type for r in ("user", "item")]
    id_types = [t.value_type if pa.types.is_dictionary(t) else t for t in id_types]
    if not all(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t)
               or pa.types.is_large_string(t) or pa.types.is_binary(t) for t in id_types):
        assert data is None, f"ids of type {id_types} were accepted"
    if data is None:
        return
    for role, ids in (("user", data.users.ids), ("item", data.items.ids)):
        column = table.column(role).to_pylist()
        if all(isinstance(v, bytes) for v in column):
            column = [b.decode("utf-8") for b in column]
        if all(isinstance(v, str) for v in column):  # text: stripped, then the rule
            want = _expected_ids([v.strip() for v in column])
        elif all(isinstance(v, float) for v in column):  # whole numbers, as integers
            want = {int(v) for v in column}
        elif all(_INT64[0] <= v <= _INT64[1] for v in column):
            want = set(column)
        else:  # unsigned ids above int64 stay exact, as text
            want = {str(v) for v in column}
        assert set(ids.tolist()) == want, (role, table.schema.field(role).type)


# ---------------------------------------------------------------------------------------
# the other inputs a user hands the data layer: --columns, archives, MovieLens files
@_FUZZ
@given(spec=st.text(st.sampled_from("user=item,rating timestamp=x =,UserID ") | _unicode,
                    max_size=40))
def test_column_specs(spec):
    from recforge.data.frames import parse_columns

    try:
        mapping = parse_columns(spec)
    except DataError:
        return
    assert set(mapping) <= {"user", "item", "rating", "timestamp"}
    assert all(isinstance(v, str) for v in mapping.values())


def _small_zip() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.data", "1\t10\t5\t881250949\n2\t10\t4\t881250951\n" * 20)
        zf.writestr("ml-100k/u.item", "10|A (1995)|||x|" + "|".join("0" * 19) + "\n")
    return buf.getvalue()


@_FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10_000)))
@example(edits=[], cut=None)
@example(edits=[], cut=30)
def test_damaged_archives(tmp_path_factory, edits, cut):
    """A zip with bytes changed or cut off: extracted whole, or a DataError naming it with
    nothing left behind."""
    from recforge.data.download import extract_zip

    data = bytearray(_small_zip())
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    root = tmp_path_factory.mktemp("zip")
    archive = root / "a.zip"
    archive.write_bytes(bytes(data))
    dest = root / "dest"
    try:
        extract_zip(archive, dest, max_bytes=1 << 20)
    except DataError as exc:
        assert os.fspath(archive) in str(exc)
        assert not dest.exists() or not any(dest.rglob("*")), "a failed extraction left files"
        return
    assert all(p.is_file() or p.is_dir() for p in dest.rglob("*"))
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= 1 << 20


@_FUZZ
@given(ratings=_csvish(), movies=st.text(_unicode, max_size=120),
       users=st.text(_unicode, max_size=120), layout=st.sampled_from(["ml-1m", "ml-100k"]))
@example(ratings="1::10::5::978300760\n", movies="10::A (1995)::Drama\n",
         users="1::F::1::10::48067\n", layout="ml-1m")
# a blank movies / users file (only newlines) crashed the split reader with a ValueError
@example(ratings="1,10,5,978300760\n", movies="\n", users="\n", layout="ml-100k")
@example(ratings="1,10,5,978300760\n", movies=" \n\n", users="", layout="ml-1m")
def test_movielens_files(tmp_path_factory, ratings, movies, users, layout):
    from recforge.data.movielens import load_movielens

    root = tmp_path_factory.mktemp("ml")
    folder = root / layout
    folder.mkdir()
    if layout == "ml-1m":
        names = {"ratings.dat": ratings.replace(",", "::"), "movies.dat": movies,
                 "users.dat": users}
    else:
        names = {"u.data": ratings.replace(",", "\t"), "u.item": movies, "u.user": users}
    for name, text in names.items():
        (folder / name).write_text(text, encoding="utf-8")
    try:
        data = load_movielens(layout, data_dir=root, download=False)
    except DataError as exc:
        assert os.fspath(folder) in str(exc), f"the error does not name the file: {exc}"
        return
    assert len(data.interactions) > 0
