"""Parsers of the files of the MovieLens releases: ratings, movies (titles, years,
genres), user profiles and tags, in the three layouts GroupLens used over the years.

Every parser validates what it reads and raises :class:`~recforge.errors.DataError` naming
the file, the line and the column at fault. The registry of releases, their download and
:func:`~recforge.data.movielens.load_movielens` are in :mod:`recforge.data.movielens`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from recforge.data.formats import header_names
from recforge.data.interactions import Interactions
from recforge.data.readers import read_csv
from recforge.errors import DataError

__all__ = ["Format", "parse_titles", "read_items", "read_ratings", "read_tags", "read_users"]

logger = logging.getLogger(__name__)

#: File layouts: ``"100k"`` (u.data / u.item / u.user, tab and pipe separated),
#: ``"dat"`` (``::``-separated ratings.dat / movies.dat / users.dat / tags.dat, 1M and 10M),
#: ``"csv"`` (ratings.csv / movies.csv / tags.csv with headers, 20M and later).
Format = Literal["100k", "dat", "csv"]


# ---------------------------------------------------------------------------------------
# parsing helpers
_NO_GENRES = frozenset({"", "(no genres listed)"})

# u.genre of ml-100k, used when that file is absent.
_GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                "Romance", "Sci-Fi", "Thriller", "War", "Western")

# Occupation codes of ml-1m users.dat (from its README).
_OCCUPATIONS_1M = np.array([
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
], dtype=object)

_YEAR = r"\d{4}(?:\s*[-\u2013]\s*(?:\d{4})?)?"  # 1995, 2006-2007, 2006–2007, 2015-
_TITLE_RE = (rf"^(?P<title>.*?)\s*\((?P<year>{_YEAR})\)"
             rf"(?P<suffix>(?:\s*\((?!{_YEAR}\))[^()]*\))*)\s*$")

_MOVIES_DAT = r"^(?P<item>\d+)::(?P<title>.*)::(?P<genres>[^:]*)$"
_USERS_DAT = (r"^(?P<user>\d+)::(?P<gender>[^:]*)::(?P<age>\d+)::(?P<occupation>\d+)"
              r"::(?P<zip>.*)$")
_TAGS_DAT = r"^(?P<user>\d+)::(?P<item>\d+)::(?P<tag>.*)::(?P<timestamp>\d+)$"


def parse_titles(titles: pd.Series) -> pd.DataFrame:
    """Split MovieLens titles into ``title`` and ``year`` (nullable ``Int64``), vectorised.

    ``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; trailing spaces are ignored; a year
    range ``(2006–2007)`` gives its first year; a suffix after the year is kept
    (``"Land Before Time III (1995) (V)"`` -> ``"Land Before Time III (V)"``); a title
    without a year (``"Babylon 5"``) keeps its text and gets ``<NA>``.
    """
    raw = titles.astype("string").fillna("")
    parts = raw.str.extract(_TITLE_RE)
    matched = parts["year"].notna()
    suffix = parts["suffix"].fillna("").str.strip()
    title = parts["title"].str.strip().where(suffix == "", parts["title"].str.strip()
                                             + " " + suffix)
    title = title.where(matched, raw.str.strip())
    year = pd.to_numeric(parts["year"].str[:4], errors="coerce").astype("Int64")
    return pd.DataFrame({"title": title.astype(object), "year": year}, index=titles.index)


def _split_genres(genres: pd.Series) -> list[list[str]]:
    """``"A|B"`` -> ``["A", "B"]``; ``"(no genres listed)"`` -> ``[]`` (one step per item)."""
    return [[] if g in _NO_GENRES else g.split("|")
            for g in genres.fillna("").astype(str).str.strip().tolist()]


def _read_text(path: Path) -> str:
    """The file's text: UTF-8 when it decodes, else Latin-1 (ml-100k, ml-1m)."""
    if not path.is_file():
        raise DataError("file not found", source=str(path))
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        logger.debug("%s is not UTF-8; reading it as Latin-1", path)
        return raw.decode("latin-1")


def _read_lines(path: Path) -> tuple[pd.Series, np.ndarray]:
    """Non-blank lines of a text file and their 1-based line numbers."""
    # split("\n"), not splitlines(): Latin-1 text may hold U+0085, which splitlines breaks on.
    lines = pd.Series(_read_text(path).split("\n"), dtype="string").str.rstrip("\r")
    numbers = np.arange(1, len(lines) + 1)
    keep = (lines.str.strip() != "").to_numpy(dtype=bool)
    return lines[keep].reset_index(drop=True), numbers[keep]


def _read_regex(path: Path, pattern: str, layout: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Parse every line with ``pattern`` (named groups become columns)."""
    lines, numbers = _read_lines(path)
    parts = lines.str.extract(pattern)
    bad = parts.iloc[:, 0].isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"malformed line {str(lines.iloc[i])[:80]!r}; expected {layout}",
                        source=str(path), line=int(numbers[i]))
    return parts, numbers


def _read_split(path: Path, sep: str, names: list[str],
                layout: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Split every line on ``sep`` into the columns ``names`` (one field each, exactly)."""
    lines, numbers = _read_lines(path)
    counts = lines.str.count(re.escape(sep)).to_numpy() + 1
    bad = counts != len(names)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"expected {len(names)} fields separated by {sep!r}, saw {counts[i]} "
                        f"({layout})", source=str(path), line=int(numbers[i]))
    if not len(lines):  # a blank file: no rows (split(expand=True) would give no columns)
        return pd.DataFrame({name: pd.Series([], dtype="string") for name in names}), numbers
    frame = lines.str.split(sep, regex=False, expand=True)
    frame.columns = names
    return frame, numbers


def _read_header_csv(path: Path, columns: dict[str, str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a CSV with a header, as strings ("NA" stays a string); rename ``columns``."""
    src = str(path)
    if not path.is_file():
        raise DataError("file not found", source=src)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.ParserError as exc:
        raise DataError(f"cannot parse: {exc}", source=src) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 text ({exc.reason} at byte {exc.start})",
                        source=src) from None
    # the names as written (pandas renames a repeated `title` to `title.1`)
    frame.columns = header_names(path, ",", "utf-8", 0, frame.columns)
    twice = [c for c in columns if list(frame.columns).count(c) > 1]
    if twice:
        raise DataError(f"column {twice[0]!r} appears more than once in the header",
                        source=src, line=1, column=twice[0])
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"missing columns {missing}; columns present: {list(frame.columns)}",
                        source=src, line=1)
    frame = frame[list(columns)].rename(columns=columns)
    return frame, np.arange(len(frame)) + 2


def _ints(series: pd.Series, path: Path, column: str, numbers: np.ndarray) -> np.ndarray:
    """A column of integers (int64); a non-integer raises naming file, line and column."""
    num = pd.to_numeric(series.astype("string").str.strip(), errors="coerce")
    arr = num.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{str(series.iloc[i])!r} is not an integer", source=str(path),
                        line=int(numbers[i]), column=column)
    return arr.astype(np.int64)


def _items_frame(item: np.ndarray, titles: pd.Series, genres: list[list[str]]) -> pd.DataFrame:
    parsed = parse_titles(titles.reset_index(drop=True))
    frame = pd.DataFrame({"title": parsed["title"].to_numpy(dtype=object),
                          "year": parsed["year"].array,
                          "genres": pd.Series(genres, dtype=object).to_numpy()},
                         index=pd.Index(item, name="item"))
    return frame


# ---------------------------------------------------------------------------------------
# readers per file
_RATING_COLUMNS = ["user", "item", "rating", "timestamp"]


def read_ratings(path: Path, format: Format) -> Interactions:
    """The ratings file of a release in ``format``, with values and timestamps."""
    # MovieLens has one rating per (user, movie); "last" keeps the latest should a copy
    # hold re-ratings, rather than refusing to load it.
    if format == "csv":
        return read_csv(path, sep=",", header=True, encoding="utf-8", duplicates="last")
    sep = "\t" if format == "100k" else "::"
    return read_csv(path, sep=sep, header=False, names=_RATING_COLUMNS, encoding="latin-1",
                    duplicates="last")


def _read_genre_names(folder: Path) -> list[str]:
    path = folder / "u.genre"
    if not path.is_file():
        logger.debug("%s not found; using the standard 19 genre names", path)
        return list(_GENRES_100K)
    frame, numbers = _read_split(path, "|", ["name", "index"], "name|index")
    index = _ints(frame["index"], path, "index", numbers)
    return frame["name"].to_numpy(dtype=object)[np.argsort(index, kind="stable")].tolist()


def _read_items_100k(folder: Path) -> pd.DataFrame:
    path = folder / "u.item"
    names = _read_genre_names(folder)
    fixed = ["item", "title", "release_date", "video_release_date", "url"]
    frame, numbers = _read_split(path, "|", fixed + [f"g{k}" for k in range(len(names))],
                                 "item|title|release date|video release date|IMDb URL|"
                                 f"{len(names)} genre flags")
    item = _ints(frame["item"], path, "item", numbers)
    flags = frame.iloc[:, len(fixed):]
    valid = flags.isin(["0", "1"]).to_numpy()
    if not valid.all():
        r, c = np.argwhere(~valid)[0]
        raise DataError(f"genre flag {flags.iat[r, c]!r} is not 0 or 1", source=str(path),
                        line=int(numbers[r]), column=names[c])
    rows, cols = np.nonzero(flags.to_numpy() == "1")
    per_item = np.split(np.asarray(names, dtype=object)[cols],
                        np.cumsum(np.bincount(rows, minlength=len(frame)))[:-1])
    return _items_frame(item, frame["title"], [list(g) for g in per_item])


def read_items(folder: Path, format: Format) -> pd.DataFrame:
    """The movies of a release in ``format``: ``title``, ``year``, ``genres`` by movie id."""
    if format == "100k":
        return _read_items_100k(folder)
    if format == "dat":
        path = folder / "movies.dat"
        frame, numbers = _read_regex(path, _MOVIES_DAT, "MovieID::Title::Genres")
    else:
        path = folder / "movies.csv"
        frame, numbers = _read_header_csv(path, {"movieId": "item", "title": "title",
                                                 "genres": "genres"})
    item = _ints(frame["item"], path, "movieId", numbers)
    return _items_frame(item, frame["title"], _split_genres(frame["genres"]))


def read_users(folder: Path, format: Format) -> pd.DataFrame:
    """The user profiles of ml-100k (``"100k"``) or ml-1m (``"dat"``): ``age``, ``gender``,
    ``occupation``, ``zip`` by user id."""
    if format == "100k":
        path = folder / "u.user"
        frame, numbers = _read_split(path, "|", ["user", "age", "gender", "occupation", "zip"],
                                     "user id|age|gender|occupation|zip code")
        occupation = frame["occupation"].to_numpy(dtype=object)
    else:
        path = folder / "users.dat"
        frame, numbers = _read_regex(path, _USERS_DAT,
                                     "UserID::Gender::Age::Occupation::Zip-code")
        code = _ints(frame["occupation"], path, "occupation", numbers)
        bad = (code < 0) | (code >= len(_OCCUPATIONS_1M))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"unknown occupation code {int(code[i])} (expected 0-20)",
                            source=str(path), line=int(numbers[i]), column="occupation")
        occupation = _OCCUPATIONS_1M[code]
    user = _ints(frame["user"], path, "user", numbers)
    return pd.DataFrame({"age": _ints(frame["age"], path, "age", numbers),
                         "gender": frame["gender"].to_numpy(dtype=object),
                         "occupation": occupation,
                         "zip": frame["zip"].str.strip().to_numpy(dtype=object)},
                        index=pd.Index(user, name="user"))


def read_tags(folder: Path, format: Format) -> pd.DataFrame | None:
    """The tags of a release in ``format`` (``user, item, tag, timestamp``), ``None`` when
    its tags file is missing."""
    path = folder / ("tags.dat" if format == "dat" else "tags.csv")
    if not path.is_file():
        logger.warning("%s not found; loading without tags", path)
        return None
    if format == "dat":
        frame, numbers = _read_regex(path, _TAGS_DAT, "UserID::MovieID::Tag::Timestamp")
    else:
        frame, numbers = _read_header_csv(path, {"userId": "user", "movieId": "item",
                                                 "tag": "tag", "timestamp": "timestamp"})
    return pd.DataFrame({"user": _ints(frame["user"], path, "user", numbers),
                         "item": _ints(frame["item"], path, "item", numbers),
                         "tag": frame["tag"].to_numpy(dtype=object),
                         "timestamp": _ints(frame["timestamp"], path, "timestamp", numbers)})
