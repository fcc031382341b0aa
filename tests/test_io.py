"""Readers: formats, column mapping, and every kind of bad input named precisely."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from conftest import event_frame

from recforge import DataError, Interactions
from recforge.data.frames import parse_columns
from recforge.data.readers import read_adjacency, read_csv, read_interactions, read_many
from recforge.errors import ConfigError


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_with_header_and_aliases(tmp_path):
    p = write(tmp_path, "r.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n2,10,3.5,50\n1,20,5,70\n")
    data = read_csv(p)
    assert len(data) == 3 and data.n_users == 2 and data.n_items == 2
    assert data.users.ids.tolist() == [1, 2] and data.items.ids.tolist() == [10, 20]
    assert data.value.tolist() == [4.0, 3.5, 5.0]
    assert data.timestamp.tolist() == [100, 50, 70]
    frame = data.to_frame()
    assert frame["user"].tolist() == [1, 2, 1] and frame["item"].tolist() == [10, 10, 20]


def test_tsv_without_header_is_positional(tmp_path):
    p = write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    data = read_interactions(p)
    assert data.users.ids.tolist() == [186, 196] and data.has_values and data.has_timestamps


def test_double_colon_separator(tmp_path):
    p = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    data = read_interactions(p)
    assert len(data) == 2 and data.value.tolist() == [5.0, 3.0]


def test_string_ids_keep_leading_zeros(tmp_path):
    p = write(tmp_path, "r.csv", "user,item\n007,0012\n7,12\n")
    data = read_csv(p)
    assert sorted(data.users.ids.tolist()) == ["007", "7"]
    assert sorted(data.items.ids.tolist()) == ["0012", "12"]


def test_column_mapping(tmp_path):
    p = write(tmp_path, "r.csv", "who,what,stars\na,x,1\nb,y,2\n")
    data = read_csv(p, columns="user=who,item=what,rating=stars")
    assert data.value.tolist() == [1.0, 2.0]
    assert parse_columns("user=who, item=what") == {"user": "who", "item": "what"}


def test_datetime_timestamps(tmp_path):
    p = write(tmp_path, "r.csv", "user,item,timestamp\na,x,2020-01-01T00:00:00Z\nb,y,2020-01-02\n"
              "c,z,1577836800\n")
    data = read_csv(p)
    assert data.timestamp.tolist() == [1577836800, 1577923200, 1577836800]


def test_parquet_roundtrip(tmp_path):
    frame = pd.DataFrame({"user_id": ["a", "b", "a"], "item_id": [1, 2, 3],
                          "rating": [1.0, 2.0, 3.0]})
    p = tmp_path / "d.parquet"
    frame.to_parquet(p)
    data = read_interactions(p)
    assert len(data) == 3 and data.items.ids.tolist() == [1, 2, 3]


def test_adjacency_list(tmp_path):
    p = write(tmp_path, "train.txt", "0 1 2 3\n1 2\n\n2\n3 0 1\n")
    data = read_adjacency(p)
    assert len(data) == 6
    assert data.to_frame()["user"].tolist() == [0, 0, 0, 1, 3, 3]
    assert read_interactions(p).n_users == data.n_users  # detected as adjacency


def test_read_many_shares_vocabularies(tmp_path):
    a = write(tmp_path, "a.txt", "0 1 2 3\n1 2\n")
    b = write(tmp_path, "b.txt", "0 5\n7 1\n")
    ra, rb = read_many([a, b])
    assert ra.users is rb.users and ra.items is rb.items
    assert ra.users.ids.tolist() == [0, 1, 7] and ra.items.ids.tolist() == [1, 2, 3, 5]


# -- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize("text, line, column, message", [
    ("user,item,rating\n1,2,3\n1,3,abc\n", 3, "rating", "'abc' is not a number"),
    ("user,item,rating\n1,2,3\n1,3,\n", 3, "rating", "missing value"),
    ("user,item,rating\n1,2,3\n1,3,nan\n", 3, "rating", "'nan' is not a finite number"),
    ("user,item,rating\n1,2,3\n1,3,inf\n", 3, "rating", "'inf' is not a finite number"),
    ("user,item,rating\n1,2,3\n,3,4\n", 3, "user", "missing user id"),
    ("user,item,rating\n1,2,3\n4,5,6,7\n", 3, None, "expected 3 fields, saw 4"),
    ("user,item,timestamp\n1,2,100\n1,3,yesterday\n", 3, "timestamp", "not a timestamp"),
])
def test_bad_values_name_line_and_column(tmp_path, text, line, column, message):
    p = write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError) as info:
        read_csv(p)
    err = info.value
    assert err.line == line and err.column == column and message in str(err)
    assert str(p) in str(err)


def test_blank_lines_keep_line_numbers(tmp_path):
    p = write(tmp_path, "bad.csv", "user,item,rating\n1,2,3\n\n1,3,x\n")
    with pytest.raises(DataError) as info:
        read_csv(p)
    assert info.value.line == 4


def test_missing_column_suggests(tmp_path):
    p = write(tmp_path, "r.csv", "usr,item\n1,2\n")
    with pytest.raises(DataError, match=r"no user column.*'usr'"):
        read_csv(p)
    with pytest.raises(DataError, match="column 'userid' .*not found.*did you mean 'usr'"):
        read_csv(p, columns={"user": "userid"})


def test_empty_and_unreadable(tmp_path):
    with pytest.raises(DataError, match="file is empty"):
        read_csv(write(tmp_path, "e.csv", ""))
    with pytest.raises(DataError, match="header but no data"):
        read_csv(write(tmp_path, "h.csv", "user,item\n"))
    with pytest.raises(DataError, match="file not found"):
        read_interactions(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_interactions(tmp_path)
    with pytest.raises(DataError, match="not a readable Parquet"):
        read_interactions(write(tmp_path, "x.parquet", "not parquet"))


def test_permission_denied(tmp_path, monkeypatch):
    p = write(tmp_path, "r.csv", "user,item\n1,2\n")
    if os.geteuid() == 0:  # root reads any file: simulate the denial instead
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    else:
        p.chmod(0)
    with pytest.raises(DataError, match="permission denied"):
        read_csv(p)


def test_not_utf8(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("user,item\nJosé,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="encoding='latin-1'"):
        read_csv(p)
    assert read_csv(p, encoding="latin-1").users.ids.tolist() == ["José"]


def test_undecodable_text_names_the_line_and_the_offset_in_the_file(tmp_path):
    rows = "".join(f"{i},{i % 7}\n" for i in range(1, 3000))
    p = tmp_path / "deep.csv"
    p.write_bytes(("user,item\n" + rows).encode() + "José,1\n".encode("latin-1"))
    offset = len(("user,item\n" + rows).encode()) + 3  # the byte after "Jos"
    with pytest.raises(DataError, match=rf"line 3001: not valid utf-8 text .* at byte {offset} "):
        read_csv(p)
    q = tmp_path / "latin.dat"  # the '::' layout goes through another reader
    q.write_bytes("1::2::5::100\nJosé::3::4::200\n".encode("latin-1"))
    with pytest.raises(DataError, match="line 2: not valid utf-8"):
        read_interactions(q)


@pytest.mark.parametrize("text, header, users", [
    ("A1,item9,5\nA2,item3,4\n", False, ["A1", "A2"]),  # text ids, no header
    ("1,10,5,2020-01-31\n2,10,3,2020-02-01\n", False, [1, 2]),  # dates, no header
    ("\ufeff1\t2\t5\t100\n1\t3\t4\t101\n", False, [1]),  # a byte-order mark
    ("\ufeffuser,item\n1,2\n", True, [1]),
    ("\n\nuser,item\n1,2\n3,4\n", True, [1, 3]),  # blank lines before the header
    ("customer,product,stars\nc1,p9,5\n", True, ["c1"]),  # names above a number
    ("userId,movieId\nalice,matrix\n", True, ["alice"]),  # known column names
])
def test_header_or_not_is_read_from_the_first_lines(tmp_path, text, header, users):
    p = write(tmp_path, "f.csv", text)
    data = read_csv(p, columns="user=customer,item=product,rating=stars"
                    if "customer" in text else None)
    assert sorted(data.users.ids.tolist(), key=str) == users
    assert len(data) == len([line for line in text.splitlines() if line.strip()]) - header


def test_line_numbers_count_the_lines_of_a_quoted_field(tmp_path):
    p = write(tmp_path, "q.csv", 'user,item,note\n1,2,"two\nlines"\n\n3,,c\n')
    with pytest.raises(DataError, match="line 5, column 'item': missing item id"):
        read_csv(p)
    q = write(tmp_path, "q.dat", '1::2::"x\ny"\n3::::c\n')  # the '::' layout too
    with pytest.raises(DataError, match="line 3"):
        read_csv(q)


def test_a_guessed_header_says_how_to_read_a_file_without_one(tmp_path):
    p = write(tmp_path, "w.csv", "alice,matrix\nbob,dune\n")
    with pytest.raises(DataError, match="first line was taken as a header.*header=False"):
        read_csv(p)
    assert len(read_csv(p, header=False)) == 2
    q = write(tmp_path, "b.csv", "\nuser,item\n1,x\n2,\n")
    with pytest.raises(DataError, match="line 4, column 'item': missing item id"):
        read_csv(q)  # line numbers count the blank line before the header


@pytest.mark.parametrize("text, expected, warned", [
    ("1 10 11\n2 12 13\n", "csv", True),  # leave-two-out, or plays: says how to read it
    ("1 10 25 40\n2 12 3 41\n", "csv", True),  # user item count timestamp
    ("1 10 5\n2 12 3\n", "csv", False),  # user item rating
    ("1 10 4.5 881250949\n2 12 3 881250950\n", "csv", False),  # ... and a timestamp
    ("1 10\n2 12 13\n", "adjacency", False),  # lines of varying length
])
def test_whitespace_files_of_three_or_four_tokens(tmp_path, caplog, text, expected, warned):
    from recforge.data.formats import detect_format as _detect_format

    p = write(tmp_path, "f.txt", text)
    with caplog.at_level("WARNING"):
        assert _detect_format(p) == expected
    assert ("format='adjacency'" in caplog.text) == warned
    data = read_interactions(p)
    assert data.has_values == (expected == "csv")
    if warned:
        assert read_interactions(p, format="adjacency").has_values is False


def test_adjacency_bad_token(tmp_path):
    p = write(tmp_path, "t.txt", "0 1 2\n1 2 x3\n")
    with pytest.raises(DataError) as info:
        read_adjacency(p)
    assert info.value.line == 2 and "'x3'" in str(info.value)


def test_duplicates_policy(tmp_path):
    p = write(tmp_path, "d.csv", "user,item,rating,timestamp\n1,2,3,10\n1,3,4,11\n1,2,5,9\n")
    with pytest.raises(DataError) as info:
        read_csv(p)
    assert info.value.line == 4 and "first seen at line 2" in str(info.value)
    last = read_csv(p, duplicates="last").to_frame()
    assert last.set_index("item").loc[2, "rating"] == 3.0  # latest by timestamp (10 > 9)
    first = read_csv(p, duplicates="first").to_frame()
    assert first.set_index("item").loc[2, "rating"] == 5.0
    total = read_csv(p, duplicates="sum").to_frame()
    assert total.set_index("item").loc[2, "rating"] == 8.0 and len(total) == 2
    assert read_csv(p, duplicates="max").to_frame().set_index("item").loc[2, "rating"] == 5.0
    with pytest.raises(DataError, match="duplicates must be one of"):
        read_csv(p, duplicates="bogus")


def test_unknown_ids_against_vocabulary(tmp_path, small):
    p = write(tmp_path, "t.csv", "user,item\nu1,a\nzz,b\n")
    with pytest.raises(DataError, match="user 'zz' is not in the user vocabulary") as info:
        read_csv(p, users=small.users, items=small.items)
    assert info.value.line == 3
    dropped = read_csv(p, users=small.users, items=small.items, unknown="drop")
    assert len(dropped) == 1 and dropped.users is small.users


def test_from_frame_rows_named(small_frame):
    bad = small_frame.copy()
    bad.loc[3, "rating"] = np.nan
    with pytest.raises(DataError, match="row 4"):
        Interactions.from_frame(bad)
    with pytest.raises(DataError, match="expected a pandas DataFrame"):
        Interactions.from_frame([1, 2])


# ---------------------------------------------------------------------------------------
# streaming Parquet reads
@pytest.mark.parametrize("string_ids", [False, True])
def test_streaming_parquet_equals_an_in_memory_read(tmp_path, string_ids):
    frame = event_frame(string_ids=string_ids)
    p = tmp_path / "e.parquet"
    frame.to_parquet(p, row_group_size=700)
    from recforge.data.readers import read_parquet

    streamed = read_parquet(p, batch_rows=333)  # 16 batches, ids first seen out of order
    whole = Interactions.from_frame(frame)
    assert streamed.users == whole.users and streamed.items == whole.items
    np.testing.assert_array_equal(streamed.user, whole.user)
    np.testing.assert_array_equal(streamed.item, whole.item)
    np.testing.assert_array_equal(streamed.value, whole.value)
    np.testing.assert_array_equal(streamed.timestamp, whole.timestamp)
    assert streamed.user.dtype == np.int32 and streamed.value.dtype == np.float32


def test_streaming_parquet_errors_name_the_row_in_a_later_batch(tmp_path):
    from recforge.data.readers import read_parquet

    frame = event_frame(1000)
    frame["rating"] = frame["rating"].astype(object)
    frame.loc[876, "rating"] = "five"
    p = tmp_path / "bad.parquet"
    frame.astype({"rating": str}).to_parquet(p)
    with pytest.raises(DataError, match="row 877") as err:
        read_parquet(p, batch_rows=100)
    assert "'five' is not a number" in str(err.value) and "bad.parquet" in str(err.value)

    dup = pd.concat([event_frame(1000), event_frame(1000).iloc[[10]]], ignore_index=True)
    dup.to_parquet(p)
    with pytest.raises(DataError, match=r"duplicate .* first seen at row 11") as err:
        read_parquet(p, batch_rows=64)
    assert "row 1001" in str(err.value)
    assert len(read_parquet(p, batch_rows=64, duplicates="last")) == 1000


def test_streaming_parquet_with_a_given_vocabulary(tmp_path):
    from recforge.data.readers import read_parquet

    frame = event_frame(2000)
    p = tmp_path / "e.parquet"
    frame.to_parquet(p)
    base = read_parquet(p)
    kept_users = base.users.take(np.arange(0, base.n_users, 2))
    part = read_parquet(p, users=kept_users, items=base.items, unknown="drop", batch_rows=128)
    assert set(part.to_frame()["user"]) <= set(kept_users.ids.tolist())
    assert len(part) == int(frame["user"].isin(kept_users.ids).sum())
    with pytest.raises(DataError, match="not in the user vocabulary") as err:
        read_parquet(p, users=kept_users, items=base.items, batch_rows=128)
    assert "row" in str(err.value)


def test_generated_scale_data_has_the_requested_shape(tmp_path):
    from recforge.data.readers import read_parquet
    from recforge.data.synthetic import write_synthetic_parquet

    p = tmp_path / "s.parquet"
    info = write_synthetic_parquet(p, n_users=3000, n_items=2000, n_interactions=150_000,
                                   block_users=512, seed=4)
    data = read_parquet(p)  # duplicates="error": every (user, item) pair is distinct
    assert len(data) == info["events"] == 150_000
    assert data.n_users == 3000 and data.n_items <= 2000
    assert data.user_counts().min() >= 20  # the floor of every user's activity
    counts = np.sort(data.item_counts())[::-1]
    assert counts[:20].sum() > 0.1 * len(data)  # the top 1 % of items: a long tail
    assert data.value.min() >= 0.5 and data.value.max() <= 5.0
    assert [f.name for f in tmp_path.iterdir()] == ["s.parquet"]  # no temporary left
    again = write_synthetic_parquet(tmp_path / "t.parquet", n_users=3000, n_items=2000,
                                    n_interactions=150_000, block_users=512, seed=4)
    assert again["events"] == info["events"]
    assert (tmp_path / "t.parquet").read_bytes() == p.read_bytes()


def test_generated_data_below_the_activity_floor_keeps_its_size(tmp_path):
    """10 events per user cannot give every user the floor of 20: the floor drops to half
    the mean, and the log keeps the requested size, every user and a skew."""
    from recforge.data.readers import read_parquet
    from recforge.data.synthetic import write_synthetic_parquet

    p = tmp_path / "s.parquet"
    info = write_synthetic_parquet(p, n_users=3000, n_items=2000, n_interactions=30_000,
                                   block_users=512, seed=4)
    data = read_parquet(p)
    assert info["events"] == len(data) == 30_000
    counts = data.user_counts()
    assert data.n_users == 3000 and counts.min() >= 5 and counts.max() > 50
    with pytest.raises(ConfigError, match="at most n_items // 2"):
        write_synthetic_parquet(tmp_path / "t.parquet", n_users=10, n_items=20,
                                n_interactions=101)
    assert not (tmp_path / "t.parquet").exists()


def test_integer_vocabulary_treats_huge_numbers_as_unknown_ids():
    import warnings

    from recforge.data.vocabulary import Vocabulary

    vocab, _ = Vocabulary.from_values(np.asarray([2, 5, -(2**63)], dtype=np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in a cast
        idx = vocab.index(np.asarray(["5", "1e30", str(2**70), "-1e19", "2.0", "x"],
                                     dtype=object))
    # 1e30 and 2**70 do not fit in int64: unknown, never wrapped onto another id
    assert idx.tolist() == [2, -1, -1, -1, 1, -1]
    # ids beyond 2**53 given as text are matched exactly (float64 would round them)
    big, _ = Vocabulary.from_values(np.asarray([9007199254740993, 2**62 + 1], dtype=np.int64))
    assert big.index(np.asarray(["9007199254740993", str(2**62 + 1), "9007199254740992"],
                                dtype=object)).tolist() == [0, 1, -1]


def test_concat_applies_a_duplicates_policy_across_parts(tmp_path):
    from recforge.data.readers import read_many

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("user,item,rating,timestamp\n1,10,5,100\n1,11,3,100\n2,10,4,100\n")
    b.write_text("user,item,rating,timestamp\n1,10,2,200\n2,12,4,200\n")
    first, second = read_many([a, b])
    assert len(first.concat(second)) == 5  # no policy: every event kept
    with pytest.raises(DataError, match=r"pair \(1, 10\) in .*a\.csv and .*b\.csv"):
        first.concat(second, duplicates="error")
    for policy, rating in (("last", 2.0), ("first", 5.0), ("sum", 7.0), ("max", 5.0),
                           ("mean", 3.5)):
        both = first.concat(second, duplicates=policy)
        frame = both.to_frame()
        assert len(both) == 4, policy
        assert frame.loc[(frame.user == 1) & (frame.item == 10), "rating"].tolist() == [rating]


def test_dates_of_any_year_and_numbers_beyond_int64(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recforge.data.readers import interactions_from_frame, read_parquet

    p = write(tmp_path, "d.csv", "user,item,timestamp\n1,2,9999-12-31\n1,3,1500-01-01\n"
              "2,3,2020-01-31 10:00:00+02:00\n2,4,100\n")
    frame = read_csv(p).to_frame()
    assert frame["timestamp"].tolist() == [253402214400, -14831769600, 1580457600, 100]
    q = tmp_path / "d.parquet"
    pq.write_table(pa.table({"user": [1, 2], "item": [1, 1], "timestamp": pa.array(
        [np.datetime64("3000-01-01", "ms"), np.datetime64("2020-01-01", "ms")],
        pa.timestamp("ms"))}), q)
    assert read_parquet(q).to_frame()["timestamp"].tolist() == [32503680000, 1577836800]
    with pytest.raises(DataError, match=r"line 3, column 'timestamp': timestamp '1e30' is out"):
        read_csv(write(tmp_path, "e.csv", "user,item,timestamp\n1,2,5\n1,3,1e30\n"))
    # float ids: whole numbers that int64 holds, or a clear error (never wrapped)
    for bad in (1e20, float("inf"), 2.5):
        with pytest.raises(DataError, match=r"row 2, column 'user': user id .* not a whole"):
            interactions_from_frame(pd.DataFrame({"user": [1.0, bad], "item": [1, 1]}))
    # unsigned 64-bit ids above int64 stay exact (as text), never negative
    big = interactions_from_frame(pd.DataFrame({
        "user": np.asarray([2**64 - 1, 5], dtype=np.uint64), "item": [1, 1]}))
    assert sorted(big.users.ids.tolist()) == ["18446744073709551615", "5"]


def test_odd_columns_are_clear_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recforge.data.readers import interactions_from_frame, read_parquet

    with pytest.raises(DataError, match=r"line 3, column 'rating': 1e\+39 is too large"):
        read_csv(write(tmp_path, "r.csv", "user,item,rating\n1,2,5\n1,3,1e39\n"))
    with pytest.raises(DataError, match=r"column name 'item' appears more than once \(columns 2, 3\)"):
        interactions_from_frame(pd.DataFrame([[1, 2, 3]], columns=["user", "item", "item"]))
    p = tmp_path / "b.parquet"
    pq.write_table(pa.table({"user": pa.array([b"a", b"\xff"], pa.binary()), "item": [1, 2]}), p)
    with pytest.raises(DataError, match=r"row 2, column 'user': user id b'\\xff' is not UTF-8"):
        read_parquet(p)
    q = tmp_path / "bool.parquet"
    pq.write_table(pa.table({"user": [1, 2, 3], "item": [1, 2, 3],
                             "rating": pa.array([True, False, None], pa.bool_())}), q)
    with pytest.raises(DataError, match="row 3, column 'rating': missing value"):
        read_parquet(q)


def test_what_reading_cannot_know_is_said_in_a_warning(tmp_path, caplog):
    from recforge.data.readers import read_many

    ms = write(tmp_path, "ms.csv", "user,item,timestamp\n1,2,1580457600000\n1,3,1580457601000\n")
    with caplog.at_level("WARNING"):
        read_csv(ms)
    assert "looks like milliseconds" in caplog.text
    caplog.clear()
    rated = write(tmp_path, "a.csv", "user,item,rating,timestamp\n1,2,4,10\n")
    plain = write(tmp_path, "b.csv", "user,item\n2,3\n")
    a, b = read_many([rated, plain])
    with caplog.at_level("WARNING"):
        both = a.concat(b)
    assert "count as 1.0" in caplog.text and "without timestamps" in caplog.text
    assert both.value.tolist() == [4.0, 1.0] and both.timestamp is None


def test_a_misspelt_rating_or_timestamp_column_is_warned_about(tmp_path, caplog):
    path = tmp_path / "events.csv"
    pd.DataFrame({"user": [1, 2], "item": [3, 4], "ratng": [4.0, 5.0], "note": ["a", "b"]}
                 ).to_csv(path, index=False)
    with caplog.at_level("WARNING"):
        data = Interactions.from_csv(path)
    assert data.value is None
    assert "'ratng' is not read; did you mean 'rating'" in caplog.text
    assert "note" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        Interactions.from_csv(path, columns={"rating": "ratng"})
    assert "not read" not in caplog.text


# ---------------------------------------------------------------------------------------
# a repeated column name is refused by every reader, naming the file and the column
@pytest.mark.parametrize("name, text, kwargs", [
    ("a.csv", "user,user,item\n1,2,3\n4,5,6\n", {}),                    # header guessed
    ("b.csv", "user,user,item\n1,2,3\n", {"header": True}),               # header given
    ("c.csv", '"user", user ,item\n1,2,3\n', {}),                          # quoted, spaced
    ("d.tsv", "user\titem\titem\n1\t2\t3\n", {}),                        # TSV
    ("e.dat", "user::item::item\n1::2::3\n", {}),                           # "::"
    ("f.txt", "user item item\n1 2 3\n", {"format": "csv"}),                # whitespace
    ("g.csv", "who,who,item\n1,2,3\n", {"columns": "user=who"}),           # the mapped one
    ("h.csv", "user,item,rating,rating\n1,2,3,4\n", {}),                   # an optional one
])
def test_a_repeated_column_name_is_refused_naming_file_and_column(tmp_path, name, text, kwargs):
    p = write(tmp_path, name, text)
    repeated = {"a": "user", "b": "user", "c": "user", "g": "who", "h": "rating"}.get(name[0],
                                                                                   "item")
    with pytest.raises(DataError, match=rf"{name}: column name '{repeated}' appears more "
                                        "than once"):
        read_interactions(p, **kwargs)
    with pytest.raises(DataError, match=rf"{name}: column name '{repeated}' appears more "
                                        "than once"):
        read_many([p, p], **kwargs)


def test_a_column_named_like_pandas_renamed_repeat_is_no_repeat(tmp_path):
    p = write(tmp_path, "r.csv", "user,user.1,item\n1,2,3\n4,5,6\n")
    assert read_csv(p).users.ids.tolist() == [1, 4]
    assert read_csv(p, columns="user=user.1").users.ids.tolist() == [2, 5]


def test_a_repeated_column_name_in_parquet_and_in_a_frame(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recforge.data.readers import interactions_from_frame, read_parquet

    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1, 2]), pa.array([3, 4]), pa.array([5, 6])],
                                        names=["user", "user", "item"]), p)
    for read in (read_parquet, read_interactions, lambda q: read_many([q])):
        with pytest.raises(DataError, match=r"d.parquet: column name 'user' appears more"):
            read(p)
    with pytest.raises(DataError, match="column name 'user' appears more than once"):
        interactions_from_frame(pd.DataFrame([[1, 2, 3]], columns=["user", "user", "item"]))


def test_columns_that_name_one_role_twice_or_two_roles_once_are_refused(tmp_path):
    p = write(tmp_path, "r.csv", "u,v,item\n1,2,3\n")
    with pytest.raises(DataError, match=r"names user twice \('u' and 'v'\)"):
        read_csv(p, columns="user=u,user=v")
    with pytest.raises(DataError, match=r"r.csv: column 'u' would be read as both the user "
                                        "and the item"):
        read_csv(p, columns="user=u,item=u")
    # two names that differ only in case both match the alias: neither is guessed
    q = write(tmp_path, "q.csv", "User,user,item\n1,2,3\n")
    with pytest.raises(DataError, match=r"q.csv: columns \['User', 'user'\] all name the "
                                        "user"):
        read_csv(q)
    assert read_csv(q, columns="user=User").users.ids.tolist() == [1]
    assert read_csv(q, columns="rating=User").users.ids.tolist() == [2]


# ---------------------------------------------------------------------------------------
# what tests/test_readers_fuzz.py found, each pinned by a test of its own
HUGE = "9" * 5000  # beyond Python's int-from-text limit (4,300 digits) and any float


def test_a_5000_digit_id_is_text_in_every_reader(tmp_path):
    for p, read in ((write(tmp_path, "a.csv", f"user,item\n{HUGE},1\n2,3\n"), read_csv),
                    (write(tmp_path, "b.txt", f"{HUGE} 1 2\n3 4\n"), read_adjacency)):
        data = read(p)
        assert sorted(data.users.ids.tolist()) == sorted([HUGE, "2" if p.suffix == ".csv"
                                                          else "3"])
        assert data.items.ids.dtype == np.int64


def test_minus_zero_is_not_the_id_zero(tmp_path):
    data = read_csv(write(tmp_path, "r.csv", "user,item\n-0,1\n0,1\n"))
    assert sorted(data.users.ids.tolist()) == ["-0", "0"] and len(data) == 2


@pytest.mark.parametrize("value, message", [
    (HUGE, r"timestamp '9{39}\.\.\. \(5,000 characters\) is out of range"),
    ("-" + HUGE, r"timestamp '-9{38}\.\.\. \(5,001 characters\) is out of range"),
    ("1e400", r"timestamp '1e400' is out of range"),
    ("NaT", r"'NaT' is not a timestamp"),
    ("now", r"'now' is not a timestamp"),
    ("today", r"'today' is not a timestamp"),
    ("99999999999999-01-01", r"'99999999999999-01-01' is not a timestamp"),
])
def test_timestamps_that_were_misread_are_refused(tmp_path, value, message):
    p = write(tmp_path, "t.csv", f"user,item,timestamp\n1,2,{value}\n1,3,5\n")
    with pytest.raises(DataError, match=rf"t.csv, line 2, column 'timestamp': {message}"):
        read_csv(p)


def test_whole_second_timestamps_are_read_exactly(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recforge.data.readers import read_parquet

    big = [1111111111111111111, 9223372036854775807, -9223372036854775808]
    text = "user,item,timestamp\n" + "".join(f"1,{k},{t}\n" for k, t in enumerate(big))
    assert read_csv(write(tmp_path, "t.csv", text)).timestamp.tolist() == big
    q = tmp_path / "t.parquet"
    pq.write_table(pa.table({"user": [1, 1, 1], "item": [0, 1, 2], "timestamp": big}), q)
    assert read_parquet(q).timestamp.tolist() == big
    with pytest.raises(DataError, match="timestamp '9223372036854775808' is out of range"):
        read_csv(write(tmp_path, "u.csv", "user,item,timestamp\n1,2,9223372036854775808\n"))


def test_a_line_wider_than_the_header_is_refused_not_cut(tmp_path):
    # pandas (index_col=False) drops the extra fields of such lines with a mere warning
    for text, line, want, saw in (("user,item\n1,2,3\n4,5,6\n", 2, 2, 3),
                                  ("\nuser,item,rating\n1,2,3,4\n", 3, 3, 4)):
        with pytest.raises(DataError, match=rf"w.csv, line {line}: expected {want} fields "
                                            rf"\(as the first line\), saw {saw}"):
            read_csv(write(tmp_path, "w.csv", text))
    # a trailing delimiter adds no field
    assert len(read_csv(write(tmp_path, "t.csv", "user,item\n1,2,\n"))) == 1


def test_parquet_ids_of_other_types_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recforge.data.readers import interactions_from_frame, read_parquet

    cases = {
        "struct": (pa.array([{"a": 1}, {"a": 2}]), r"row 1, column 'user': user id \{'a': 1\} "
                                                    "is a dict; ids must be integers or text"),
        "list": (pa.array([[1], [2, 3]]), r"row 1, column 'user': user id .* is a "
                                          "(list|ndarray)"),
        "bool": (pa.array([True, False]), r"column 'user': user ids must be integers or text, "
                                          "not bool values"),
        "time": (pa.array(np.array([1, 2], dtype="datetime64[s]")),
                 r"column 'user': user ids must be integers or text, not datetime64"),
    }
    for kind, (column, message) in cases.items():
        p = tmp_path / f"{kind}.parquet"
        pq.write_table(pa.table({"user": column, "item": [1, 2]}), p)
        for read in (read_parquet, lambda q: read_many([q])[0]):
            with pytest.raises(DataError, match=rf"{kind}.parquet, .*{message}|"
                                                rf"{kind}.parquet: .*{message}"):
                read(p)
    with pytest.raises(DataError, match=r"row 2, column 'item': item id \[1\] is a list"):
        interactions_from_frame(pd.DataFrame({"user": [1, 2], "item": ["a", [1]]}))


def test_binary_values_that_are_not_utf8_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recforge.data.readers import read_parquet

    for role in ("rating", "timestamp"):
        p = tmp_path / f"{role}.parquet"
        pq.write_table(pa.table({"user": [1, 2], "item": [1, 2],
                                 role: pa.array([b"5", b"\x80"], pa.binary())}), p)
        with pytest.raises(DataError, match=rf"row 2, column '{role}': .*b'\\x80' is not "
                                            "UTF-8 text"):
            read_parquet(p)
