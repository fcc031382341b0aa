"""Downloads without the internet: tiny fake archives served from file:// URLs and from a
local HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recforge.data.download import cache_dir, extract_zip, fetch, file_digest
from recforge.data.movielens import (
    MovieLensSpec,
    download_movielens,
    get_spec,
    load_movielens,
    movielens_cache_dir,
)
from recforge.errors import DataError

FLAGS = ["0"] * 19


def _flags(*genres: int) -> str:
    f = list(FLAGS)
    for g in genres:
        f[g] = "1"
    return "|".join(f)


FAKE_100K = {
    "u.data": "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250951\n"
              "3\t30\t1\t881250952\n",
    "u.item": f"10|Fake Story (1995)|01-Jan-1995||http://x|{_flags(3, 5)}\n"
              f"20|Another One (1997) |01-Jan-1997||http://x|{_flags(1)}\n"
              f"30|No Year|||http://x|{_flags(0)}\n",
    "u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n",
    "u.genre": "unknown|0\nAction|1\nAdventure|2\nAnimation|3\nChildren's|4\nComedy|5\n"
               "Crime|6\nDocumentary|7\nDrama|8\nFantasy|9\nFilm-Noir|10\nHorror|11\n"
               "Musical|12\nMystery|13\nRomance|14\nSci-Fi|15\nThriller|16\nWar|17\n"
               "Western|18\n\n",
}


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (none when it does not exist)."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RECFORGE_DATA_DIR", raising=False)
    monkeypatch.setenv("RECFORGE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def served(tmp_path) -> Path:
    """The directory whose files the tests download."""
    d = tmp_path / "served"
    d.mkdir()
    return d


@pytest.fixture
def fake_zip(served) -> Path:
    """``served/ml-100k.zip`` holding a three-user ``ml-100k/`` folder."""
    path = served / "ml-100k.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in FAKE_100K.items():
            zf.writestr(f"ml-100k/{name}", text.encode("latin-1"))
    return path


@pytest.fixture
def spec(fake_zip) -> MovieLensSpec:
    """The ml-100k spec with the fake archive's checksums (the registry is left as is)."""
    return dataclasses.replace(
        get_spec("ml-100k"), md5=file_digest(fake_zip, "md5"),
        file_sha256={"u.data": hashlib.sha256(FAKE_100K["u.data"].encode()).hexdigest()})


class _Server:
    def __init__(self, directory: Path):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)

    def count(self, name: str) -> int:
        return sum(r.endswith(name) for r in self.requests)


@pytest.fixture
def server(served) -> Iterator[_Server]:
    srv = _Server(served)
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


# ---------------------------------------------------------------------------------------
# cache_dir
def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("RECFORGE_CACHE_DIR", str(tmp_path / "rc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "rc"
    monkeypatch.delenv("RECFORGE_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "recforge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "recforge"
    assert not (tmp_path / "home").exists()  # not created


# ---------------------------------------------------------------------------------------
# fetch
def test_fetch_file_url(fake_zip, tmp_path):
    dest = tmp_path / "dest"
    md5 = file_digest(fake_zip, "md5")
    out = fetch(fake_zip.as_uri(), dest, md5=md5, progress=False)
    assert out == dest / "ml-100k.zip"
    assert out.read_bytes() == fake_zip.read_bytes()
    assert _files(dest) == [out]  # no temporary file left


def test_fetch_http_with_sha256_and_filename(fake_zip, server, tmp_path):
    sha = file_digest(fake_zip, "sha256")
    out = fetch(f"{server.url}/ml-100k.zip", tmp_path / "d", filename="x.zip",
                sha256=sha.upper(), progress=False)
    assert out.name == "x.zip" and file_digest(out) == sha
    assert server.count("ml-100k.zip") == 1


@pytest.mark.parametrize("scheme", ["file", "http"])
def test_fetch_checksum_mismatch_leaves_nothing(fake_zip, server, tmp_path, scheme):
    url = fake_zip.as_uri() if scheme == "file" else f"{server.url}/ml-100k.zip"
    dest = tmp_path / "dest"
    actual = file_digest(fake_zip, "md5")
    with pytest.raises(DataError) as info:
        fetch(url, dest, md5="0" * 32, progress=False)
    msg = str(info.value)
    assert url in msg and "0" * 32 in msg and actual in msg and "md5" in msg
    assert _files(dest) == []


def test_fetch_replaces_an_existing_file_only_when_correct(fake_zip, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "ml-100k.zip").write_bytes(b"old")
    with pytest.raises(DataError):
        fetch(fake_zip.as_uri(), dest, sha256="f" * 64, progress=False)
    assert (dest / "ml-100k.zip").read_bytes() == b"old"
    fetch(fake_zip.as_uri(), dest, progress=False)
    assert (dest / "ml-100k.zip").read_bytes() == fake_zip.read_bytes()


def test_fetch_http_404(server, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        fetch(f"{server.url}/missing.zip", dest, progress=False)
    msg = str(info.value)
    assert "HTTP 404" in msg and f"{server.url}/missing.zip" in msg
    assert "RECFORGE_DATA_DIR" in msg and "data_dir=" in msg
    assert _files(dest) == []


def test_fetch_unreachable_and_missing(tmp_path):
    with pytest.raises(DataError, match="RECFORGE_DATA_DIR"):
        fetch((tmp_path / "absent.zip").as_uri(), tmp_path / "d", progress=False)
    # a port nobody listens on: connection refused, not a hang
    with pytest.raises(DataError, match="failed.*RECFORGE_DATA_DIR"):
        fetch("http://127.0.0.1:9/x.zip", tmp_path / "d", progress=False, timeout=5)
    with pytest.raises(DataError, match="unsupported URL scheme 'ftp'"):
        fetch("ftp://example.org/x.zip", tmp_path / "d")
    with pytest.raises(DataError, match="pass filename="):
        fetch("http://127.0.0.1:9/", tmp_path / "d")
    with pytest.raises(DataError, match="plain file name"):
        fetch("http://127.0.0.1:9/x.zip", tmp_path / "d", filename="../x.zip")
    assert _files(tmp_path / "d") == []


# ---------------------------------------------------------------------------------------
# extract_zip
def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(zipfile.ZipInfo(name), text)
    return path


@pytest.mark.parametrize("evil", ["../evil.txt", "data/../../evil.txt", "/tmp/evil.txt",
                                  "C:/evil.txt", "..\\evil.txt"])
def test_extract_zip_refuses_zip_slip(tmp_path, evil):
    archive = _zip(tmp_path / "evil.zip", {"data/ok.txt": "ok", evil: "pwned"})
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DataError, match="refusing to extract member"):
        extract_zip(archive, dest)
    assert _files(tmp_path / "out") == []
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_extract_zip_atomic(tmp_path, fake_zip):
    dest = tmp_path / "dest"
    assert extract_zip(fake_zip, dest) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["ml-100k"]
    assert (dest / "ml-100k" / "u.data").read_text() == FAKE_100K["u.data"]

    # a verify hook that rejects the content leaves the old copy in place
    (dest / "ml-100k" / "marker").write_text("old copy")

    def reject(tmp: Path) -> None:
        assert (tmp / "ml-100k" / "u.item").is_file()
        raise DataError("rejected")

    with pytest.raises(DataError, match="rejected"):
        extract_zip(fake_zip, dest, verify=reject)
    assert (dest / "ml-100k" / "marker").read_text() == "old copy"
    assert sorted(p.name for p in dest.iterdir()) == ["ml-100k"]  # no temporary dirs

    # success replaces the old folder as a whole
    extract_zip(fake_zip, dest)
    assert not (dest / "ml-100k" / "marker").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["ml-100k"]


def test_extract_zip_bad_archive(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip")
    with pytest.raises(DataError, match="not a valid zip archive"):
        extract_zip(bad, tmp_path / "dest")
    with pytest.raises(DataError, match="archive not found"):
        extract_zip(tmp_path / "none.zip", tmp_path / "dest")


# ---------------------------------------------------------------------------------------
# download_movielens
def test_download_over_http(spec, server, tmp_path):
    cache = tmp_path / "c"
    folder = download_movielens(spec, cache=cache, url=f"{server.url}/ml-100k.zip",
                                progress=False)
    assert folder == cache / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FAKE_100K)
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k", "ml-100k.zip"]
    data = load_movielens(spec, data_dir=cache, download=False)
    assert len(data.interactions) == 4 and data.interactions.n_users == 3
    assert data.items.loc[10].tolist() == ["Fake Story", 1995, ["Animation", "Comedy"]]
    assert data.items.loc[20, "title"] == "Another One"
    assert data.users.loc[3, "occupation"] == "writer"


def test_download_from_file_url(spec, fake_zip, tmp_path):
    folder = download_movielens(spec, cache=tmp_path / "c", url=fake_zip.as_uri(),
                                progress=False)
    assert (folder / "u.user").read_text() == FAKE_100K["u.user"]


def test_download_checksum_mismatch_leaves_nothing(spec, server, tmp_path):
    cache = tmp_path / "c"
    wrong = dataclasses.replace(spec, md5="0" * 32)
    with pytest.raises(DataError, match=r"checksum mismatch .* expected md5 0{32}, got "):
        download_movielens(wrong, cache=cache, url=f"{server.url}/ml-100k.zip",
                           progress=False)
    assert _files(cache) == []


def test_download_file_sha256_mismatch_leaves_nothing(spec, server, tmp_path):
    cache = tmp_path / "c"
    wrong = dataclasses.replace(spec, file_sha256={"u.data": "0" * 64})
    with pytest.raises(DataError, match=r"u\.data: sha256 mismatch"):
        download_movielens(wrong, cache=cache, url=f"{server.url}/ml-100k.zip",
                           progress=False)
    assert _files(cache) == []
    # the real registry entry still pins the real files' checksums
    assert get_spec("ml-100k").file_sha256["u.data"].startswith("06416e59")


def test_download_archive_without_the_folder(served, server, tmp_path):
    _zip(served / "ml-100k.zip", {"other/u.data": "1\t1\t5\t1\n"})
    spec = dataclasses.replace(get_spec("ml-100k"), md5=None, file_sha256={})
    with pytest.raises(DataError, match=r"expected ml-100k/u\.data, found \['other'\]"):
        download_movielens(spec, cache=tmp_path / "c", url=f"{server.url}/ml-100k.zip",
                           progress=False)
    assert _files(tmp_path / "c") == []


def test_download_http_404(spec, server, tmp_path):
    with pytest.raises(DataError, match=r"HTTP 404.*RECFORGE_DATA_DIR"):
        download_movielens(spec, cache=tmp_path / "c", url=f"{server.url}/nope.zip",
                           progress=False)
    assert _files(tmp_path / "c") == []


def test_cache_reuse_and_force(spec, server, tmp_path):
    cache = tmp_path / "c"
    url = f"{server.url}/ml-100k.zip"
    first = download_movielens(spec, cache=cache, url=url, progress=False)
    assert server.count("ml-100k.zip") == 1
    assert download_movielens(spec, cache=cache, url=url, progress=False) == first
    assert server.count("ml-100k.zip") == 1  # the folder is reused

    # without the folder, the cached zip (right md5) is extracted again, not downloaded
    (first / "u.data").unlink()
    assert download_movielens(spec, cache=cache, url=url, progress=False) == first
    assert (first / "u.data").is_file()
    assert server.count("ml-100k.zip") == 1

    assert download_movielens(spec, cache=cache, url=url, force=True, progress=False) == first
    assert server.count("ml-100k.zip") == 2


def test_corrupt_cached_zip_is_downloaded_again(spec, server, tmp_path):
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / "ml-100k.zip").write_bytes(b"truncated")
    folder = download_movielens(spec, cache=cache, url=f"{server.url}/ml-100k.zip",
                                progress=False)
    assert server.count("ml-100k.zip") == 1 and (folder / "u.data").is_file()


def test_recforge_cache_dir_is_honoured(spec, server, monkeypatch, tmp_path):
    monkeypatch.setenv("RECFORGE_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert movielens_cache_dir() == tmp_path / "elsewhere" / "movielens"
    folder = download_movielens(spec, url=f"{server.url}/ml-100k.zip", progress=False)
    assert folder == tmp_path / "elsewhere" / "movielens" / "ml-100k"
    assert (folder / "u.data").is_file()


def test_load_downloads_into_the_cache(spec, server, monkeypatch, tmp_path):
    monkeypatch.setenv("RECFORGE_CACHE_DIR", str(tmp_path / "rc"))
    mirrored = dataclasses.replace(spec, url=f"{server.url}/ml-100k.zip")
    with pytest.raises(DataError, match="not found locally"):
        load_movielens(mirrored, download=False)
    assert server.count("ml-100k.zip") == 0
    data = load_movielens(mirrored, progress=False)
    assert data.path == tmp_path / "rc" / "movielens" / "ml-100k"
    assert len(data.interactions) == 4
    load_movielens(mirrored, progress=False)  # found in the cache now
    assert server.count("ml-100k.zip") == 1


def _damage_deflate(path: Path, member: str = "ml-100k/u.data") -> None:
    """Give ``member``'s deflate stream an invalid block type (the central directory stays
    intact, so only reading the member fails, with zlib.error rather than BadZipFile)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start] |= 0x06
    path.write_bytes(bytes(data))


def test_extract_zip_damaged_deflate_stream(tmp_path, fake_zip):
    _damage_deflate(fake_zip)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="corrupt zip archive"):
        extract_zip(fake_zip, dest)
    assert _files(dest) == []


def test_corrupt_deflate_cached_zip_is_downloaded_again(fake_zip, server, tmp_path):
    spec = dataclasses.replace(get_spec("ml-100k"), md5=None, file_sha256={})
    cache = tmp_path / "c"
    cache.mkdir()
    bad = cache / "ml-100k.zip"
    bad.write_bytes(fake_zip.read_bytes())
    _damage_deflate(bad)
    folder = download_movielens(spec, cache=cache, url=f"{server.url}/ml-100k.zip",
                                progress=False)
    assert server.count("ml-100k.zip") == 1
    assert (folder / "u.data").read_text() == FAKE_100K["u.data"]


def test_corrupt_deflate_download_leaves_nothing(served, fake_zip, server, tmp_path):
    spec = dataclasses.replace(get_spec("ml-100k"), md5=None, file_sha256={})
    _damage_deflate(fake_zip)
    with pytest.raises(DataError, match="corrupt zip archive"):
        download_movielens(spec, cache=tmp_path / "c", url=f"{server.url}/ml-100k.zip",
                           progress=False)
    assert _files(tmp_path / "c") == []


# ---------------------------------------------------------------------------------------
# bounds on what an archive may unpack to, and members that are not plain files
def _bomb(path: Path, size: int = 8 << 20, name: str = "ml-100k/u.data") -> Path:
    """A zip whose one member is ``size`` zero bytes (deflate packs them ~1,000 times)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, b"\0" * size)
    return path


def _set_sizes(path: Path, *, file_size: int | None = None,
               compress_size: int | None = None) -> Path:
    """Rewrite the sizes the local and the central header declare for the first member."""
    import struct

    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    for offset, value in ((18, compress_size), (22, file_size)):  # local header fields
        if value is not None:
            struct.pack_into("<I", data, offset, value)
            struct.pack_into("<I", data, central + offset + 2, value)
    path.write_bytes(bytes(data))
    return path


def test_extract_zip_refuses_a_high_ratio_member_before_writing(tmp_path):
    archive = _bomb(tmp_path / "bomb.zip")
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=r"bomb.zip: refusing to extract member 'ml-100k/u.data'"
                                        r": it declares 8,388,608 bytes from .* ratio above "
                                        "100"):
        extract_zip(archive, dest)
    assert not dest.exists()  # refused before anything was written
    # a member that compresses like real data passes, and a looser ratio lets the bomb in
    assert extract_zip(archive, dest, max_ratio=10_000) == dest
    assert (dest / "ml-100k" / "u.data").stat().st_size == 8 << 20


def test_extract_zip_refuses_more_than_max_bytes_before_writing(tmp_path, fake_zip):
    total = sum(len(t) for t in FAKE_100K.values())
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=rf"would unpack to more than {total - 1:,} bytes"):
        extract_zip(fake_zip, dest, max_bytes=total - 1)
    assert not dest.exists()
    assert extract_zip(fake_zip, dest, max_bytes=total) == dest


def test_extract_zip_counts_the_bytes_written_not_the_header(tmp_path, monkeypatch):
    """With the header checks gone (a header that lies about everything), the bytes counted
    as they are written still stop the bomb at the ceiling."""
    import recforge.data.download as download

    monkeypatch.setattr(download, "_check_declared_sizes", lambda *a, **k: None)
    archive = _bomb(tmp_path / "bomb.zip", size=32 << 20)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=r"more than 4,194,304 bytes unpacked \(max_bytes\), "
                                        "at member 'ml-100k/u.data'"):
        extract_zip(archive, dest, max_bytes=4 << 20, max_ratio=10_000)
    assert _files(dest) == []
    with pytest.raises(DataError, match=r"member 'ml-100k/u.data': more than [\d,]+ bytes "
                                        r"from [\d,]+ compressed, a ratio above 100"):
        extract_zip(archive, dest)
    assert _files(dest) == []


def test_extract_zip_refuses_a_lying_header(tmp_path):
    # declares 1,000 bytes where 8 MiB are packed: never more than declared is written,
    # and the short read fails its CRC
    small = _set_sizes(_bomb(tmp_path / "small.zip"), file_size=1000)
    with pytest.raises(DataError, match="small.zip: corrupt zip archive"):
        extract_zip(small, tmp_path / "dest")
    assert _files(tmp_path / "dest") == []
    # declares a compressed size that makes the ratio look sane: the archive's real size
    # gives it away
    packed = _set_sizes(_bomb(tmp_path / "packed.zip"), compress_size=1 << 20)
    with pytest.raises(DataError, match=r"packed.zip: refusing to extract member .*ratio "
                                        "above 100"):
        extract_zip(packed, tmp_path / "dest")
    assert _files(tmp_path / "dest") == []


def test_extract_zip_refuses_symlinks_and_repeated_members(tmp_path):
    import stat

    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        zf.writestr("data/ok.txt", "ok")
        info = zipfile.ZipInfo("data/passwd")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match=r"member 'data/passwd': it is a symbolic link"):
        extract_zip(link, tmp_path / "dest")
    fifo = tmp_path / "fifo.zip"
    with zipfile.ZipFile(fifo, "w") as zf:
        info = zipfile.ZipInfo("data/pipe")
        info.external_attr = (stat.S_IFIFO | 0o644) << 16
        zf.writestr(info, "")
    with pytest.raises(DataError, match=r"member 'data/pipe': it is not a regular file"):
        extract_zip(fifo, tmp_path / "dest")
    twice = tmp_path / "twice.zip"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(twice, "w") as zf:
        zf.writestr("data/a.txt", "first")
        zf.writestr("data/a.txt", "second")
    with pytest.raises(DataError, match=r"member 'data/a.txt': the archive holds it twice"):
        extract_zip(twice, tmp_path / "dest")
    assert _files(tmp_path / "dest") == []


@pytest.mark.parametrize("member", ["../evil.txt", "ml-100k/../../evil.txt", "/tmp/evil.txt"])
def test_download_refuses_a_served_zip_slip(served, server, tmp_path, member):
    archive = _zip(served / "ml-100k.zip", {"ml-100k/u.data": FAKE_100K["u.data"],
                                            member: "pwned"})
    spec = dataclasses.replace(get_spec("ml-100k"), md5=file_digest(archive, "md5"),
                               file_sha256={})
    cache = tmp_path / "cache" / "c"
    with pytest.raises(DataError, match="refusing to extract member"):
        download_movielens(spec, cache=cache, url=f"{server.url}/ml-100k.zip", progress=False)
    assert _files(tmp_path / "cache") == [] and not (tmp_path / "evil.txt").exists()


def test_download_is_bounded_by_the_datasets_ceiling(served, server, tmp_path):
    archive = _bomb(served / "ml-100k.zip", size=2 << 20)
    spec = dataclasses.replace(get_spec("ml-100k"), md5=file_digest(archive, "md5"),
                               file_sha256={}, max_extracted_bytes=1 << 20)
    with pytest.raises(DataError, match=r"would unpack to more than 1,048,576 bytes"):
        download_movielens(spec, cache=tmp_path / "c", url=f"{server.url}/ml-100k.zip",
                           progress=False)
    assert _files(tmp_path / "c") == []
    for spec in (get_spec(n) for n in ("ml-100k", "ml-1m", "ml-latest-small", "ml-32m")):
        assert spec.max_extracted_bytes <= 4 << 30


# ---------------------------------------------------------------------------------------
# saying exactly what was verified
def _cli_download(capsys, monkeypatch, spec: MovieLensSpec, url: str, *args: str):
    import recforge.data.movielens as movielens
    from recforge.cli import main

    served_spec = dataclasses.replace(spec, url=url)
    monkeypatch.setattr(movielens, "get_spec", lambda name: served_spec)
    try:
        code = main(["datasets", "download", spec.name, *args])
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, " ".join(out.out.split()), out.err


def test_datasets_download_says_what_was_verified(served, server, tmp_path, capsys,
                                                  monkeypatch):
    from recforge.data.movielens import fetch_movielens

    # like ml-32m before its md5 was pinned: only the archive's own checksums.txt
    ratings = "userId,movieId,rating,timestamp\n1,10,4,5\n"
    archive = _zip(served / "ml-32m.zip", {
        "ml-32m/ratings.csv": ratings,
        "ml-32m/checksums.txt": f"{_md5(ratings.encode())}  ratings.csv\n"})
    own = dataclasses.replace(get_spec("ml-32m"), md5=None)
    code, out, err = _cli_download(capsys, monkeypatch, own, f"{server.url}/ml-32m.zip")
    assert code == 0, err
    assert "verified: md5 of 1 files against the archive's own checksums.txt" in out
    assert "sha256" not in out and "pinned md5" not in out
    assert "warning: nothing was checked against a checksum recforge pins" in out
    # already there: nothing is downloaded or checked, and it says so
    code, out, _ = _cli_download(capsys, monkeypatch, own, f"{server.url}/ml-32m.zip")
    assert code == 0 and "is already in" in out and "not downloaded or checked again" in out
    # the pinned md5 of the zip
    pinned = dataclasses.replace(own, md5=file_digest(archive, "md5"))
    code, out, err = _cli_download(capsys, monkeypatch, pinned, f"{server.url}/ml-32m.zip",
                                   "--force")
    assert code == 0, err
    assert "verified: pinned md5 of the zip; md5 of 1 files against the archive's" in out
    assert "warning" not in out
    # nothing at all
    _zip(served / "ml-32m.zip", {"ml-32m/ratings.csv": ratings})
    got = fetch_movielens(own, cache=tmp_path / "n", url=f"{server.url}/ml-32m.zip",
                          progress=False)
    assert got.verified is not None and not got.verified.pinned
    assert got.verified.describe().startswith("nothing: no checksum is pinned")
    # and what the registry promises
    assert get_spec("ml-32m").checks.startswith("pinned md5 of the zip; md5 of the files")
    assert get_spec("ml-latest-small").checks == ("pinned sha256 of ratings.csv, movies.csv, "
                                                  "tags.csv")


def test_fetch_refuses_more_than_max_bytes(served, server, tmp_path):
    (served / "big.bin").write_bytes(b"x" * 3000)
    with pytest.raises(DataError, match=r"big.bin: it announces 3,000 bytes, more than the "
                                        "limit of 1,000"):
        fetch(f"{server.url}/big.bin", tmp_path / "d", max_bytes=1000, progress=False)
    assert _files(tmp_path / "d") == []
    # a server that announces no length is stopped by the bytes that arrive
    import socketserver

    class NoLength(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"y" * 1000)

        def log_message(self, *args) -> None:
            pass

    with socketserver.TCPServer(("127.0.0.1", 0), NoLength) as httpd:
        thread = threading.Thread(target=httpd.handle_request, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/endless.bin"
        with pytest.raises(DataError, match=r"endless.bin: more than the limit of 10,000 "
                                            "bytes arrived"):
            fetch(url, tmp_path / "d", max_bytes=10_000, progress=False)
        thread.join(timeout=5)
    assert _files(tmp_path / "d") == []
    assert fetch(f"{server.url}/big.bin", tmp_path / "d", max_bytes=3000,
                 progress=False).stat().st_size == 3000
