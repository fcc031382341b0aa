"""Downloading and unpacking data files: checksummed, atomic, with a progress bar.

Nothing here knows about MovieLens; :mod:`recforge.data.movielens` builds on it.

* :func:`fetch` streams an ``http://``, ``https://`` or ``file://`` URL into a temporary file
  beside its destination, checks its MD5 / SHA-256, and only then renames it into place: a
  failed, interrupted or corrupt download leaves nothing behind.
* :func:`extract_zip` unpacks an archive into a temporary directory, refuses members that
  would land outside it (absolute paths, ``..``: "zip slip"), lets the caller verify the
  result, and only then renames the top-level entries into the destination.
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
from recforge.errors import DataError

__all__ = ["cache_dir", "extract_zip", "fetch", "file_digest", "OFFLINE_HINT"]

logger = logging.getLogger(__name__)

#: Appended to every network error: how to use a copy obtained some other way.
OFFLINE_HINT = ("To work offline, download and extract the dataset elsewhere, then set "
                "RECFORGE_DATA_DIR to the directory holding the extracted folder, or pass "
                "data_dir= to the loader.")

_SCHEMES = ("http", "https", "file")
_CHUNK = 1 << 20  # bytes read per step of a download or a hash
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


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
          timeout: float = 60) -> Path:
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

    Raises
    ------
    DataError
        On an unsupported URL, a network or HTTP error (the message says how to work
        offline), a truncated transfer, or a checksum mismatch (naming the URL, the expected
        and the actual digest).
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

    from recforge import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"recforge/{__version__}"})
    logger.info("downloading %s to %s", url, dest)
    with atomic_path(dest) as tmp:
        try:
            received, total = _stream(request, tmp, hashers, name, progress, timeout)
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
            name: str, progress: bool, timeout: float) -> tuple[int, int | None]:
    """Copy the response body into ``tmp``; return (bytes received, announced length)."""
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as resp, open(tmp, "wb") as out:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                  disable=None if progress else True, leave=False) as bar:
            while chunk := resp.read(_CHUNK):
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
                verify: Callable[[Path], None] | None = None) -> Path:
    """Extract a zip archive into ``dest_dir`` atomically and return ``dest_dir``.

    The members are unpacked into a temporary directory inside ``dest_dir``; ``verify``,
    when given, is called with that directory (it raises to reject the content); then each
    top-level entry is renamed into ``dest_dir``, replacing an older copy only once the new
    one is complete. A failure at any step leaves ``dest_dir`` as it was.

    Raises
    ------
    DataError
        When the file is not a valid zip archive or a member cannot be read back
        (damaged data, bad CRC), or a member has an absolute path or a
        ``..`` component (it would be written outside ``dest_dir``).
    """
    archive = Path(archive)
    dest = Path(dest_dir)
    src = os.fspath(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except FileNotFoundError:
        raise DataError("archive not found", source=src) from None
    except zipfile.BadZipFile as exc:
        raise DataError(f"not a valid zip archive ({exc})", source=src) from None
    with zf:
        for member in zf.infolist():
            if _unsafe_member(member.filename):
                raise DataError(f"refusing to extract member {member.filename!r}: it has an "
                                "absolute path or '..' and would be written outside "
                                f"{dest}", source=src)
        dest.mkdir(parents=True, exist_ok=True)
        # Read every member (CRC included) before writing anything: a damaged deflate
        # stream raises zlib.error, an unreadable file OSError, not BadZipFile. Reading
        # only, an OSError here is the archive's, never a full disk's.
        try:
            bad = zf.testzip()
        except _CORRUPT + (OSError,) as exc:
            raise DataError(f"corrupt zip archive ({type(exc).__name__}: {exc})",
                            source=src) from None
        if bad is not None:
            raise DataError(f"corrupt zip archive (bad CRC in {bad!r})", source=src)
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extract", dir=dest))
        try:
            try:
                zf.extractall(tmp)
            except _CORRUPT as exc:
                raise DataError(f"corrupt zip archive ({type(exc).__name__}: {exc})",
                                source=src) from None
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
