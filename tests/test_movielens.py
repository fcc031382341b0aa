"""MovieLens registry, discovery and parsing.

The real-data tests read ml-100k and ml-latest-small from ../shared/data (skipped when
absent); the ``::`` formats (1M, 10M) and ml-32m's checksums.txt are exercised on small
files written here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from recforge import Interactions
from recforge.data.movielens import (
    DATASETS,
    MovieLensData,
    find_local,
    get_spec,
    list_datasets,
    load_movielens,
    verify_files,
)
from recforge.data.movielens_files import parse_titles
from recforge.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's data dir or cache."""
    monkeypatch.delenv("RECFORGE_DATA_DIR", raising=False)
    monkeypatch.setenv("RECFORGE_CACHE_DIR", str(tmp_path / "cache"))


def _base() -> Path:
    """The shared directory holding ml-100k/ and ml-latest-small/ (or skip)."""
    return shared_path("ml-100k", "u.data").parents[1]


@pytest.fixture(scope="module")
def ml100k() -> MovieLensData:
    base = shared_path("ml-100k", "u.data").parents[1]
    return load_movielens("ml-100k", data_dir=base, download=False)


@pytest.fixture(scope="module")
def latest_small() -> MovieLensData:
    base = shared_path("ml-latest-small", "ratings.csv").parents[1]
    return load_movielens("ml-latest-small", data_dir=base, download=False)


# ---------------------------------------------------------------------------------------
# registry
def test_registry_lists_every_variant():
    names = [s.name for s in list_datasets()]
    assert names == ["ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m",
                     "ml-latest-small"]
    for spec in list_datasets():
        assert spec.url == f"https://files.grouplens.org/datasets/movielens/{spec.name}.zip"
        assert spec.n_ratings > 0 and spec.n_users > 0 and spec.n_items > 0
        assert spec.description
    assert get_spec("ml-10m").folder == "ml-10M100K"
    assert get_spec("ml-100k").md5 == "0e33842e24a9c977be4e0107933c0723"
    assert get_spec("ml-25m").md5 == "6b51fb2759a8657d3bfcbfc42b592ada"
    # ml-32m: GroupLens' ml-32m.zip.md5; latest-small's files are pinned by sha256 instead
    assert get_spec("ml-32m").md5 == "d472be332d4daa821edc399621853b57"
    assert get_spec("ml-latest-small").md5 is None
    assert set(get_spec("ml-latest-small").file_sha256) == {"ratings.csv", "movies.csv",
                                                            "tags.csv"}
    assert [s.has_user_features for s in list_datasets()].count(True) == 2  # 100k, 1m


def test_registry_is_read_only():
    spec = get_spec("ml-100k")
    with pytest.raises(TypeError):
        spec.file_sha256["u.data"] = "0" * 64  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.md5 = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        DATASETS["x"] = spec  # type: ignore[index]
    changed = dataclasses.replace(spec, md5="abc", file_sha256={})
    assert changed.md5 == "abc" and get_spec("ml-100k").md5 == "0e33842e24a9c977be4e0107933c0723"


@pytest.mark.parametrize("alias, name", [
    ("ml-100k", "ml-100k"), ("100k", "ml-100k"), ("ml100k", "ml-100k"), ("ML-100K", "ml-100k"),
    ("movielens-100k", "ml-100k"), ("ml_1m", "ml-1m"), ("1m", "ml-1m"),
    ("ml-10M100K", "ml-10m"), ("latest-small", "ml-latest-small"),
    ("ml-latest-small", "ml-latest-small"), ("32m", "ml-32m"),
])
def test_aliases(alias, name):
    assert get_spec(alias).name == name


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown MovieLens dataset 'ml-100'.*did you mean "
                                          r"'ml-100k'\?"):
        get_spec("ml-100")
    with pytest.raises(ConfigError, match="did you mean 'ml-latest-small'"):
        get_spec("ml-lastest-small")
    with pytest.raises(ConfigError, match="Known: ml-100k, ml-1m"):
        get_spec("netflix")


# ---------------------------------------------------------------------------------------
# real files
def test_ml100k_counts(ml100k):
    inter = ml100k.interactions
    assert isinstance(inter, Interactions)
    assert len(inter) == 100_000
    assert inter.n_users == 943 and inter.n_items == 1_682
    assert inter.has_values and inter.has_timestamps
    assert set(np.unique(inter.value)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert inter.users.ids.dtype == np.int64 and inter.items.ids.dtype == np.int64
    assert len(ml100k.items) == 1_682 and len(ml100k.users) == 943
    assert ml100k.tags is None
    assert ml100k.name == "ml-100k" and ml100k.path.name == "ml-100k"


def test_ml100k_first_rating_as_in_the_file(ml100k):
    frame = ml100k.interactions.to_frame()
    row = frame[(frame.user == 196) & (frame.item == 242)]
    assert row.rating.tolist() == [3.0] and row.timestamp.tolist() == [881250949]


def test_ml100k_items(ml100k):
    items = ml100k.items
    assert items.index.name == "item" and items.index.dtype == np.int64
    assert list(items.columns) == ["title", "year", "genres"]
    assert str(items["year"].dtype) == "Int64"
    toy = items.loc[1]
    assert toy.title == "Toy Story" and toy.year == 1995
    assert toy.genres == ["Animation", "Children's", "Comedy"]
    assert items.loc[543, "title"] == "Misérables, Les"  # Latin-1 decoded
    assert items.loc[267, "title"] == "unknown" and pd.isna(items.loc[267, "year"])
    # "Heidi Fleiss: Hollywood Madam (1995) " has a trailing space in u.item
    assert (items["title"] == "Heidi Fleiss: Hollywood Madam").sum() == 1
    assert items["genres"].map(len).min() >= 1


def test_ml100k_users(ml100k):
    users = ml100k.users
    assert users.index.name == "user"
    assert list(users.columns) == ["age", "gender", "occupation", "zip"]
    first = users.loc[1]
    assert (first.age, first.gender, first.occupation, first.zip) == (24, "M", "technician",
                                                                      "85711")
    assert set(users["gender"]) == {"M", "F"}


def test_latest_small_counts(latest_small):
    inter = latest_small.interactions
    assert len(inter) == 100_836
    assert inter.n_users == 610 and inter.n_items == 9_724
    assert len(latest_small.items) == 9_742
    assert set(np.unique(inter.value)) == {0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0}
    assert latest_small.users is None


def test_latest_small_items_and_tags(latest_small):
    items = latest_small.items
    toy = items.loc[1]
    assert toy.title == "Toy Story" and toy.year == 1995
    assert toy.genres == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert items.loc[40697, "title"] == "Babylon 5" and pd.isna(items.loc[40697, "year"])
    assert items.loc[171749, "year"] == 2006  # "Death Note: Desu nôto (2006–2007)"
    assert items.loc[143410, "genres"] == []  # "(no genres listed)"
    assert items["year"].isna().sum() == 12  # 13 titles lack "(YYYY)", one has a range
    tags = latest_small.tags
    assert list(tags.columns) == ["user", "item", "tag", "timestamp"]
    assert len(tags) == 3_683
    assert tags.iloc[0].tolist() == [2, 60756, "funny", 1445714994]
    assert tags["user"].dtype == np.int64 and tags["timestamp"].dtype == np.int64


def test_real_files_match_their_known_checksums():
    verify_files("ml-100k", _base() / "ml-100k")
    verify_files("ml-latest-small", shared_path("ml-latest-small", "ratings.csv").parent)


# ---------------------------------------------------------------------------------------
# discovery
def test_find_local_in_data_dir_and_folder_itself():
    base = _base()
    assert find_local("ml-100k", base) == base / "ml-100k"
    assert find_local("100k", base / "ml-100k") == base / "ml-100k"
    assert find_local("ml-1m", base) is None


def test_recforge_data_dir_is_searched(monkeypatch, tmp_path):
    base = _base()
    assert find_local("ml-100k") is None
    monkeypatch.setenv("RECFORGE_DATA_DIR", str(base))
    assert find_local("ml-100k") == base / "ml-100k"
    data = load_movielens("ml-100k", download=False)
    assert len(data.interactions) == 100_000 and data.path == base / "ml-100k"
    # several directories, separated like PATH
    monkeypatch.setenv("RECFORGE_DATA_DIR", f"{tmp_path}:{base / 'ml-latest-small'}")
    assert find_local("ml-latest-small") == base / "ml-latest-small"


def test_another_variants_folder_is_not_taken(monkeypatch):
    small = shared_path("ml-latest-small", "ratings.csv").parent
    monkeypatch.setenv("RECFORGE_DATA_DIR", str(small))
    assert find_local("ml-latest-small") == small
    assert find_local("ml-25m") is None  # also a ratings.csv, but not this variant


def test_data_dir_argument_comes_before_the_environment(monkeypatch, tmp_path):
    base = _base()
    copy = tmp_path / "mine" / "ml-100k"
    copy.mkdir(parents=True)
    (copy / "u.data").write_text("1\t1\t5\t1\n")
    monkeypatch.setenv("RECFORGE_DATA_DIR", str(base))
    assert find_local("ml-100k", tmp_path / "mine") == copy
    assert find_local("ml-100k") == base / "ml-100k"


def test_not_found_without_download(tmp_path):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_movielens("ml-1m", data_dir=nowhere, download=False)
    msg = str(info.value)
    assert "'ml-1m' not found" in msg
    assert str(nowhere) in msg and str(tmp_path / "cache" / "movielens") in msg
    assert "RECFORGE_DATA_DIR" in msg and "data_dir=" in msg and "download=True" in msg
    assert "ml-1m/ratings.dat" in msg


def test_unknown_name_in_load():
    with pytest.raises(ConfigError, match="did you mean"):
        load_movielens("ml-10k", download=False)


# ---------------------------------------------------------------------------------------
# titles
def test_parse_titles():
    titles = pd.Series(["Toy Story (1995)", "Babylon 5", "Two Friends (1986) ",
                        "Land Before Time III (1995) (V)", "Death Note (2006–2007)",
                        "Assembly (Ji jie hao) (2007)", "Fawlty Towers (1975-1979)",
                        "1941 (1979)", "  Spaced  "], index=range(10, 19))
    out = parse_titles(titles)
    assert out.index.tolist() == list(range(10, 19))
    assert out["title"].tolist() == ["Toy Story", "Babylon 5", "Two Friends",
                                     "Land Before Time III (V)", "Death Note",
                                     "Assembly (Ji jie hao)", "Fawlty Towers", "1941",
                                     "Spaced"]
    assert out["year"].tolist() == [1995, pd.NA, 1986, 1995, 2006, 2007, 1975, 1979, pd.NA]
    assert str(out["year"].dtype) == "Int64"


# ---------------------------------------------------------------------------------------
# the "::" formats and checksums.txt, on small files written here
def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def fake_1m(tmp_path) -> Path:
    folder = tmp_path / "ml-1m"
    _write(folder / "ratings.dat", "1::10::5::978300760\n1::20::3::978302109\n"
                                   "2::10::4::978301968\n")
    _write(folder / "movies.dat", "10::Café Society (1995)::Comedy|Drama\n"
                                  "20::Star Wars: Episode IV (1977)::Action|Sci-Fi\n"
                                  "30::Nothing::(no genres listed)\n", "latin-1")
    _write(folder / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return folder


def test_dat_format(fake_1m):
    data = load_movielens("ml-1m", data_dir=fake_1m.parent, download=False)
    assert len(data.interactions) == 3 and data.interactions.n_items == 2
    assert data.interactions.to_frame().iloc[0].tolist() == [1, 10, 5.0, 978300760]
    items = data.items
    assert items.loc[10].tolist() == ["Café Society", 1995, ["Comedy", "Drama"]]
    assert items.loc[20, "title"] == "Star Wars: Episode IV"
    assert items.loc[30, "genres"] == [] and pd.isna(items.loc[30, "year"])
    users = data.users
    assert users.loc[1].tolist() == [1, "F", "K-12 student", "48067"]
    assert users.loc[2].tolist() == [56, "M", "self-employed", "70072"]
    assert data.tags is None


def test_dat_tags(tmp_path):
    folder = tmp_path / "ml-10M100K"
    _write(folder / "ratings.dat", "15::4973::4.5::1215184630\n")
    _write(folder / "movies.dat", "4973::Amelie (Fabuleux destin d'Amélie Poulain, Le) "
                                  "(2001)::Comedy|Romance\n")
    _write(folder / "tags.dat", "15::4973::excellent!::1215184630\n"
                                "20::4973::odd::tag::1188263867\n")
    data = load_movielens("ml-10m", data_dir=tmp_path, download=False)
    assert data.interactions.value.tolist() == [4.5]
    assert data.items.loc[4973, "title"] == "Amelie (Fabuleux destin d'Amélie Poulain, Le)"
    assert data.tags.to_dict("list") == {"user": [15, 20], "item": [4973, 4973],
                                         "tag": ["excellent!", "odd::tag"],
                                         "timestamp": [1215184630, 1188263867]}
    assert data.users is None


def test_malformed_lines_name_file_and_line(fake_1m):
    _write(fake_1m / "movies.dat", "10::Heat (1995)::Action\nnot a movie line\n")
    with pytest.raises(DataError, match=r"movies\.dat, line 2: malformed line"):
        load_movielens("ml-1m", data_dir=fake_1m, download=False)
    _write(fake_1m / "ratings.dat", "1::10::5::978300760\n1::20::five::978302109\n")
    with pytest.raises(DataError, match=r"ratings\.dat, line 2, column 'rating'"):
        load_movielens("ml-1m", data_dir=fake_1m, download=False)


def test_bad_genre_flag_names_line(tmp_path):
    folder = tmp_path / "ml-100k"
    flags = "|".join(["0"] * 18)
    _write(folder / "u.data", "1\t1\t5\t100\n")
    _write(folder / "u.item", f"1|A (1990)|||u|1|{flags}\n2|B (1991)|||u|x|{flags}\n")
    _write(folder / "u.user", "1|30|F|writer|12345\n")
    with pytest.raises(DataError, match=r"u\.item, line 2, column 'unknown': genre flag 'x'"):
        load_movielens("ml-100k", data_dir=tmp_path, download=False)
    _write(folder / "u.item", f"1|A (1990)|||u|1|{flags}\n2|B (1991)|||u|0\n")
    with pytest.raises(DataError, match=r"u\.item, line 2: expected 24 fields"):
        load_movielens("ml-100k", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("layout", ["md5sum", "bsd"])
def test_checksums_txt_is_verified(tmp_path, layout):
    folder = tmp_path / "ml-32m"
    files = {"ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.0,1\n",
             "movies.csv": "movieId,title,genres\n1,Toy Story (1995),Comedy\n"}
    lines = []
    for name, text in files.items():
        _write(folder / name, text)
        md5 = hashlib.md5(text.encode()).hexdigest()
        lines.append(f"{md5}  {name}" if layout == "md5sum" else f"MD5 ({name}) = {md5}")
    _write(folder / "checksums.txt", "\n".join(lines) + "\n")
    verify_files("ml-32m", folder)
    _write(folder / "movies.csv", "movieId,title,genres\n1,Toy Story (1996),Comedy\n")
    with pytest.raises(DataError, match=r"movies\.csv: md5 mismatch: expected [0-9a-f]{32}, "
                                        r"got [0-9a-f]{32}"):
        verify_files("ml-32m", folder)


def test_known_sha256_is_verified(tmp_path):
    folder = tmp_path / "ml-100k"
    _write(folder / "u.data", "1\t1\t5\t100\n")
    with pytest.raises(DataError, match=r"u\.data: sha256 mismatch"):
        verify_files("ml-100k", folder)
    spec = dataclasses.replace(get_spec("ml-100k"), file_sha256={
        "u.data": hashlib.sha256(b"1\t1\t5\t100\n").hexdigest()})
    verify_files(spec, folder)


def test_a_repeated_column_in_a_movielens_csv_is_refused(tmp_path):
    folder = tmp_path / "ml-latest-small"
    _write(folder / "ratings.csv", "userId,movieId,rating,timestamp,rating\n1,10,4,5,1\n")
    _write(folder / "movies.csv", "movieId,title,genres\n10,A (1995),Drama\n")
    with pytest.raises(DataError, match=r"ratings.csv: column name 'rating' appears more "
                                        "than once"):
        load_movielens("ml-latest-small", data_dir=tmp_path, download=False)
    _write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4,5\n")
    _write(folder / "movies.csv", "movieId,title,title,genres\n10,A (1995),B (1996),Drama\n")
    with pytest.raises(DataError, match=r"movies.csv, line 1, column 'title': column 'title' "
                                        "appears more than once"):
        load_movielens("ml-latest-small", data_dir=tmp_path, download=False)
