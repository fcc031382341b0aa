"""The MovieLens data sets: a registry of variants, download into a cache, offline use,
loading (the files' parsers are in :mod:`recforge.data.movielens_files`).

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

import pandas as pd

from recforge.data.download import MAX_EXTRACT_BYTES, cache_dir, extract_zip, fetch, file_digest
from recforge.data.interactions import Interactions
from recforge.data.movielens_files import Format, read_items, read_ratings, read_tags, read_users
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
    "verify_files",
]

logger = logging.getLogger(__name__)

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

#: The files and contents of each layout of release (the folder is the release's name).
_LAYOUTS: dict[str, dict[str, object]] = {
    "100k": {"ratings_file": "u.data", "format": "100k", "has_tags": False,
             "has_user_features": True},
    "1m": {"ratings_file": "ratings.dat", "format": "dat", "has_tags": False,
           "has_user_features": True},
    "10m": {"ratings_file": "ratings.dat", "format": "dat", "has_tags": True,
            "has_user_features": False},
    "csv": {"ratings_file": "ratings.csv", "format": "csv", "has_tags": True,
            "has_user_features": False},
}

#: What single releases carry beyond their row of the table below.
_EXTRA: dict[str, dict[str, object]] = {
    "ml-100k": {"file_sha256": {
        "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
        "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
    }},
    "ml-10m": {"folder": "ml-10M100K"},
    "ml-32m": {"ships_checksums": True},
    "ml-latest-small": {"file_sha256": {
        "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
        "movies.csv": "0b51fea714421d61045d49a335db61ffd732a49a6569bd83738ab700edc3b9db",
        "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
    }},
}


def _release(name: str, layout: str, md5: str | None, n_ratings: int, n_users: int,
             n_items: int, max_extracted_bytes: int, description: str) -> MovieLensSpec:
    """One row of the registry's table as a spec: ``<name>.zip`` on GroupLens' server,
    extracting to ``<name>/`` unless :data:`_EXTRA` says otherwise."""
    fields: dict[str, object] = {"folder": name, **_LAYOUTS[layout], **_EXTRA.get(name, {})}
    return MovieLensSpec(name=name, url=f"{_BASE_URL}{name}.zip", md5=md5, n_ratings=n_ratings,
                         n_users=n_users, n_items=n_items, description=description,
                         max_extracted_bytes=max_extracted_bytes,
                         **fields)  # type: ignore[arg-type]


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
_SPECS = [_release(*row) for row in (
    # name, layout, md5 of the zip, ratings, users, items, unpacked-size ceiling, description
    ("ml-100k", "100k", "0e33842e24a9c977be4e0107933c0723", 100_000, 943, 1_682, 64 << 20,
     "MovieLens 100K (1998): 100,000 ratings (1-5 stars) from 943 users on 1,682 movies; "
     "user age, gender, occupation and zip code; 19 genres."),
    ("ml-1m", "1m", "c4d9eecfca2ab87c1945afe126590906", 1_000_209, 6_040, 3_706, 128 << 20,
     "MovieLens 1M (2003): 1,000,209 ratings (1-5 stars) from 6,040 users on 3,706 of "
     "3,883 movies; user age group, gender, occupation, zip code."),
    ("ml-10m", "10m", "ce571fd55effeba0271552578f2648bd", 10_000_054, 69_878, 10_677, 1 << 30,
     "MovieLens 10M (2009): 10,000,054 ratings (0.5-5 stars) and 95,580 tags on 10,681 "
     "movies by 71,567 users (69,878 of whom rated)."),
    ("ml-20m", "csv", "cd245b17a1ae2cc31bb14903e1204af3", 20_000_263, 138_493, 26_744, 3 << 30,
     "MovieLens 20M (2015): 20,000,263 ratings (0.5-5 stars) and 465,564 tags on 27,278 "
     "movies by 138,493 users; tag genome."),
    ("ml-25m", "csv", "6b51fb2759a8657d3bfcbfc42b592ada", 25_000_095, 162_541, 59_047, 4 << 30,
     "MovieLens 25M (2019): 25,000,095 ratings (0.5-5 stars) and 1,093,360 tags on "
     "62,423 movies by 162,541 users; tag genome."),
    ("ml-32m", "csv", "d472be332d4daa821edc399621853b57", 32_000_204, 200_948, 84_432, 4 << 30,
     "MovieLens 32M (2023): 32,000,204 ratings (0.5-5 stars) and 2,000,072 tags on "
     "87,585 movies by 200,948 users."),
    ("ml-latest-small", "csv", None, 100_836, 610, 9_724, 64 << 20,
     "MovieLens latest-small (2018): 100,836 ratings (0.5-5 stars) and 3,683 tags on "
     "9,742 movies (9,724 rated) by 610 users; for development."),
)]

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
    interactions = read_ratings(path / spec.ratings_file, spec.format)
    if len(interactions) != spec.n_ratings:
        logger.warning("%s: %s has %d ratings, the published release has %d (a modified copy?)",
                       spec.name, path, len(interactions), spec.n_ratings)
    return MovieLensData(
        interactions=interactions, items=read_items(path, spec.format),
        users=read_users(path, spec.format) if spec.has_user_features else None,
        tags=read_tags(path, spec.format) if spec.has_tags else None,
        name=spec.name, path=path)

