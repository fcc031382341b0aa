"""File-system writes and reads that a crash, a concurrent reader or an odd path cannot
break.

Files (:func:`atomic_path`, :func:`atomic_write_text`): the data go to a temporary sibling
that is synced to disk and then renamed onto the name, and the directory is synced after
the rename; a reader never sees a half-written file, and a crash (``kill -9``, power loss)
leaves the old file or the new one whole. Only a regular file (or a name that does not
exist yet) is replaced that way. ``-`` means standard output; a character device
(``/dev/null``, a terminal), a FIFO, or a symlink to one, and the ``/proc`` links behind
``/dev/stdout``, are opened and written (once the data are complete), never renamed over;
a symlink to a regular file stays a symlink and its target is replaced atomically; other
kinds of files (block devices, sockets) are refused.

Directories (:func:`atomic_dir`, a saved model): the new directory is written beside the
old one, every file and the directory are synced, and the two are swapped in one step with
``renameat2(RENAME_EXCHANGE)`` (Linux 3.15+, on ext4, XFS, Btrfs, tmpfs and most local file
systems), then the parent is synced and the old directory removed. At every moment, also
across ``kill -9``, the path holds the old directory or the new one, complete. Savers of
one parent directory take turns (an ``flock`` on it); each removes the leftovers of a
saver killed earlier. Where the exchange is not supported (another OS, some network file
systems) the old directory is renamed away and the new one renamed in: a reader arriving
between the two renames finds nothing, and a crash there leaves the old directory at a
hidden ``.NAME.*.old`` name (removed by the next save).

Reading (:func:`read_dir_consistently`): every file of a directory is read through one
open handle of it, so that the files read belong to one version even while a saver swaps
a new one in; a read that the swap overtook starts again on the new directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")

#: The output name that means standard output.
STDOUT = "-"


def _umask() -> int:
    # Read without changing it for good (the only portable way is to set and restore).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_mode(directory: bool = False) -> int:
    """The mode ``open`` / ``mkdir`` would give under the current umask (temp files are
    created 0600 / 0700, which would make every written file private)."""
    return (0o777 if directory else 0o666) & ~_umask()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Sync a directory's entries (a rename into it) to disk; best effort: a no-op where
    directories cannot be opened or synced (Windows, some network file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# output files
def is_stdout(path: str | os.PathLike) -> bool:
    """Whether ``path`` is ``-`` (standard output)."""
    return os.fspath(path) == STDOUT


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISFIFO, "a FIFO")):
        if test(mode):
            return name
    return "not a regular file"


def output_target(path: str | os.PathLike) -> tuple[str, Path]:
    """How a file output at ``path`` is written: ``("stdout", path)``, ``("stream",
    path)`` (opened and written: a character device, a FIFO, a ``/proc`` link such as
    ``/dev/stdout``), or ``("atomic", file)`` (a temporary sibling renamed onto ``file``:
    the path itself, or the regular file a symlink points to, so the link stays).

    Raises :class:`IsADirectoryError` for a directory and :class:`OSError` for a block
    device or a socket, which are never written.
    """
    if is_stdout(path):
        return "stdout", Path(STDOUT)
    path = Path(path)
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory; give a file name",
                                    str(path))
        if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            return "stream", path
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"is {_kind(st.st_mode)}; give a regular file, a "
                          "character device, a FIFO or - (standard output)", str(path))
    if _through_proc(path):
        # /dev/stdout -> /proc/self/fd/1 -> whatever the shell redirected (a terminal, a
        # pipe, a file): written as any program writes it, never renamed over
        return "stream", path
    return "atomic", Path(os.path.realpath(path)) if path.is_symlink() else path


def _through_proc(path: Path) -> bool:
    """Whether ``path`` or a link it goes through lies in ``/proc`` (``/dev/stdout``,
    ``/dev/fd/N``: links to a process's open files, not names to replace)."""
    p = Path(os.path.abspath(path))
    for _ in range(40):  # the kernel's own limit on links followed
        p = Path(os.path.realpath(p.parent)) / p.name
        if p.parts[:2] == ("/", "proc"):
            return True
        if not p.is_symlink():
            return False
        p = Path(os.path.normpath(p.parent / os.readlink(p)))
    return False


def check_output_file(path: str | os.PathLike) -> None:
    """Raise :class:`OSError` naming ``path`` when a file cannot be written there (a
    directory, a block device, a folder that is not one or not writable), before any
    work is done."""
    kind, target = output_target(path)
    if kind == "stdout":
        return
    if kind == "stream":
        if not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, "cannot write to it", str(path))
        return
    parent = target.parent if str(target.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a directory", str(path))
    if not os.access(existing, os.W_OK):
        raise PermissionError(errno.EACCES, f"cannot write in {existing}", str(path))


def check_output_dir(path: str | os.PathLike) -> None:
    """Raise :class:`OSError` naming ``path`` when a directory of outputs cannot be made
    there: ``-`` (standard output), a device, a FIFO or any other file that is not a
    directory."""
    if is_stdout(path):
        raise OSError(errno.EINVAL, "standard output cannot hold a directory of outputs; "
                      "give a directory", STDOUT)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        what = "a regular file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)
        raise NotADirectoryError(errno.ENOTDIR, f"is {what}, not a directory", str(path))


def _stream_out(tmp: Path, kind: str, target: Path) -> None:
    """Copy the finished temporary file to standard output or into ``target``."""
    with open(tmp, "rb") as src:
        if kind == "stdout":
            sys.stdout.flush()
            out: BinaryIO | None = getattr(sys.stdout, "buffer", None)
            if out is None:  # a text-only stream (an embedding application's)
                try:
                    sys.stdout.write(src.read().decode("utf-8"))
                except UnicodeDecodeError:
                    raise OSError(errno.EINVAL, "standard output takes only text here",
                                  STDOUT) from None
                sys.stdout.flush()
                return
            shutil.copyfileobj(src, out)
            out.flush()
            return
        # no O_CREAT: the device or FIFO checked before must still be there
        fd = os.open(target, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path``.

    A regular file (or a new name) is replaced atomically and durably; the target of a
    symlink is replaced, the link kept. ``-`` (standard output), a character device and a
    FIFO receive the finished file's bytes instead (see :func:`output_target`). On an
    exception the temporary file is removed and ``path`` is left untouched.
    """
    kind, target = output_target(path)
    if kind != "atomic":
        fd, name = tempfile.mkstemp(prefix="recforge-out.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            _stream_out(tmp, kind, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(name)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _default_mode())
            _fsync_file(tmp_path)  # the data on disk before the name points at it
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)  # and the rename itself


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


# ---------------------------------------------------------------------------------------
# directories
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
#: renameat2's system call number where libc lacks the wrapper (glibc < 2.28).
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "ppc64le": 357, "s390x": 347}
_renameat2: Callable[..., int] | None | bool = False  # False: not looked up yet


def _renameat2_call() -> Callable[..., int] | None:
    global _renameat2
    if _renameat2 is False:
        _renameat2 = None
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
            except OSError:
                libc = None
            fn = getattr(libc, "renameat2", None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                               ctypes.c_uint]
                fn.restype = ctypes.c_int
                _renameat2 = fn
            elif libc is not None and os.uname().machine in _SYS_RENAMEAT2:
                number = _SYS_RENAMEAT2[os.uname().machine]
                syscall = libc.syscall
                syscall.restype = ctypes.c_long

                def via_syscall(olddir: int, old: bytes, newdir: int, new: bytes,
                                flags: int) -> int:
                    return syscall(ctypes.c_long(number), ctypes.c_int(olddir),
                                   ctypes.c_char_p(old), ctypes.c_int(newdir),
                                   ctypes.c_char_p(new), ctypes.c_uint(flags))

                _renameat2 = via_syscall
    return _renameat2  # type: ignore[return-value]


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap the entries ``a`` and ``b`` atomically (``renameat2(RENAME_EXCHANGE)``).

    Returns False, changing nothing, where the platform or the file system cannot; raises
    :class:`OSError` for other failures (a missing entry, permissions).
    """
    fn = _renameat2_call()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``directory`` (savers into it take turns; the lock
    goes with the process, also on ``kill -9``). Yields whether the lock is held: False
    where the platform or file system has none (no leftovers are removed then)."""
    try:  # lazy: POSIX only
        import fcntl
    except ImportError:  # Windows
        yield False
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = True
        except OSError:
            held = False
        yield held
    finally:
        os.close(fd)  # releases the lock


def _leftover_pattern(name: str) -> re.Pattern[str]:
    # tempfile.mkdtemp's names: 8 characters of [a-z0-9_]; ".old": earlier recforge versions
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.(tmp|old)")


def _remove_leftovers(parent: Path, name: str) -> None:
    """Remove the temporary directories a saver of ``parent / name`` killed earlier left
    (only called while holding the parent's lock: no live saver owns them)."""
    pattern = _leftover_pattern(name)
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """Sync every file under ``root``, then every directory (deepest first)."""
    dirs = []
    for here, _, files in os.walk(root):
        for f in files:
            p = Path(here) / f
            if p.is_file() and not p.is_symlink():
                _fsync_file(p)
        dirs.append(here)
    for d in reversed(dirs):
        fsync_dir(d)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path``.

    The new directory's files and the directory itself are synced, then swapped with the
    old one in one step (see the module docstring), the parent synced and the old one
    removed: at every moment, also across ``kill -9``, ``path`` holds the old directory or
    the new one, complete. A symlink at ``path`` stays: the directory it points to is the
    one replaced. An existing entry that is not a directory raises
    :class:`NotADirectoryError` before anything is written.
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(path))
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    with _dir_lock(parent) as locked:
        if locked:
            _remove_leftovers(parent, path.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
        try:
            yield tmp
            os.chmod(tmp, _default_mode(directory=True))
            for f in tmp.iterdir():  # some writers (safetensors) create their files 0600
                if f.is_file():
                    os.chmod(f, _default_mode())
            _fsync_tree(tmp)  # the data on disk before the name points at them
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not os.path.lexists(path):
            os.replace(tmp, path)
            fsync_dir(parent)
            return
        if not exchange(tmp, path):
            # No atomic exchange here: the old directory goes aside under the temporary
            # name's sibling, then the new one comes in (a moment with nothing at path).
            old = tmp.with_name(tmp.name[:-len(".tmp")] + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            fsync_dir(parent)
            shutil.rmtree(old, ignore_errors=True)
            return
        fsync_dir(parent)  # the exchange on disk before the old directory goes
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old directory


# ---------------------------------------------------------------------------------------
# reading a directory that a saver may replace meanwhile
class DirReader:
    """Reads the files of one directory through one open handle of it (``openat``), so
    that every file read comes from the same directory even if another is swapped in at
    its path meanwhile."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    def names(self) -> set[str]:
        """The names in the directory."""
        return set(os.listdir(self._fd if self._fd is not None else self.path))

    def read(self, name: str) -> bytes:
        """The bytes of the regular file ``name`` (a single name, no ``/``).

        Raises :class:`FileNotFoundError` for a missing file and :class:`OSError` for a
        name that is not a regular file (a FIFO, a device: never opened for reading, so
        nothing blocks).
        """
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise OSError(errno.EINVAL, "not a file name in the directory", name)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        if self._fd is not None:
            fd = os.open(name, flags, dir_fd=self._fd)
        else:
            fd = os.open(self.path / name, flags)
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise OSError(errno.EINVAL, f"is {_kind(mode)}, not a regular file",
                              str(self.path / name))
            return fh.read()


def _same_dir(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the directory open as ``fd``."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def read_dir_consistently(path: str | os.PathLike, read: Callable[[DirReader], T], *,
                          attempts: int = 20) -> T:
    """``read(reader)`` over the directory ``path``, where every file comes from one
    version of it.

    When a saver replaces the directory during the read (a file vanished as the old
    version was removed, or ``path`` names another directory by the end), the read starts
    over on the new one, up to ``attempts`` times; a file missing from a directory that
    was not replaced raises :class:`FileNotFoundError` at once. Where directories cannot be
    opened (Windows) the files are read by path.
    """
    path = Path(path)
    if os.open not in os.supports_dir_fd or not hasattr(os, "O_DIRECTORY"):
        return read(DirReader(path, None))
    for attempt in range(attempts):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                result = read(DirReader(path, fd))
            except FileNotFoundError:
                if _same_dir(path, fd) or attempt == attempts - 1:
                    raise
                continue  # replaced underneath: read the new one
            if _same_dir(path, fd) or attempt == attempts - 1:
                return result
            # a complete, consistent older version: read the one now in place
        finally:
            os.close(fd)
    raise AssertionError("unreachable")  # pragma: no cover
