"""recforge._fs: atomic, durable writes of files and directories, outputs that are not
regular files (standard output, devices, FIFOs, symlinks), and reads of a directory that
a saver replaces meanwhile."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recforge import _fs

REPO = Path(__file__).resolve().parents[1]
TMPFS = Path("/dev/shm")


def _dirs_with(root: Path, **contents: str) -> list[Path]:
    out = []
    for name, text in contents.items():
        d = root / name
        d.mkdir()
        (d / "f").write_text(text)
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------
# directories
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
@pytest.mark.parametrize("where", ["tmp_path", "tmpfs"])
def test_exchange_swaps_two_directories_in_one_step_here_and_on_tmpfs(tmp_path, where):
    """renameat2(RENAME_EXCHANGE) works on the file system the tests run on and on tmpfs:
    atomic_dir never falls back to the rename-away-then-in with a moment of nothing."""
    import tempfile

    if where == "tmpfs":
        if not (TMPFS.is_dir() and os.access(TMPFS, os.W_OK)):
            pytest.skip("no writable /dev/shm")
        root = Path(tempfile.mkdtemp(dir=TMPFS))
    else:
        root = tmp_path
    try:
        a, b = _dirs_with(root, a="old", b="new")
        assert _fs.exchange(b, a) is True
        assert (a / "f").read_text() == "new" and (b / "f").read_text() == "old"
        with pytest.raises(FileNotFoundError):
            _fs.exchange(root / "missing", a)
    finally:
        if where == "tmpfs":
            import shutil

            shutil.rmtree(root)


def test_atomic_dir_swaps_with_no_moment_without_the_directory(tmp_path, monkeypatch):
    """The old way renamed the old directory away and then the new one in: in between
    nothing was at the path (a reload then failed). Now no rename ever leaves the path
    empty: the directory is exchanged."""
    target = tmp_path / "m"
    with _fs.atomic_dir(target) as d:
        (d / "f").write_text("v1")
    seen = []
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        seen.append((Path(src).name, Path(dst).name))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", replace)
    with _fs.atomic_dir(target) as d:
        (d / "f").write_text("v2")
        assert (target / "f").read_text() == "v1"
    assert (target / "f").read_text() == "v2"
    assert seen == []  # no rename of the old directory away
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # nothing left beside it


def test_atomic_dir_syncs_the_files_the_new_directory_and_then_the_parent(tmp_path,
                                                                          monkeypatch):
    """A power loss after a save must leave the old model or the new one, whole: every
    file and the new directory reach the disk before the exchange, the parent after."""
    target = tmp_path / "m"
    with _fs.atomic_dir(target) as d:
        (d / "f").write_text("v1")
    events: list[tuple[str, str]] = []
    real_fsync, real_exchange = os.fsync, _fs.exchange

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def exchange(a, b):
        events.append(("exchange", str(b)))
        return real_exchange(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(_fs, "exchange", exchange)
    with _fs.atomic_dir(target) as d:
        (d / "f").write_text("v2")
        (d / "g").write_text("v2")
        tmp = str(d)
    kinds = [e[0] for e in events]
    swap = kinds.index("exchange")
    before = {p for k, p in events[:swap]}
    assert {f"{tmp}/f", f"{tmp}/g", tmp} <= before  # the files, then their directory
    assert kinds.index("fsync") < swap
    assert events[swap + 1:] == [("fsync", str(tmp_path))]  # then the parent


def test_the_next_save_removes_what_a_killed_saver_left_and_nothing_else(tmp_path):
    """A saver killed between creating its temporary directory and the exchange leaves a
    hidden .NAME.XXXXXXXX.tmp (or .old, from earlier versions); the next save of that
    name removes it, under the parent's lock. Other names stay."""
    leftovers = [".m.abcd_123.tmp", ".m.zzzzzzzz.old"]
    kept = [".m.notes.tmp", ".other.abcdefgh.tmp", ".m.abcdefgh.tmp.bak", "m.abcdefgh.tmp"]
    for name in leftovers + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("x")
    with _fs.atomic_dir(tmp_path / "m") as d:
        (d / "f").write_text("v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["m"])


def test_atomic_dir_replaces_the_directory_a_symlink_names_and_keeps_the_link(tmp_path):
    real = tmp_path / "versions" / "current"
    with _fs.atomic_dir(real) as d:
        (d / "f").write_text("v1")
    link = tmp_path / "model"
    link.symlink_to(real)
    with _fs.atomic_dir(link) as d:
        (d / "f").write_text("v2")
    assert link.is_symlink() and (link / "f").read_text() == "v2"
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError), _fs.atomic_dir(tmp_path / "file"):
        pass
    assert (tmp_path / "file").read_text() == "x"


# ---------------------------------------------------------------------------------------
# reading a directory that is being replaced
def _swap_in(target: Path, text: str) -> None:
    with _fs.atomic_dir(target) as d:
        (d / "a").write_text(text)
        (d / "b").write_text(text)


def test_a_read_overtaken_by_a_save_starts_again_on_the_new_directory(tmp_path):
    """A save lands between the two files of a read: the old directory's files vanish
    (the saver removes it) and the read starts again on the new one; never a mix."""
    target = tmp_path / "m"
    _swap_in(target, "v1")
    attempts: list[str] = []

    def read(reader: _fs.DirReader) -> tuple[str, str]:
        a = reader.read("a").decode()
        attempts.append(a)
        if len(attempts) == 1:
            _swap_in(target, "v2")
        return a, reader.read("b").decode()

    assert _fs.read_dir_consistently(target, read) == ("v2", "v2")
    assert attempts == ["v1", "v2"]


def test_a_complete_read_of_a_replaced_directory_is_read_again(tmp_path):
    """The old directory still whole (swapped out, not yet removed): the read finishes on
    it, sees that the path names another directory now, and reads the new one."""
    target = tmp_path / "m"
    _swap_in(target, "v1")
    new = tmp_path / "new"
    new.mkdir()
    for f in ("a", "b"):
        (new / f).write_text("v2")
    reads: list[tuple[str, str]] = []

    def read(reader: _fs.DirReader) -> tuple[str, str]:
        a = reader.read("a").decode()
        if not reads:
            assert _fs.exchange(new, target)
        got = (a, reader.read("b").decode())
        reads.append(got)
        return got

    assert _fs.read_dir_consistently(target, read) == ("v2", "v2")
    assert reads == [("v1", "v1"), ("v2", "v2")]


def test_a_file_missing_from_a_directory_nobody_replaced_is_an_error_at_once(tmp_path):
    target = tmp_path / "m"
    _swap_in(target, "v1")
    calls = []

    def read(reader: _fs.DirReader) -> bytes:
        calls.append(1)
        return reader.read("nosuch")

    with pytest.raises(FileNotFoundError):
        _fs.read_dir_consistently(target, read)
    assert len(calls) == 1


def test_reader_refuses_names_outside_the_directory_and_files_that_are_not_regular(
        tmp_path):
    target = tmp_path / "m"
    _swap_in(target, "v1")
    os.mkfifo(target / "fifo")  # reading it would block for ever
    (target / "up").symlink_to(tmp_path)

    def read(name: str):
        return _fs.read_dir_consistently(target, lambda r: r.read(name))

    for name in ("../m/a", "/etc/hostname", "", "..", "fifo", "up"):
        with pytest.raises(OSError):
            read(name)
    assert read("a") == b"v1"


# ---------------------------------------------------------------------------------------
# outputs that are not regular files
def test_a_symlink_to_a_character_device_is_written_to_and_stays_a_symlink(tmp_path):
    """`--out /dev/stdout` (as root) replaced the device link with a regular file."""
    link = tmp_path / "out"
    link.symlink_to("/dev/null")
    _fs.atomic_write_text(link, "recommendations\n")
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary file left


def test_a_fifo_is_written_to_not_renamed_over(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    _fs.atomic_write_text(fifo, "through the pipe\n")
    reader.join(10)
    assert got == [b"through the pipe\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_proc_link_is_written_through_its_open_file(tmp_path):
    """/dev/stdout is a link to /proc/self/fd/1; with stdout redirected to a file the
    file is written through that descriptor (as any program does), not renamed over."""
    target = tmp_path / "redirected.txt"
    with open(target, "w") as fh:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{fh.fileno()}")
        inode = os.stat(target).st_ino
        assert _fs.output_target(link)[0] == "stream"
        _fs.atomic_write_text(link, "rows\n")
    assert target.read_text() == "rows\n" and os.stat(target).st_ino == inode
    assert link.is_symlink()


def test_a_symlink_to_a_regular_file_stays_a_symlink_and_its_target_is_replaced(tmp_path):
    target = tmp_path / "data" / "recs.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "recs.csv"
    link.symlink_to(target)
    _fs.atomic_write_text(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"
    dangling = tmp_path / "later.csv"
    dangling.symlink_to(tmp_path / "data" / "later.csv")
    _fs.atomic_write_text(dangling, "made\n")
    assert dangling.is_symlink() and (tmp_path / "data" / "later.csv").read_text() == "made\n"


def test_dash_is_standard_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # (where a file named '-' used to be written)
    buf = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buf, encoding="utf-8"))
    _fs.atomic_write_text("-", "to stdout\n")
    assert buf.getvalue() == b"to stdout\n"
    assert list(tmp_path.iterdir()) == []


def test_directories_sockets_and_other_files_are_refused(tmp_path):
    with pytest.raises(IsADirectoryError):
        _fs.atomic_write_text(tmp_path, "x")
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        with pytest.raises(OSError, match="socket"):
            _fs.atomic_write_text(sock_path, "x")
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    for bad in ("-", sock_path):
        with pytest.raises(OSError):
            _fs.check_output_dir(bad)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotADirectoryError, match="FIFO"):
        _fs.check_output_dir(fifo)
    _fs.check_output_dir(tmp_path / "new")
    _fs.check_output_file("-")
    _fs.check_output_file(fifo)


def test_atomic_file_writes_are_still_synced_and_atomic(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"),
                                                     real_replace(a, b)))
    _fs.atomic_write_text(tmp_path / "f.txt", "x")
    assert events == ["fsync", "replace", "fsync"]
    assert (tmp_path / "f.txt").read_text() == "x"


# ---------------------------------------------------------------------------------------
# through the CLI
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from recforge import Interactions
    from recforge.models import create_model

    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    u, i = np.nonzero(rng.random((12, 10)) < 0.4)
    frame = pd.DataFrame({"user": u, "item": i, "rating": rng.integers(1, 6, len(u))})
    frame.to_csv(root / "ratings.csv", index=False)
    data = Interactions.from_frame(frame)
    create_model("mf", embedding_dim=4, epochs=1, device="cpu").fit(data).save(root / "mf")
    frame[["user", "item"]].to_csv(root / "pairs.csv", index=False)
    return root


def _cli(args: list) -> tuple[int, bytes, str]:
    """Run the CLI in this process with a real binary standard output."""
    from typer.testing import CliRunner

    from recforge.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.stdout_bytes, res.stderr


def test_out_dash_writes_to_standard_output_only_the_data(saved_model, tmp_path,
                                                          monkeypatch):
    """`--out -` created a file named '-'. Now the data go to standard output, alone (the
    messages go to standard error), for every command that writes a file."""
    monkeypatch.chdir(tmp_path)
    root = saved_model
    code, out, err = _cli(["recommend", "--model", root / "mf", "--k", 3, "--out", "-"])
    assert code == 0, err
    recs = pd.read_csv(io.BytesIO(out))
    assert list(recs.columns) == ["user", "item", "rank", "score"] and 0 < len(recs) <= 36
    assert f"wrote {len(recs)} recommendations" in err
    code, out, err = _cli(["predict", "--model", root / "mf", "--pairs", root / "pairs.csv",
                           "--out", "-"])
    assert code == 0, err
    assert list(pd.read_csv(io.BytesIO(out)).columns) == ["user", "item", "prediction"]
    code, out, err = _cli(["evaluate", "--model", root / "mf", "--train",
                           root / "ratings.csv", "--test", root / "ratings.csv",
                           "--metrics", "rmse", "--out", "-"])
    assert code == 0, err
    assert json.loads(out)["model"] == "mf" and "RMSE" in err.upper()
    code, out, err = _cli(["datasets", "generate", "-", "--users", 20, "--items", 30,
                           "--interactions", 100])
    assert code == 0, err
    assert len(pd.read_parquet(io.BytesIO(out))) == 100
    assert not (tmp_path / "-").exists()


def test_out_symlink_to_a_device_and_directory_outputs_given_one(saved_model, tmp_path,
                                                                 capsys, monkeypatch):
    """A symlink to a character device is written to and kept; a directory output given
    a device, a FIFO or '-' is a clear one-line error."""
    from recforge.cli import main

    monkeypatch.chdir(tmp_path)
    root = saved_model
    link = tmp_path / "stdout"
    link.symlink_to("/dev/null")
    code, _, err = _cli(["recommend", "--model", root / "mf", "--k", 3, "--out", link])
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    config = tmp_path / "exp.yaml"
    config.write_text("name: x\n")
    for out, why in ((link, "character device"), (fifo, "FIFO"), ("-", "standard output")):
        for args in (["train", "pop", "--data", root / "ratings.csv", "--out", out],
                     ["train", "mf", "--data", root / "ratings.csv", "--out", "m",
                      "--checkpoint-dir", out],
                     ["run", config, "--out", out], ["quickstart", "--out", out]):
            assert main([str(a) for a in args]) == 2
            err = capsys.readouterr().err
            assert why in err and err.count("\n") == 1, (args, err)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert not Path("-").exists()
