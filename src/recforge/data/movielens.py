"""The MovieLens data sets: a registry of variants, download into a cache, offline use, parsing.

Example::

    data = load_movielens("ml-100k")   # finds a local copy, or downloads it once
    data.interactions                  # ratings 1-5 with timestamps, ids as in the files
    data.items.loc[1]                  # title "Toy Story", year 1995, genres

Where the files come from, in order (:func:`find_local`):

1. the ``data_dir`` argument,
2. the ``RECFORGE_DATA_DIR`` environment variable (several directories may be given,
   separated by ``os.pathsep``),
3. the download cache, ``<cache_dir()>/movielens`` (see :func:`recforge.data.download.cache_dir`).

Each may hold the extracted folder (``<dir>/ml-100k/u.data``) or be that folder itself
(``<dir>/u.data``). When none holds the data, :func:`load_movielens` downloads the zip from
GroupLens into the cache, checks it and extracts it (unless ``download=False``).

MovieLens data (c) GroupLens Research, University of Minnesota, is for research use and may
not be redistributed: recforge never ships it, it only fetches it from GroupLens.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import pandas as pd

from recforge.data.download import MAX_EXTRACT_BYTES, cache_dir, extract_zip, fetch, file_digest
from recforge.data.formats import header_names
from recforge.data.interactions import Interactions
from recforge.data.readers import read_csv
from recforge.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "Download",
    "MovieLensData",
    "MovieLensSpec",
    "Verification",
    "download_movielens",
    "fetch_movielens",
    "find_local",
    "get_spec",
    "list_datasets",
    "load_movielens",
    "movielens_cache_dir",
    "parse_titles",
    "verify_files",
]

logger = logging.getLogger(__name__)

#: File layouts: ``"100k"`` (u.data / u.item / u.user, tab and pipe separated),
#: ``"dat"`` (``::``-separated ratings.dat / movies.dat / users.dat / tags.dat, 1M and 10M),
#: ``"csv"`` (ratings.csv / movies.csv / tags.csv with headers, 20M and later).
Format = Literal["100k", "dat", "csv"]


@dataclass(frozen=True)
class MovieLensSpec:
    """One MovieLens variant: where to get it, how to check it, how to read it.

    ``n_ratings`` is the number of lines of the ratings file; ``n_users`` and ``n_items``
    count the users and movies that appear in it (what :class:`Interactions` will hold).
    The movie file may list more movies than were rated (e.g. 9,742 vs 9,724 in
    ml-latest-small).
    """

    name: str
    url: str
    md5: str | None  #: MD5 of the zip, or ``None`` when none is pinned
    folder: str  #: the folder the zip extracts to
    ratings_file: str
    format: Format
    n_ratings: int
    n_users: int
    n_items: int
    description: str
    has_tags: bool
    has_user_features: bool
    #: SHA-256 of files inside ``folder`` (relative paths) that are checked after extraction.
    file_sha256: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: Ceiling on the unpacked size of the zip (bytes): extraction stops beyond it.
    max_extracted_bytes: int = MAX_EXTRACT_BYTES
    #: Whether the release ships a ``checksums.txt`` (md5 per file; checked when present).
    ships_checksums: bool = False

    def __post_init__(self) -> None:
        # Read-only, so that the registry's values cannot be changed by accident.
        object.__setattr__(self, "file_sha256", MappingProxyType(dict(self.file_sha256)))

    @property
    def checks(self) -> str:
        """What a download of this variant is checked against, in words."""
        return Verification(archive_md5=self.md5, pinned_sha256=tuple(self.file_sha256),
                            own_checksums=("checksums.txt",) if self.ships_checksums else ()
                            ).describe(planned=True)


@dataclass(frozen=True)
class Verification:
    """What one download was checked against (:func:`fetch_movielens`).

    ``archive_md5``: the MD5 pinned in the registry that the zip matched (``None``: none is
    pinned). ``pinned_sha256``: files that matched a SHA-256 pinned in the registry.
    ``own_checksums``: files that matched the archive's own ``checksums.txt``; that list
    comes in the same download, so it detects a damaged transfer, not a changed or doctored
    release.
    """

    archive_md5: str | None = None
    pinned_sha256: tuple[str, ...] = ()
    own_checksums: tuple[str, ...] = ()

    @property
    def pinned(self) -> bool:
        """Whether anything was checked against a checksum recforge pins."""
        return self.archive_md5 is not None or bool(self.pinned_sha256)

    def describe(self, planned: bool = False) -> str:
        """In words: ``planned`` describes what a download of a spec will check."""
        parts = []
        if self.archive_md5:
            parts.append("pinned md5 of the zip")
        if self.pinned_sha256:
            parts.append(f"pinned sha256 of {', '.join(self.pinned_sha256)}")
        if self.own_checksums:
            what = ("md5 of the files the archive's own checksums.txt lists" if planned else
                    f"md5 of {len(self.own_checksums)} files against the archive's own "
                    "checksums.txt")
            parts.append(what + " (it comes with the download: it detects a damaged "
                         "transfer, not a changed release)")
        if not parts:
            return ("nothing: no checksum is pinned for this release and the archive "
                    "carries none")
        return "; ".join(parts)


_BASE_URL = "https://files.grouplens.org/datasets/movielens/"

# Checksums:
# * md5 of the zips: published by GroupLens beside each archive (<name>.zip.md5 on
#   files.grouplens.org). ml-32m's (d472be33...) is the value of ml-32m.zip.md5 as quoted
#   by several independent public projects (a zip of 238,950,008 bytes); it could not be
#   fetched from GroupLens here. No md5 is pinned for ml-latest-small (a "latest" release).
# * file_sha256: computed with sha256sum from the local copies of the extracted files used
#   by the test suite (../shared/data), for the variants whose zip md5 is not pinned
#   (ml-latest-small) or where a second check of the parsed files is cheap (ml-100k).
# * ml-32m ships checksums.txt (md5 per file) inside its folder; verify_files checks it.
# * max_extracted_bytes: about 3-4 times each release's unpacked size (estimated from its
#   line counts), so that a doctored or damaged zip cannot fill the disk.
# Counts: n_ratings from the READMEs; n_users / n_items are users and movies present in the
# ratings file (ml-100k and ml-latest-small checked by the tests on the real files; the
# others as commonly reported for these releases).
_SPECS = [
    MovieLensSpec(
        name="ml-100k", url=_BASE_URL + "ml-100k.zip",
        md5="0e33842e24a9c977be4e0107933c0723", folder="ml-100k", ratings_file="u.data",
        format="100k", n_ratings=100_000, n_users=943, n_items=1_682,
        description="MovieLens 100K (1998): 100,000 ratings (1-5 stars) from 943 users on "
                    "1,682 movies; user age, gender, occupation and zip code; 19 genres.",
        has_tags=False, has_user_features=True, max_extracted_bytes=64 << 20,
        file_sha256={
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
            "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
        }),
    MovieLensSpec(
        name="ml-1m", url=_BASE_URL + "ml-1m.zip",
        md5="c4d9eecfca2ab87c1945afe126590906", folder="ml-1m", ratings_file="ratings.dat",
        format="dat", n_ratings=1_000_209, n_users=6_040, n_items=3_706,
        description="MovieLens 1M (2003): 1,000,209 ratings (1-5 stars) from 6,040 users on "
                    "3,706 of 3,883 movies; user age group, gender, occupation, zip code.",
        has_tags=False, has_user_features=True, max_extracted_bytes=128 << 20),
    MovieLensSpec(
        name="ml-10m", url=_BASE_URL + "ml-10m.zip",
        md5="ce571fd55effeba0271552578f2648bd", folder="ml-10M100K",
        ratings_file="ratings.dat", format="dat", n_ratings=10_000_054, n_users=69_878,
        n_items=10_677,
        description="MovieLens 10M (2009): 10,000,054 ratings (0.5-5 stars) and 95,580 tags "
                    "on 10,681 movies by 71,567 users (69,878 of whom rated).",
        has_tags=True, has_user_features=False, max_extracted_bytes=1 << 30),
    MovieLensSpec(
        name="ml-20m", url=_BASE_URL + "ml-20m.zip",
        md5="cd245b17a1ae2cc31bb14903e1204af3", folder="ml-20m", ratings_file="ratings.csv",
        format="csv", n_ratings=20_000_263, n_users=138_493, n_items=26_744,
        description="MovieLens 20M (2015): 20,000,263 ratings (0.5-5 stars) and 465,564 tags "
                    "on 27,278 movies by 138,493 users; tag genome.",
        has_tags=True, has_user_features=False, max_extracted_bytes=3 << 30),
    MovieLensSpec(
        name="ml-25m", url=_BASE_URL + "ml-25m.zip",
        md5="6b51fb2759a8657d3bfcbfc42b592ada", folder="ml-25m", ratings_file="ratings.csv",
        format="csv", n_ratings=25_000_095, n_users=162_541, n_items=59_047,
        description="MovieLens 25M (2019): 25,000,095 ratings (0.5-5 stars) and 1,093,360 "
                    "tags on 62,423 movies by 162,541 users; tag genome.",
        has_tags=True, has_user_features=False, max_extracted_bytes=4 << 30),
    MovieLensSpec(
        name="ml-32m", url=_BASE_URL + "ml-32m.zip",
        md5="d472be332d4daa821edc399621853b57", folder="ml-32m",
        ratings_file="ratings.csv", format="csv", n_ratings=32_000_204, n_users=200_948,
        n_items=84_432,
        description="MovieLens 32M (2023): 32,000,204 ratings (0.5-5 stars) and 2,000,072 "
                    "tags on 87,585 movies by 200,948 users.",
        has_tags=True, has_user_features=False, max_extracted_bytes=4 << 30,
        ships_checksums=True),
    MovieLensSpec(
        name="ml-latest-small", url=_BASE_URL + "ml-latest-small.zip", md5=None,
        folder="ml-latest-small", ratings_file="ratings.csv", format="csv",
        n_ratings=100_836, n_users=610, n_items=9_724,
        description="MovieLens latest-small (2018): 100,836 ratings (0.5-5 stars) and 3,683 "
                    "tags on 9,742 movies (9,724 rated) by 610 users; for development.",
        has_tags=True, has_user_features=False, max_extracted_bytes=64 << 20,
        file_sha256={
            "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
            "movies.csv": "0b51fea714421d61045d49a335db61ffd732a49a6569bd83738ab700edc3b9db",
            "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
        }),
]

#: The registry: name -> spec, in order of size (read-only).
DATASETS: Mapping[str, MovieLensSpec] = MappingProxyType({s.name: s for s in _SPECS})


def _key(name: str) -> str:
    """Normalised form used to match aliases: ``"ML_100K"``, ``"100k"`` -> ``"100k"``."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for prefix in ("movielens", "ml"):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


_ALIASES: dict[str, str] = {}
for _spec in _SPECS:
    _ALIASES[_key(_spec.name)] = _spec.name
    _ALIASES[_key(_spec.folder)] = _spec.name  # "ml-10M100K" -> ml-10m
_ALIASES["small"] = "ml-latest-small"


# ---------------------------------------------------------------------------------------
# registry
def list_datasets() -> list[MovieLensSpec]:
    """Every registered MovieLens variant, smallest first."""
    return list(DATASETS.values())


def get_spec(name: str) -> MovieLensSpec:
    """The spec of a variant, by name or alias (``"ml-100k"``, ``"100k"``, ``"ml100k"``,
    ``"latest-small"``, ``"ml-10M100K"``...).

    Raises
    ------
    ConfigError
        For an unknown name, suggesting the closest known one.
    """
    if not isinstance(name, str):
        raise ConfigError(f"a MovieLens dataset name must be a string, not {type(name).__name__}")
    if name in DATASETS:
        return DATASETS[name]
    canonical = _ALIASES.get(_key(name))
    if canonical is not None:
        return DATASETS[canonical]
    hint = get_close_matches(name.strip().lower(), list(DATASETS), n=1, cutoff=0.6)
    if not hint:
        close = get_close_matches(_key(name), list(_ALIASES), n=1, cutoff=0.5)
        hint = [_ALIASES[close[0]]] if close else []
    raise ConfigError(f"unknown MovieLens dataset {name!r}"
                      + (f"; did you mean {hint[0]!r}?" if hint else "")
                      + f" Known: {', '.join(DATASETS)}.")


def _as_spec(name: str | MovieLensSpec) -> MovieLensSpec:
    return name if isinstance(name, MovieLensSpec) else get_spec(name)


# ---------------------------------------------------------------------------------------
# finding, downloading, verifying
def movielens_cache_dir() -> Path:
    """Where downloaded MovieLens zips and folders live: ``cache_dir() / "movielens"``."""
    return cache_dir() / "movielens"


def _search_dirs(data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """(origin, directory) pairs searched by :func:`find_local`, in order."""
    dirs: list[tuple[str, Path]] = []
    if data_dir is not None:
        dirs.append(("data_dir", Path(data_dir).expanduser()))
    env = os.environ.get("RECFORGE_DATA_DIR")
    if env:
        dirs.extend(("RECFORGE_DATA_DIR", Path(p).expanduser())
                    for p in env.split(os.pathsep) if p)
    dirs.append(("cache", movielens_cache_dir()))
    return dirs


def _candidates(spec: MovieLensSpec, base: Path) -> list[Path]:
    out = [base / spec.folder]
    if spec.name != spec.folder:
        out.append(base / spec.name)
    # ``base`` itself, unless it is plainly another variant's folder (ml-1m and ml-10m both
    # have a ratings.dat, the csv variants all have a ratings.csv).
    others = {n.lower() for s in DATASETS.values() if s.name != spec.name
              for n in (s.name, s.folder)}
    if base.name.lower() not in others:
        out.append(base)
    return out


def find_local(name: str | MovieLensSpec, data_dir: str | os.PathLike | None = None
               ) -> Path | None:
    """The folder holding an extracted copy of a variant, or ``None``.

    Looks in ``data_dir``, then ``$RECFORGE_DATA_DIR``, then the download cache; in each,
    for ``<dir>/<folder>/`` (e.g. ``ml-10M100K``), ``<dir>/<name>/`` and ``<dir>`` itself.
    A directory counts when it holds the variant's ratings file.
    """
    spec = _as_spec(name)
    for origin, base in _search_dirs(data_dir):
        for cand in _candidates(spec, base):
            if (cand / spec.ratings_file).is_file():
                logger.debug("found %s in %s (%s)", spec.name, cand, origin)
                return cand
    return None


_MD5SUM_LINE = re.compile(r"([0-9a-fA-F]{32})\s+\*?(.+)")  # md5sum: "<hash>  <file>"
_BSD_LINE = re.compile(r"MD5\s*\((.+)\)\s*=\s*([0-9a-fA-F]{32})")  # md5: "MD5 (<file>) = <hash>"


def _parse_checksums(text: str) -> dict[str, str]:
    """``{file: md5}`` from a checksums file in ``md5sum`` or BSD ``md5`` layout."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _MD5SUM_LINE.fullmatch(line):
            out[m.group(2).strip()] = m.group(1).lower()
        elif m := _BSD_LINE.fullmatch(line):
            out[m.group(1).strip()] = m.group(2).lower()
    return out


def _check_digest(path: Path, algorithm: str, expected: str) -> None:
    if not path.is_file():
        raise DataError(f"missing: expected this file (it has a known {algorithm})",
                        source=str(path))
    got = file_digest(path, algorithm)
    if got != expected.lower():
        raise DataError(f"{algorithm} mismatch: expected {expected.lower()}, got {got}; the "
                        "file is corrupt or differs from the published release",
                        source=str(path))


def verify_files(name: str | MovieLensSpec, folder: str | os.PathLike) -> Verification:
    """Check an extracted folder: the ratings file is there, the files with a known SHA-256
    match it, and the files listed in a ``checksums.txt`` (shipped with ml-32m) match their
    MD5. Returns what was checked (``archive_md5`` left ``None``: the zip is not seen here).

    Raises
    ------
    DataError
        Naming the first file that is missing or differs.
    """
    spec = _as_spec(name)
    folder = Path(folder)
    if not (folder / spec.ratings_file).is_file():
        present = sorted(p.name for p in folder.parent.iterdir()) if folder.parent.is_dir() else []
        raise DataError(f"{spec.name}: expected {spec.folder}/{spec.ratings_file}, found "
                        f"{present or 'nothing'}", source=str(folder))
    for rel, digest in spec.file_sha256.items():
        _check_digest(folder / rel, "sha256", digest)
    listing = folder / "checksums.txt"
    sums: dict[str, str] = {}
    if listing.is_file():
        sums = _parse_checksums(listing.read_text(encoding="utf-8", errors="replace"))
        if not sums:
            logger.warning("%s: no md5 lines recognised; files not checked", listing)
        for fname, digest in sums.items():
            path = folder / fname
            if not path.exists() and (folder.parent / fname).exists():
                path = folder.parent / fname  # listed as "ml-32m/ratings.csv"
            _check_digest(path, "md5", digest)
        logger.info("%s: %d files match %s", spec.name, len(sums), listing.name)
    return Verification(pinned_sha256=tuple(spec.file_sha256), own_checksums=tuple(sums))


def _extract(spec: MovieLensSpec, archive: Path, root: Path, md5: str | None) -> Download:
    found: list[Verification] = []
    extract_zip(archive, root, verify=lambda tmp: found.append(
        verify_files(spec, tmp / spec.folder)), max_bytes=spec.max_extracted_bytes)
    return Download(root / spec.folder, dataclasses.replace(found[0], archive_md5=md5))


@dataclass(frozen=True)
class Download:
    """Where :func:`fetch_movielens` left a variant and what it checked: ``verified`` is
    ``None`` when the folder was already in the cache (nothing downloaded or checked now)."""

    path: Path
    verified: Verification | None


def download_movielens(name: str | MovieLensSpec, *, cache: str | os.PathLike | None = None,
                       force: bool = False, url: str | None = None,
                       progress: bool = True) -> Path:
    """Download, check and extract a variant into the cache; return its folder
    (:func:`fetch_movielens` also says what was checked)."""
    return fetch_movielens(name, cache=cache, force=force, url=url, progress=progress).path


def fetch_movielens(name: str | MovieLensSpec, *, cache: str | os.PathLike | None = None,
                    force: bool = False, url: str | None = None,
                    progress: bool = True) -> Download:
    """Download, check and extract a variant into the cache; return its folder and what
    was verified (:class:`Verification`).

    The zip is fetched into ``cache`` (default :func:`movielens_cache_dir`) and checked
    against the spec's MD5, then extracted atomically (at most ``max_extracted_bytes``, at
    a sane compression ratio), the extracted files checked (known SHA-256s,
    ``checksums.txt``) before the folder appears. A folder already in the cache is returned
    as is (``verified=None``), and a cached zip with the right MD5 is reused, unless
    ``force``.

    Parameters
    ----------
    name:
        A variant name or alias, or a :class:`MovieLensSpec` (e.g. one built with
        :func:`dataclasses.replace` for a mirror with other checksums).
    url:
        Download from here instead of the spec's URL (a mirror, a ``file://`` copy); the
        spec's checksums still apply.
    """
    spec = _as_spec(name)
    root = Path(cache).expanduser() if cache is not None else movielens_cache_dir()
    target = root / spec.folder
    if not force and (target / spec.ratings_file).is_file():
        logger.info("%s is already in %s", spec.name, target)
        return Download(target, None)
    archive = root / f"{spec.name}.zip"
    if not force and archive.is_file() and (
            spec.md5 is None or file_digest(archive, "md5") == spec.md5.lower()):
        logger.info("extracting the cached %s", archive)
        try:
            return _extract(spec, archive, root, spec.md5)
        except DataError as exc:
            logger.warning("cached %s is unusable (%s); downloading it again", archive, exc)
            archive.unlink(missing_ok=True)
    # the zip is smaller than what it unpacks to: the same ceiling bounds the download
    fetch(url or spec.url, root, filename=archive.name, md5=spec.md5, progress=progress,
          max_bytes=spec.max_extracted_bytes)
    try:
        return _extract(spec, archive, root, spec.md5)
    except DataError:
        archive.unlink(missing_ok=True)  # do not reuse a zip whose content is wrong
        raise


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


def _read_ratings(spec: MovieLensSpec, folder: Path) -> Interactions:
    path = folder / spec.ratings_file
    # MovieLens has one rating per (user, movie); "last" keeps the latest should a copy
    # hold re-ratings, rather than refusing to load it.
    if spec.format == "csv":
        return read_csv(path, sep=",", header=True, encoding="utf-8", duplicates="last")
    sep = "\t" if spec.format == "100k" else "::"
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


def _read_items(spec: MovieLensSpec, folder: Path) -> pd.DataFrame:
    if spec.format == "100k":
        return _read_items_100k(folder)
    if spec.format == "dat":
        path = folder / "movies.dat"
        frame, numbers = _read_regex(path, _MOVIES_DAT, "MovieID::Title::Genres")
    else:
        path = folder / "movies.csv"
        frame, numbers = _read_header_csv(path, {"movieId": "item", "title": "title",
                                                 "genres": "genres"})
    item = _ints(frame["item"], path, "movieId", numbers)
    return _items_frame(item, frame["title"], _split_genres(frame["genres"]))


def _read_users(spec: MovieLensSpec, folder: Path) -> pd.DataFrame | None:
    if not spec.has_user_features:
        return None
    if spec.format == "100k":
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


def _read_tags(spec: MovieLensSpec, folder: Path) -> pd.DataFrame | None:
    if not spec.has_tags:
        return None
    path = folder / ("tags.dat" if spec.format == "dat" else "tags.csv")
    if not path.is_file():
        logger.warning("%s not found; loading without tags", path)
        return None
    if spec.format == "dat":
        frame, numbers = _read_regex(path, _TAGS_DAT, "UserID::MovieID::Tag::Timestamp")
    else:
        frame, numbers = _read_header_csv(path, {"userId": "user", "movieId": "item",
                                                 "tag": "tag", "timestamp": "timestamp"})
    return pd.DataFrame({"user": _ints(frame["user"], path, "user", numbers),
                         "item": _ints(frame["item"], path, "item", numbers),
                         "tag": frame["tag"].to_numpy(dtype=object),
                         "timestamp": _ints(frame["timestamp"], path, "timestamp", numbers)})


# ---------------------------------------------------------------------------------------
# loading
@dataclass(frozen=True, repr=False)
class MovieLensData:
    """A loaded MovieLens variant.

    Attributes
    ----------
    interactions:
        The ratings, with values and timestamps (seconds); ids as in the files (ints).
    items:
        One row per movie of the movie file, indexed by movie id: ``title`` (year removed),
        ``year`` (nullable ``Int64``), ``genres`` (list of str, empty when none listed).
    users:
        For ml-100k and ml-1m, one row per user indexed by user id: ``age`` (ml-1m: the
        age group's lower bound, 1 meaning under 18), ``gender``, ``occupation``, ``zip``;
        ``None`` for the other variants.
    tags:
        Columns ``user, item, tag, timestamp`` for the variants with tags, else ``None``.
    """

    interactions: Interactions
    items: pd.DataFrame
    users: pd.DataFrame | None
    tags: pd.DataFrame | None
    name: str
    path: Path

    def __repr__(self) -> str:
        parts = [f"{len(self.items):,} movies"]
        if self.users is not None:
            parts.append(f"{len(self.users):,} user profiles")
        if self.tags is not None:
            parts.append(f"{len(self.tags):,} tags")
        return (f"MovieLensData({self.name!r}, {self.interactions!r}, {', '.join(parts)}, "
                f"path={str(self.path)!r})")


def _not_found(spec: MovieLensSpec, data_dir: str | os.PathLike | None) -> DataError:
    looked = "; ".join(f"{origin} {base}" for origin, base in _search_dirs(data_dir))
    return DataError(
        f"MovieLens {spec.name!r} not found locally: looked for "
        f"{spec.folder}/{spec.ratings_file} (or {spec.ratings_file}) in: {looked}. "
        f"Pass download=True (or run `recforge datasets download {spec.name}`) to fetch it "
        f"into the cache, or download {spec.url}, extract it and set RECFORGE_DATA_DIR to "
        f"the directory holding {spec.folder}/ (or pass data_dir=).")


def load_movielens(name: str | MovieLensSpec, *, data_dir: str | os.PathLike | None = None,
                   download: bool = True, progress: bool = True) -> MovieLensData:
    """Load a MovieLens variant: ratings as :class:`Interactions`, movies, users, tags.

    The files are looked up with :func:`find_local` (``data_dir``, ``$RECFORGE_DATA_DIR``,
    the cache); when absent they are downloaded into the cache with
    :func:`download_movielens`, unless ``download=False``.

    Raises
    ------
    ConfigError
        For an unknown variant name.
    DataError
        When the data is not found and ``download=False`` (saying where it looked and how to
        provide it), on a download failure, or on a malformed file (naming file and line).
    """
    spec = _as_spec(name)
    path = find_local(spec, data_dir)
    if path is None:
        if not download:
            raise _not_found(spec, data_dir)
        path = download_movielens(spec, progress=progress)
    logger.info("loading %s from %s", spec.name, path)
    interactions = _read_ratings(spec, path)
    if len(interactions) != spec.n_ratings:
        logger.warning("%s: %s has %d ratings, the published release has %d (a modified copy?)",
                       spec.name, path, len(interactions), spec.n_ratings)
    return MovieLensData(interactions=interactions, items=_read_items(spec, path),
                         users=_read_users(spec, path), tags=_read_tags(spec, path),
                         name=spec.name, path=path)

