"""Downloading and unpacking data files: checksummed, atomic, with a progress bar.

Nothing here knows about MovieLens; :mod:`recforge.data.movielens` builds on it.

* :func:`fetch` streams an ``http://``, ``https://`` or ``file://`` URL into a temporary file
  beside its destination, checks its MD5 / SHA-256, and only then renames it into place: a
  failed, interrupted or corrupt download leaves nothing behind.
* :func:`extract_zip` unpacks an archive into a temporary directory, refuses members that
  would land outside it (absolute paths, ``..``: "zip slip"), symbolic links and other
  special files, and archives that would unpack to more than a size ceiling or at a
  compression ratio no real data has (a "zip bomb"): judged from the sizes the archive
  declares before anything is written, and again from the bytes actually written, since a
  doctored header can declare anything. It lets the caller verify the result, and only
  then renames the top-level entries into the destination.
* :func:`cache_dir` is where downloads go by default.

Network and HTTP failures raise :class:`~recforge.errors.DataError` with a message that says
how to work offline.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm.auto import tqdm

from recforge._fs import atomic_path
from recforge._version import __version__
from recforge.errors import DataError

__all__ = ["cache_dir", "extract_zip", "fetch", "file_digest", "MAX_EXTRACT_BYTES",
           "MAX_EXTRACT_RATIO", "OFFLINE_HINT"]

logger = logging.getLogger(__name__)

#: Appended to every network error: how to use a copy obtained some other way.
OFFLINE_HINT = ("To work offline, download and extract the dataset elsewhere, then set "
                "RECFORGE_DATA_DIR to the directory holding the extracted folder, or pass "
                "data_dir= to the loader.")

_SCHEMES = ("http", "https", "file")
_CHUNK = 1 << 20  # bytes read per step of a download or a hash
_DRIVE_RE = re.compile(r"^[A-Za-z]:")

#: Default ceiling on what :func:`extract_zip` writes (bytes, all members together).
MAX_EXTRACT_BYTES = 4 << 30
#: Default ceiling on the compression ratio (uncompressed / compressed bytes) of a member and
#: of the whole archive. Text data deflates 2-6 times; a zip bomb about 1,000 times.
MAX_EXTRACT_RATIO = 100
#: Below this many uncompressed bytes the ratio is not judged (a small run of blanks or
#: zeros compresses at any ratio and harms nothing).
_RATIO_FLOOR = 1 << 20


def cache_dir() -> Path:
    """The directory for downloaded data (not created here).

    ``$RECFORGE_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/recforge``, else
    ``~/.cache/recforge``.
    """
    env = os.environ.get("RECFORGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "recforge"
    return Path.home() / ".cache" / "recforge"


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's content (``algorithm`` is any :mod:`hashlib` name)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _filename_from(url: str) -> str:
    path = urllib.parse.urlsplit(url).path
    return PurePosixPath(urllib.parse.unquote(path)).name


def fetch(url: str, dest_dir: str | os.PathLike, *, filename: str | None = None,
          md5: str | None = None, sha256: str | None = None, progress: bool = True,
          timeout: float = 60, max_bytes: int | None = None) -> Path:
    """Download ``url`` into ``dest_dir`` and return the path of the file.

    The data is streamed into a temporary file in ``dest_dir``, checked against ``md5`` /
    ``sha256`` (hex digests) when given, and renamed into place only when complete and
    correct; an existing file of the same name is replaced. On any failure (network error,
    truncated transfer, checksum mismatch, interruption) nothing is left behind.

    Parameters
    ----------
    url:
        An ``http://``, ``https://`` or ``file://`` URL.
    filename:
        Name of the file in ``dest_dir``; by default the last component of the URL's path.
    progress:
        Show a tqdm progress bar (only when stderr is a terminal).
    timeout:
        Seconds to wait for the connection and for each read.
    max_bytes:
        Refuse a file larger than this: from the announced length before reading, and from
        the bytes received as they arrive (a server need not announce, or tell the truth).

    Raises
    ------
    DataError
        On an unsupported URL, a network or HTTP error (the message says how to work
        offline), a truncated transfer, a file above ``max_bytes``, or a checksum mismatch
        (naming the URL, the expected and the actual digest).
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise DataError(f"cannot download {url!r}: unsupported URL scheme {scheme or '(none)'!r}"
                        f" (expected one of {', '.join(_SCHEMES)})")
    name = filename or _filename_from(url)
    if not name or name in (".", ".."):
        raise DataError(f"cannot tell a file name from the URL {url!r}; pass filename=")
    if "/" in name or "\\" in name:
        raise DataError(f"filename must be a plain file name, not a path: {name!r}")
    dest = Path(dest_dir) / name
    expected = {algo: digest.strip().lower()
                for algo, digest in (("md5", md5), ("sha256", sha256)) if digest}
    hashers = {algo: hashlib.new(algo) for algo in expected}
    request = urllib.request.Request(url, headers={"User-Agent": f"recforge/{__version__}"})
    logger.info("downloading %s to %s", url, dest)
    with atomic_path(dest) as tmp:
        try:
            received, total = _stream(request, tmp, hashers, name, progress, timeout,
                                      max_bytes, url)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the open response
            raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}. "
                            f"{OFFLINE_HINT}") from exc
        except urllib.error.URLError as exc:
            raise DataError(f"download of {url} failed: {exc.reason}. {OFFLINE_HINT}") from exc
        except TimeoutError as exc:
            raise DataError(f"download of {url} failed: timed out after {timeout} s. "
                            f"{OFFLINE_HINT}") from exc
        except (ConnectionError, http.client.HTTPException) as exc:
            raise DataError(f"download of {url} failed: {type(exc).__name__}: {exc}. "
                            f"{OFFLINE_HINT}") from exc
        if total is not None and received != total:
            raise DataError(f"download of {url} is incomplete: got {received:,} of {total:,} "
                            f"bytes. Try again. {OFFLINE_HINT}")
        for algo, want in expected.items():
            got = hashers[algo].hexdigest()
            if got != want:
                raise DataError(f"checksum mismatch for {url}: expected {algo} {want}, got "
                                f"{got}; the download is corrupt or the file changed upstream "
                                "(nothing was kept)")
    logger.info("downloaded %s (%s bytes)", dest, f"{received:,}")
    return dest


def _stream(request: urllib.request.Request, tmp: Path, hashers: dict[str, Any],
            name: str, progress: bool, timeout: float, max_bytes: int | None,
            url: str) -> tuple[int, int | None]:
    """Copy the response body into ``tmp``; return (bytes received, announced length)."""
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as resp, open(tmp, "wb") as out:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() and len(length) < 20 else None
        if max_bytes is not None and total is not None and total > max_bytes:
            raise DataError(f"refusing to download {url}: it announces {total:,} bytes, more "
                            f"than the limit of {max_bytes:,}")
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                  disable=None if progress else True, leave=False) as bar:
            while chunk := resp.read(_CHUNK):
                if max_bytes is not None and received + len(chunk) > max_bytes:
                    raise DataError(f"refusing to download {url}: more than the limit of "
                                    f"{max_bytes:,} bytes arrived")
                out.write(chunk)
                for h in hashers.values():
                    h.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    return received, total


# ---------------------------------------------------------------------------------------
# archives
def _unsafe_member(name: str) -> bool:
    """True when extracting ``name`` could write outside the target directory."""
    norm = name.replace("\\", "/")
    return (norm.startswith("/") or bool(_DRIVE_RE.match(norm))
            or ".." in PurePosixPath(norm).parts)


# What zipfile raises on a damaged archive (zlib.error: a broken deflate stream;
# NotImplementedError: an unsupported compression method).
_CORRUPT = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error,
            NotImplementedError)


def extract_zip(archive: str | os.PathLike, dest_dir: str | os.PathLike, *,
                verify: Callable[[Path], None] | None = None,
                max_bytes: int = MAX_EXTRACT_BYTES,
                max_ratio: float = MAX_EXTRACT_RATIO) -> Path:
    """Extract a zip archive into ``dest_dir`` atomically and return ``dest_dir``.

    The members are unpacked into a temporary directory inside ``dest_dir``; ``verify``,
    when given, is called with that directory (it raises to reject the content); then each
    top-level entry is renamed into ``dest_dir``, replacing an older copy only once the new
    one is complete. A failure at any step leaves ``dest_dir`` as it was.

    ``max_bytes`` bounds the total uncompressed size and ``max_ratio`` the compression ratio
    (uncompressed / compressed) of each member and of the whole archive (judged past 1 MiB).
    Both are checked on the sizes the archive declares before anything is written, then on
    the bytes actually written, as they are written.

    Raises
    ------
    DataError
        When the file is not a valid zip archive or a member cannot be read back
        (damaged data, bad CRC), a member has an absolute path or a ``..`` component (it
        would be written outside ``dest_dir``), is a symbolic link or another special file,
        is encrypted or repeated, or the archive exceeds ``max_bytes`` or ``max_ratio``.
    """
    archive = Path(archive)
    dest = Path(dest_dir)
    src = os.fspath(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except FileNotFoundError:
        raise DataError("archive not found", source=src) from None
    except _CORRUPT as exc:
        raise DataError(f"not a valid zip archive ({exc})", source=src) from None
    except OSError as exc:  # a directory, no permission...
        raise DataError(f"cannot read the archive: {exc.strerror or exc}", source=src) from None
    with zf:
        members = zf.infolist()
        _check_members(members, dest, src)
        _check_declared_sizes(members, archive.stat().st_size, max_bytes, max_ratio, src)
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extract", dir=dest))
        try:
            budget = _Budget(max_bytes, max_ratio, archive.stat().st_size, src)
            for member in members:
                _extract_member(zf, member, tmp, budget, src)
            if verify is not None:
                verify(tmp)
            for entry in sorted(tmp.iterdir()):
                if entry.name == "__MACOSX":  # resource forks added by macOS zip tools
                    continue
                _replace(entry, dest / entry.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("extracted %s into %s", archive, dest)
    return dest


def _check_members(members: list[zipfile.ZipInfo], dest: Path, src: str) -> None:
    """Refuse members that could write outside the target, that are not plain files or
    directories, that are encrypted, or that repeat a name."""
    seen: set[str] = set()
    for member in members:
        name = member.filename
        if _unsafe_member(name):
            raise DataError(f"refusing to extract member {name!r}: it has an absolute path "
                            f"or '..' and would be written outside {dest}", source=src)
        mode = member.external_attr >> 16  # Unix mode, when the archiver recorded one
        if stat.S_ISLNK(mode) or (stat.S_IFMT(mode) and not (stat.S_ISREG(mode)
                                                              or stat.S_ISDIR(mode))):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise DataError(f"refusing to extract member {name!r}: it is {kind}", source=src)
        if member.flag_bits & 0x1:
            raise DataError(f"refusing to extract member {name!r}: it is encrypted",
                            source=src)
        key = "/".join(PurePosixPath(name.replace("\\", "/")).parts)
        if key in seen:
            raise DataError(f"refusing to extract member {name!r}: the archive holds it "
                            "twice", source=src)
        seen.add(key)


def _check_declared_sizes(members: list[zipfile.ZipInfo], archive_size: int, max_bytes: int,
                          max_ratio: float, src: str) -> None:
    """Refuse, before writing anything, an archive whose declared sizes exceed the ceilings."""
    total = 0
    for member in members:
        total += member.file_size
        if total > max_bytes:
            raise DataError(f"refusing to extract: the archive would unpack to more than "
                            f"{max_bytes:,} bytes (max_bytes); {member.filename!r} alone "
                            f"declares {member.file_size:,}", source=src)
        packed = max(1, min(member.compress_size, archive_size))
        if member.file_size > _RATIO_FLOOR and member.file_size > max_ratio * packed:
            raise DataError(f"refusing to extract member {member.filename!r}: it declares "
                            f"{member.file_size:,} bytes from {member.compress_size:,} "
                            f"compressed, a ratio above {max_ratio:g} (max_ratio; a zip "
                            "bomb?)", source=src)
    if total > _RATIO_FLOOR and total > max_ratio * max(1, archive_size):
        raise DataError(f"refusing to extract: the members declare {total:,} bytes from an "
                        f"archive of {archive_size:,}, a ratio above {max_ratio:g} (max_ratio;"
                        " a zip bomb?)", source=src)


class _Budget:
    """Counts the bytes written, against the ceilings, whatever the headers declared."""

    def __init__(self, max_bytes: int, max_ratio: float, archive_size: int, src: str):
        self.max_bytes, self.max_ratio = max_bytes, max_ratio
        self.archive_size, self.src = archive_size, src
        self.total = 0

    def add(self, member: zipfile.ZipInfo, written: int, n: int) -> None:
        """Account ``n`` more bytes of ``member`` (``written`` of it before them)."""
        self.total += n
        written += n
        name = member.filename
        if self.total > self.max_bytes:
            raise DataError(f"refusing to extract: more than {self.max_bytes:,} bytes unpacked "
                            f"(max_bytes), at member {name!r}", source=self.src)
        if written > member.file_size:
            raise DataError(f"refusing to extract member {name!r}: it unpacks to more than "
                            f"the {member.file_size:,} bytes its header declares", source=self.src)
        packed = max(1, min(member.compress_size, self.archive_size))
        if written > _RATIO_FLOOR and written > self.max_ratio * packed:
            raise DataError(f"refusing to extract member {name!r}: more than {written:,} "
                            f"bytes from {member.compress_size:,} compressed, a ratio above "
                            f"{self.max_ratio:g} (max_ratio; a zip bomb?)", source=self.src)


def _extract_member(zf: zipfile.ZipFile, member: zipfile.ZipInfo, root: Path, budget: _Budget,
                    src: str) -> None:
    """Write one member under ``root``, counting its bytes as they are written (the CRC is
    checked by zipfile at the member's end)."""
    parts = PurePosixPath(member.filename.replace("\\", "/")).parts
    if not parts:
        return
    target = root.joinpath(*parts)
    try:
        if member.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "xb")
    except OSError as exc:  # a name that is both a file and a folder, a full disk...
        raise DataError(f"cannot extract member {member.filename!r}: "
                        f"{exc.strerror or exc}", source=src) from None
    written = 0
    with out:
        try:
            stream = zf.open(member)
        except _CORRUPT + (OSError, RuntimeError) as exc:
            raise DataError(f"corrupt zip archive ({type(exc).__name__}: {exc})",
                            source=src) from None
        with stream:
            while True:
                try:
                    chunk = stream.read(_CHUNK)
                except _CORRUPT + (OSError,) as exc:  # reading: the archive's fault
                    raise DataError(f"corrupt zip archive ({type(exc).__name__}: {exc})",
                                    source=src) from None
                if not chunk:
                    break
                budget.add(member, written, len(chunk))
                written += len(chunk)
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise DataError(f"cannot extract member {member.filename!r}: "
                                    f"{exc.strerror or exc}", source=src) from None


def _replace(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst``; an existing ``dst`` is moved aside, then removed."""
    old = None
    if dst.is_dir() and not dst.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
        old.rmdir()
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
