"""The event store on SQLAlchemy: a SQLite path, a sqlite:/// URL and a real PostgreSQL.

The PostgreSQL tests start a throwaway cluster (initdb + pg_ctl, a free port, the socket in
a temporary directory) once per module and stop it at teardown; they are skipped, with the
reason, when the server binaries or psycopg are missing.
"""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from recforge.data.datasets import load_dataset
from recforge.data.event_db import mask_url
from recforge.data.events import EventStore
from recforge.errors import DataError

PG_PASSWORD = "s3cret-Pw!x"  # the throwaway cluster's; must never appear in a message


# -- a throwaway PostgreSQL cluster ---------------------------------------------------------
def _pg_program(name: str) -> str | None:
    """``name`` from PATH, else from the newest /usr/lib/postgresql/*/bin (Debian keeps the
    server programs off PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit()
                        else 0)
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[dict[str, object]]:
    """A PostgreSQL server for this module: user ``recforge`` with :data:`PG_PASSWORD` over
    TCP on 127.0.0.1 (scram-sha-256), trusted over the unix socket in its directory."""
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg is not installed (pip install 'recforge[postgres]')")
    initdb, pg_ctl = _pg_program("initdb"), _pg_program("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server programs (initdb, pg_ctl) not found; "
                    "apt-get install postgresql")
    runas: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="recforge-pg-"))
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        runuser = shutil.which("runuser")
        account = next((a for a in ("postgres", "nobody") if _has_account(a)), None)
        if runuser is None or account is None:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root, and no runuser or no postgres/nobody account to "
                        "run PostgreSQL as")
        entry = pwd.getpwnam(account)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        runas = [runuser, "-u", account, "--"]
    pwfile = root / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    if runas:
        os.chown(pwfile, pwd.getpwnam(runas[2]).pw_uid, -1)
    data, log = root / "data", root / "log"
    made = subprocess.run([*runas, initdb, "-D", str(data), "-U", "recforge",
                           f"--pwfile={pwfile}", "--auth-local=trust",
                           "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
                          capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{made.stdout}{made.stderr}")
    port = _free_port()
    started = subprocess.run(
        [*runas, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
         f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
        capture_output=True, text=True, timeout=90)
    try:
        if started.returncode != 0:
            detail = log.read_text() if log.exists() else started.stderr
            raise RuntimeError(f"pg_ctl start failed:\n{detail}")
        yield {"port": port, "socket_dir": root,
               "url": f"postgresql+psycopg://recforge:{PG_PASSWORD}@127.0.0.1:{port}"}
    finally:
        subprocess.run([*runas, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _has_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


_databases = iter(range(1_000_000))


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A fresh, empty database in the module's cluster (one per test)."""
    import psycopg

    name = f"events_{next(_databases)}"
    with psycopg.connect(host=str(pg_cluster["socket_dir"]), port=pg_cluster["port"],
                         user="recforge", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{pg_cluster['url']}/{name}"


@pytest.fixture(params=["path", "sqlite-url", "postgresql"])
def target(request, tmp_path) -> str | Path:
    """Where a store lives: a SQLite path, a sqlite:/// URL, a PostgreSQL URL."""
    if request.param == "path":
        return tmp_path / "sub" / "ev.sqlite"
    if request.param == "sqlite-url":
        return f"sqlite:///{tmp_path / 'ev.db'}"
    return request.getfixturevalue("pg_url")


# -- the same behaviour on every backend ----------------------------------------------------
def test_append_seen_items_and_forgetting(target):
    with EventStore(target) as store:
        assert store.count() == 0 and store.all_user_items() == {}
        assert store.append([]) == 0
        n = store.append([(1, "a", 1.0, 10), (1, "b", None, 11), ("u2", "a", 5, None),
                          (1, "a", 2.0, 12)])
        assert n == 4 and store.count() == 4
        assert sorted(store.user_items(1)) == ["a", "b"]  # distinct, ids as text
        assert sorted(store.user_items("1")) == ["a", "b"]
        assert {u: sorted(i) for u, i in store.all_user_items().items()} == {
            "1": ["a", "b"], "u2": ["a"]}
        assert store.delete_user(1) == 3 and store.count() == 1
        assert store.user_items(1) == [] and store.is_forgotten(1)
        assert list(store.erasures()) == [store.mark(1)] and not store.is_forgotten("u2")
        assert store.all_user_items() == {"u2": ["a"]} and len(store.to_frame()) == 1
        first = store.erased_at(1)
        assert store.delete_user(1) == 0  # forgetting twice is no error
        assert len(store.erasures()) == 1 and store.erased_at(1) >= first
        store.append([(1, "c", None, None)])  # posting again is stored; the forgetting
        assert store.is_forgotten(1) and store.user_items(1) == ["c"]  # stays on record
        assert store.erasure_state()[0] == 1
    with EventStore(target) as again:  # committed, so there after reopening
        assert again.count() == 2 and again.erasures() == store.erasures()


def test_to_frame_types(target):
    with EventStore(target) as store:
        store.append([(3, 30, 4.5, 1_700_000_000_000), (1, 10, None, 1_700_000_000_001),
                      (3, 10, 2.0, 5)])
        frame = store.to_frame()
        assert list(frame.columns) == ["user", "item", "rating", "timestamp"]
        assert frame["user"].tolist() == [3, 1, 3] and frame["user"].dtype == np.int64
        assert frame["item"].dtype == np.int64
        assert frame["timestamp"].tolist() == [1_700_000_000_000, 1_700_000_000_001, 5]
        assert np.isnan(frame["rating"][1]) and frame["rating"][0] == 4.5
        # Ids that only look numeric stay text: "007" is not 7, 2**70 is no int64.
        store.append([("007", str(2**70), None, None)])
        frame = store.to_frame()
        assert frame["user"].tolist() == ["3", "1", "3", "007"]
        assert frame["item"].tolist() == ["30", "10", "10", str(2**70)]
        assert "timestamp" not in frame.columns  # one event has none


def test_awkward_ids_round_trip_and_unstorable_ids_are_refused(target):
    awkward = ["tab\there", "new\nline", "back\\slash", "quote'\"", "\\N", "", " 7",
               "ünïcødé 🎬", "user"]
    with EventStore(target) as store:
        store.append([(u, f"i-{u}", None, None) for u in awkward])
        assert store.to_frame()["user"].tolist() == awkward
        assert store.user_items("\\N") == ["i-\\N"]
        for bad in ("nul\x00byte", "lone\ud800surrogate"):
            with pytest.raises(DataError):
                store.append([("ok", "fine", None, None), ("ok", bad, None, None)])
        assert store.count() == len(awkward)  # nothing of a refused batch was stored


def test_to_interactions_and_training_from_the_store(target, tmp_path):
    from recforge.cli import main
    from recforge.models import Recommender

    with EventStore(target) as store:
        with pytest.raises(DataError, match="holds no events"):
            store.to_interactions()
        rng = np.random.default_rng(0)
        store.append([(int(u), int(i), None, None) for u, i in rng.integers(0, 30, (400, 2))])
        data = store.to_interactions()
        assert data.users.is_integer and data.n_users <= 30 and len(data) <= 400
    loaded = load_dataset(f"events:{target}")
    assert len(loaded) == len(data)
    try:
        main(["train", "ease", "--data", f"events:{target}", "--out", str(tmp_path / "m")])
    except SystemExit as exc:
        assert not exc.code
    assert Recommender.load(tmp_path / "m").n_users == data.n_users


def test_events_posted_with_and_without_values_train_as_the_server_reads_them(target, caplog):
    """A post without a value keeps the pair's earlier value; mixing the two made the
    store untrainable ("missing value") and --duplicates was ignored."""
    with EventStore(target) as store:
        store.append([("a", "x", 4.0, None), ("a", "x", None, None),   # keeps 4
                      ("a", "y", None, None), ("a", "y", 2.0, None),   # first value given later
                      ("b", "x", 5.0, None), ("b", "z", None, None)])  # never valued
    with caplog.at_level("WARNING"):
        data = load_dataset(f"events:{target}")
    assert "1 of 6 events" in caplog.text
    frame = data.to_frame().sort_values(["user", "item"])
    assert frame[["user", "item", "rating"]].values.tolist() == [
        ["a", "x", 4.0], ["a", "y", 2.0], ["b", "x", 5.0]]
    summed = load_dataset(f"events:{target}", duplicates="sum").to_frame()
    assert sorted(summed["rating"].tolist()) == [4.0, 5.0, 8.0]


def test_appends_from_many_threads(target):
    with EventStore(target) as store:
        def post(t: int) -> None:
            for b in range(25):
                store.append([(f"t{t}", f"{b}-{j}", None, None) for j in range(20)])

        threads = [threading.Thread(target=post, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert store.count() == 8 * 25 * 20
        assert len(store.user_items("t3")) == 25 * 20


def test_training_does_not_create_a_store(target, tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(f"events:{target}")
    assert "event store" in str(err.value) and PG_PASSWORD not in str(err.value)
    if isinstance(target, Path):
        assert not target.exists()
    with EventStore(target):  # and it really was not created: now it opens empty
        pass
    with pytest.raises(DataError, match="holds no events"):
        load_dataset(f"events:{target}")


# -- SQLite ---------------------------------------------------------------------------------
@pytest.mark.parametrize("as_url", [False, True])
def test_sqlite_is_wal_with_synchronous_full(tmp_path, as_url):
    db = tmp_path / "ev.sqlite"
    with EventStore(f"sqlite:///{db}" if as_url else db) as store:
        assert store.path == db
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        store.append([("u", "i", None, None)])
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_store_written_by_the_raw_sqlite_version_opens(tmp_path):
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL,
            item TEXT NOT NULL, value REAL, timestamp INTEGER, received REAL NOT NULL);
        CREATE INDEX events_user ON events(user);
        CREATE TABLE forgotten (user TEXT PRIMARY KEY, at REAL NOT NULL);
        INSERT INTO events (user, item, value, timestamp, received) VALUES
            ('1', '7', 1.0, 3, 0), ('2', '8', 2.0, 4, 0);
        INSERT INTO forgotten VALUES ('9', 0);
    """)
    con.commit()
    con.close()
    with EventStore(db) as store:
        assert store.count() == 2 and store.is_forgotten(9) and len(store.erasures()) == 1
        store.append([(3, 9, 3.0, 5)])
        assert store.to_frame()["item"].tolist() == [7, 8, 9]
        assert store.user_items(1) == ["7"] and store.delete_user(1) == 1


def test_in_memory_sqlite_is_one_database_across_threads():
    with EventStore("sqlite://") as store:
        worker = threading.Thread(target=store.append, args=([("u", "i", None, None)],))
        worker.start()
        worker.join()
        assert store.count() == 1 and store.path is None


def test_a_file_that_is_no_database_is_a_data_error(tmp_path):
    bad = tmp_path / "junk.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match="cannot open the event store") as err:
        EventStore(bad)
    assert str(bad) in str(err.value)


# -- bad URLs, and passwords never shown ----------------------------------------------------
def test_mask_url():
    assert mask_url("postgresql+psycopg://me:hunter22@db:5432/ev") == \
        "postgresql+psycopg://me:***@db:5432/ev"
    # A stray @ or / in a password, an unparseable port, a password= parameter.
    assert "ss" not in mask_url("postgresql://me:p@ss@db/ev").split("@", 1)[0]
    assert mask_url("postgresql://me:pa/ss@db/ev") == "postgresql://me:***@db/ev"
    assert mask_url("postgresql://me:pw1@db:port/ev") == "postgresql://me:***@db:port/ev"
    assert mask_url("postgresql://me@db/ev?password=pw1&x=1") == \
        "postgresql://me@db/ev?password=***&x=1"
    assert mask_url("sqlite:////tmp/ev.db") == "sqlite:////tmp/ev.db"


@pytest.mark.parametrize("url, message", [
    ("nosuchdb://me:hunter22@host/ev", "unknown database type 'nosuchdb'"),
    ("postgresql+nodriver://me:hunter22@host/ev", "unknown database type"),
    ("postgresql+psycopg://me:hunter22@host:notaport/ev", "not a valid database URL"),
    ("mysql+nosuchdriver://me:hunter22@host/ev", "unknown database type"),
])
def test_bad_urls_are_data_errors_without_the_password(url, message):
    with pytest.raises(DataError, match=message) as err:
        EventStore(url)
    text = str(err.value)
    assert "hunter22" not in text and "me:***@host" in text


def test_a_missing_driver_is_named(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psycopg2", None)  # an import of it now fails
    with pytest.raises(DataError, match="driver for postgresql\\+psycopg2 is not installed"
                       ) as err:
        EventStore("postgresql+psycopg2://me:hunter22@localhost/ev")
    assert "hunter22" not in str(err.value) and "recforge[postgres]" in str(err.value)


def test_an_unreachable_database_is_a_data_error_without_the_password():
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://me:hunter22@127.0.0.1:{_free_port()}/ev"  # nothing listens
    start = time.perf_counter()
    with pytest.raises(DataError, match="cannot open the event store") as err:
        EventStore(url)
    assert time.perf_counter() - start < 15
    assert "hunter22" not in str(err.value) and "me:***@127.0.0.1" in str(err.value)
    assert "hunter22" not in repr(err.value)


def test_training_from_a_bad_url_is_one_line_without_the_password(capsys):
    from recforge.cli import main

    try:
        code = main(["train", "ease", "--data", "events:nosuchdb://me:hunter22@h/ev",
                     "--out", "unused"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "unknown database type" in err and "hunter22" not in err


# -- PostgreSQL only ------------------------------------------------------------------------
def test_postgres_wrong_password_is_masked(pg_url):
    wrong = pg_url.replace(PG_PASSWORD, "not-the-Pw-9")
    with pytest.raises(DataError, match="password authentication failed") as err:
        EventStore(wrong)
    assert "not-the-Pw-9" not in str(err.value) and "recforge:***@" in str(err.value)
    with EventStore(pg_url) as store:
        assert PG_PASSWORD not in repr(store) and PG_PASSWORD not in store.url
        assert store.path is None


def test_postgres_store_behind_a_real_server_survives_kill_9(pg_url, random_data,
                                                             tmp_path):
    """`recforge serve --events URL`: acknowledged events are in PostgreSQL after SIGKILL,
    they count as seen items, and DELETE /users/{id} removes them."""
    import httpx
    from conftest import running_server

    from recforge.models import create_model

    model = create_model("ease", reg=20.0).fit(random_data).save(tmp_path / "ease")
    user = str(random_data.users.ids[0])
    acked = 0
    with running_server("--model", model, "--events", pg_url) as (proc, url):
        with httpx.Client(base_url=url) as client:
            first = client.get(f"/users/{user}/recommendations",
                               params={"k": 1}).json()["items"][0]["item"]
            r = client.post("/interactions", json={"events": [{"user": user, "item": first}]})
            acked += r.json()["stored"]
            after = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
            assert first not in [x["item"] for x in after["items"]]
            for b in range(20):
                r = client.post("/interactions", json={"events": [
                    {"user": f"u{b}", "item": j, "timestamp": j} for j in range(100)]})
                assert r.status_code == 200
                acked += r.json()["stored"]
            gone = client.delete("/users/u0", headers={"content-type": "application/json"}).json()
            assert gone["deleted_events"] == 100
            acked -= 100
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with EventStore(pg_url) as store:
        assert store.count() == acked == 1 + 19 * 100
        assert store.is_forgotten("u0") and len(store.erasures()) == 1
        assert store.user_items(user) == [str(first)]


def test_the_store_keeps_its_ids_helper():
    assert EventStore.ids([1, "a"]) == ["1", "a"]


# -- erasure: no copy left, no scan, coming back --------------------------------------------
def _holding(directory: Path, markers: list[str]) -> dict[str, list[str]]:
    """Each file of ``directory`` (the database, its -wal and -shm, anything else) whose raw
    bytes hold one of ``markers``, with the markers found."""
    found: dict[str, list[str]] = {}
    for file in sorted(directory.iterdir()):
        if file.is_file():
            data = file.read_bytes()
            hits = [m for m in markers if m.encode() in data]
            if hits:
                found[file.name] = hits
    return found


def _service(store: EventStore, frame, path: Path):
    """A service over ``store`` for a ``pop`` model trained on ``frame`` and saved at
    ``path`` (the model's creation time matters to erased users)."""
    from recforge import Interactions
    from recforge.models import create_model
    from recforge.serving.service import RecommendationService

    if not (path / "meta.json").exists():
        create_model("pop").fit(Interactions.from_frame(frame)).save(path)
    return RecommendationService(path, events=store)


def test_erasure_leaves_no_copy_in_any_file_of_the_store(tmp_path):
    """Erased users' ids and the items only they posted are in no file of the store (the
    database, -wal, -shm), while it is open and after: the WAL held the rows, the forgotten
    table the ids; a DELETE of the rows let SQLite leave copies of moved rows in the free
    space of their pages (about 1% of users with this many events), so rows are overwritten
    in place. The events arrive as a server gets them, in many transactions, every user's
    posts followed by other users' posts: a layout that stores later rows between earlier
    ones (rows clustered by user) has SQLite split pages and move the earlier rows, which
    leaves copies of them in the unallocated space of the pages they left (no
    ``secure_delete`` reaches it: 16 of 1,000 erased users at 1,000,000 events)."""
    import pandas as pd

    rng = np.random.default_rng(7)
    users = [f"{rng.bytes(12).hex()}{'u' * int(rng.choice([0, 20, 100, 400]))}"
             for _ in range(300)]
    victims = users[:200]
    markers = [u[:24] for u in victims]  # in each victim's id, and in the items only it posts
    rows = []
    while len(rows) < 36_000:
        u = users[int(rng.integers(len(users)))]
        for _ in range(int(rng.choice([1, 1, 4, 40]))):
            rows.append((u, f"{u[:24]}-item-{rng.random():.6f}{'v' * int(rng.choice([0, 50, 300]))}",
                         None if rng.random() < 0.5 else 2.0, 5))
    directory = tmp_path / "store"
    store = EventStore(directory / "ev.sqlite")
    for start in range(0, len(rows), 400):  # 90 transactions, users interleaved
        store.append(rows[start:start + 400])
    frame = pd.DataFrame({"user": users[:50] * 2, "item": ["a"] * 50 + ["b"] * 50})
    svc = _service(store, frame, tmp_path / "pop")
    assert _holding(directory, markers[:1])  # (the markers are findable)
    posted = sum(r[0] == victims[0] for r in rows)
    assert svc.forget_user(victims[0]) == posted
    assert _holding(directory, markers[:1]) == {}  # the store open, its WAL in use
    for victim in victims[1:]:
        svc.forget_user(victim)
        store.append([(users[-1], "after", None, None)])
    assert _holding(directory, markers) == {}
    assert store.count() == len(rows) - sum(r[0] in set(victims) for r in rows) + 199
    store.close()
    assert _holding(directory, markers) == {}


def test_an_erasure_waits_out_a_reader_of_another_process(tmp_path, monkeypatch, caplog):
    """A reader elsewhere (a training run reading the store) keeps the WAL from being
    emptied: the erasure says so, and the next write empties it."""
    from recforge.data import events

    monkeypatch.setattr(events, "ERASURE_CHECKPOINT_WAIT", 0.05)
    store = EventStore(tmp_path / "ev.sqlite")
    store.append([("keep", "x", None, None), ("gone-7f3a", "only-gone-7f3a", None, None)])
    reader = sqlite3.connect(tmp_path / "ev.sqlite", isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (2,)  # a snapshot
    with caplog.at_level("WARNING"):
        assert store.delete_user("gone-7f3a") == 1
    assert "stay in the WAL" in caplog.text
    assert "ev.sqlite-wal" in _holding(tmp_path, ["gone-7f3a"])  # the reader's snapshot
    reader.execute("COMMIT")
    reader.close()
    store.append([("keep", "y", None, None)])
    assert _holding(tmp_path, ["gone-7f3a"]) == {}
    store.close()


def test_a_store_of_an_earlier_version_is_upgraded_without_copies(tmp_path):
    """An earlier version kept erased ids in clear (table forgotten) and indexed the ids
    themselves; opening its store tags every event, indexes the tags, turns the ids into
    marks and rewrites the file: no copy of an erased id is left."""
    import sqlalchemy as sa

    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript("""
        PRAGMA journal_mode=WAL;
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL,
            item TEXT NOT NULL, value REAL, timestamp INTEGER, received REAL NOT NULL);
        CREATE INDEX events_user ON events(user);
        CREATE TABLE forgotten (user TEXT PRIMARY KEY, at REAL NOT NULL);
    """)
    rows = [(f"u{u:03d}x", f"i{u:03d}x-{j}", None, None, 0.0)
            for j in range(30) for u in range(200)]
    con.executemany("INSERT INTO events (user, item, value, timestamp, received) "
                    "VALUES (?, ?, ?, ?, ?)", rows)
    con.commit()
    erased = [f"u{u:03d}x" for u in range(0, 200, 10)]
    for user in erased:  # as that version erased: DELETE, id kept as forgotten
        con.execute("DELETE FROM events WHERE user = ?", (user,))
        con.execute("INSERT INTO forgotten VALUES (?, 5.0)", (user,))
    con.commit()
    con.close()
    markers = erased + [f"i{u[1:]}" for u in erased]  # their ids, their items
    assert _holding(tmp_path, markers)  # in clear in the forgotten table, and elsewhere
    with EventStore(db) as store:
        assert _holding(tmp_path, markers) == {}
        assert all(store.is_forgotten(u) and store.erased_at(u) == 5.0 for u in erased)
        assert store.count() == len(rows) - 30 * len(erased)
        assert sorted(store.user_items("u001x")) == sorted(f"i001x-{j}" for j in range(30))
        indexes = {i["name"] for i in sa.inspect(store.engine).get_indexes("events")}
        assert indexes == {"events_user_tag"}
        assert not sa.inspect(store.engine).has_table("forgotten")
    with EventStore(db) as again:  # opened again: nothing left to upgrade
        assert again.count() == len(rows) - 30 * len(erased) and again.is_forgotten("u000x")


def test_erasure_reads_only_the_users_rows(tmp_path, monkeypatch):
    """DELETE /users/{id} read every event of the store (to find other spellings of the
    id), under both locks; now it finds the user's rows by an index and nothing else."""
    import pandas as pd

    store = EventStore(tmp_path / "ev.sqlite")
    store.append([(f"u{k % 50}", f"i{k}", None, None) for k in range(2000)])
    svc = _service(store, pd.DataFrame({"user": [1, 1, 2], "item": [5, 6, 5]}),
                   tmp_path / "pop")
    svc.add_events([("1.0", 7, None, None)])  # stored as user 1 (the model's integer id)
    store.append([("01", 8, None, None)])  # as an earlier version stored it: as posted
    svc = _service(store, None, tmp_path / "pop")  # a restart reads it
    for whole in ("all_user_items", "all_user_values", "to_frame", "count"):
        monkeypatch.setattr(EventStore, whole,
                            lambda *_, name=whole: pytest.fail(f"{name} read the store"))
    assert svc.forget_user(1) == 2  # "1" and "01"
    monkeypatch.undo()
    assert store.user_items(1) == [] and store.user_items("01") == []
    assert store.is_forgotten("1") and store.is_forgotten("01")
    from recforge.data import events

    with store.engine.connect() as conn:
        sql = events._TOMBSTONE.compile(dialect=conn.dialect).construct_expanded_state(
            {"tags": [1, 2], "users": ["1", "01"]})
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql.statement}",
                                    tuple(sql.positional_parameters)).all()
    assert "USING INDEX events_user_tag" in str(plan)


def test_an_erased_user_comes_back_with_a_fresh_history(tmp_path):
    """After an erasure the user's new events are served (fold-in) and trained on; the
    old model's row for them is never used again, also after a restart and with a model
    trained later on a copy of the old data; a model trained after the erasure from the
    store alone serves them from its row."""
    import pandas as pd

    from recforge import Interactions
    from recforge.models import create_model
    from recforge.serving.service import RecommendationService

    old = pd.DataFrame({"user": ["ann"] * 3 + ["bob"] * 4 + ["cy"] * 4,
                        "item": ["a", "b", "c", "a", "b", "d", "e", "c", "d", "e", "f"]})
    store = EventStore(tmp_path / "ev.sqlite")
    store.append([("ann", i, None, None) for i in ("g", "h")] +  # ann's posts, then others
                 [(u, i, None, None) for u, i in old.itertuples(index=False) if u != "ann"])
    model = create_model("itemknn").fit(Interactions.from_frame(old)).save(tmp_path / "m0")
    svc = RecommendationService(model, events=store)
    assert svc.recommend_user("ann")["fallback"] is None
    assert svc.forget_user("ann") == 2
    erased = time.time()
    assert svc.history("ann")["known"] is False
    assert svc.recommend_user("ann")["fallback"] == "popular"
    # back: a fresh history, served by fold-in, not from the model's old row
    svc.add_events([("ann", "e", None, None), ("ann", "f", None, None)])
    body = svc.recommend_user("ann", k=3)
    assert body["fallback"] == "history" and {"e", "f"}.isdisjoint(x["item"] for x in body["items"])
    hist = svc.history("ann")
    assert hist["known"] is False and sorted(x["item"] for x in hist["items"]) == ["e", "f"]
    # trained on: the store gives their new events, not the old ones
    frame = store.to_frame()
    assert sorted(frame.loc[frame["user"] == "ann", "item"]) == ["e", "f"]
    # a restart: the mark survives
    store.close()
    store = EventStore(tmp_path / "ev.sqlite")
    assert store.is_forgotten("ann")
    svc = RecommendationService(model, events=store)
    assert svc.history("ann")["known"] is False
    assert svc.recommend_user("ann")["fallback"] == "history"
    time.sleep(max(0.0, math.ceil(erased) - time.time()) + 0.01)  # meta's created: seconds
    # a model made later from a copy of the old data: still not answered from
    copy = create_model("itemknn").fit(Interactions.from_frame(old)).save(tmp_path / "m1")
    svc = RecommendationService(copy, events=store)
    assert svc.history("ann")["known"] is False
    # a model made later from the store: serves them from its row
    fresh = create_model("itemknn").fit(store.to_interactions()).save(tmp_path / "m2")
    svc = RecommendationService(fresh, events=store)
    assert svc.recommend_user("ann")["fallback"] is None
    hist = svc.history("ann")
    assert hist["known"] is True and sorted(x["item"] for x in hist["items"]) == ["e", "f"]
    # erased again: cut off from that model too
    svc.forget_user("ann")
    assert svc.history("ann")["known"] is False
    assert RecommendationService(fresh, events=store).history("ann")["known"] is False
    store.close()


def test_a_second_read_of_the_store_fetches_only_what_came_since(tmp_path, monkeypatch):
    """A reload read every event twice, the second time under the lock that every post
    and delete waits for; now the second read fetches the events stored since the first,
    and reads everything again only when a user was erased in between."""
    import pandas as pd

    store = EventStore(tmp_path / "ev.sqlite")
    store.append([(f"u{k % 20}", f"i{k % 7}", None, None) for k in range(500)])
    svc = _service(store, pd.DataFrame({"user": ["u1", "u2"] * 4,
                                        "item": [f"i{k}" for k in range(8)]}), tmp_path / "pop")
    calls = []
    real = EventStore.all_user_values
    monkeypatch.setattr(EventStore, "all_user_values",
                        lambda self: calls.append(1) or real(self))
    store.append([("late", "i3", 4.0, None), ("u1", "i7", None, None)])  # another writer
    svc.sync_events()
    assert calls == []
    assert svc.model.items_.ids[svc._posted_items("late")].tolist() == ["i3"]
    assert svc._posted_entry("late")[1].tolist() == [4.0]
    assert "i7" in svc.model.items_.ids[svc._posted_items("u1")].tolist()
    store.delete_user("u2")  # erased elsewhere: read again, whole
    svc.sync_events()
    assert calls == [1] and len(svc._posted_items("u2")) == 0
    assert svc.history("u2")["known"] is False


def test_a_store_of_an_earlier_version_is_upgraded_on_every_backend(target):
    """The upgrade (tags, their index, marks for the ids in clear) on SQLite and
    PostgreSQL alike."""
    import sqlalchemy as sa

    old = sa.MetaData()
    events = sa.Table(
        "events", old,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("user", sa.Text(), nullable=False), sa.Column("item", sa.Text(), nullable=False),
        sa.Column("value", sa.Double()), sa.Column("timestamp", sa.BigInteger()),
        sa.Column("received", sa.Double(), nullable=False), sa.Index("events_user", "user"))
    forgotten = sa.Table("forgotten", old, sa.Column("user", sa.Text(), primary_key=True),
                         sa.Column("at", sa.Double(), nullable=False))
    url = f"sqlite:///{target}" if isinstance(target, Path) else target
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        old.create_all(conn)
        conn.execute(events.insert(), [{"user": u, "item": i, "received": 0.0}
                                       for u, i in [("a", "x"), ("a", "y"), ("b", "x")]])
        conn.execute(forgotten.insert(), [{"user": "gone", "at": 3.0}])
    engine.dispose()
    with EventStore(target) as store:
        assert store.count() == 3 and sorted(store.user_items("a")) == ["x", "y"]
        assert store.erased_at("gone") == 3.0 and not store.is_forgotten("a")
        assert store.delete_user("a") == 2 and store.all_user_items() == {"b": ["x"]}
        inspector = sa.inspect(store.engine)
        assert {i["name"] for i in inspector.get_indexes("events")} == {"events_user_tag"}
        assert not inspector.has_table("forgotten")


def test_compact_drops_the_tombstones(tmp_path):
    store = EventStore(tmp_path / "ev.sqlite")
    store.append([(f"u{k % 10}", f"i{k}", None, None) for k in range(1000)])
    store.delete_user("u3")
    gone = [f"i{k}" for k in range(103, 1000, 10)]  # u3's items ("i3", "i13": prefixes)
    assert _holding(tmp_path, gone) == {}
    with store.engine.connect() as conn:  # the tombstones are rows
        assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar() == 1000
    store.compact()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar() == 900
    assert store.count() == 900 and store.user_items("u4")[:1] == ["i4"]
    assert _holding(tmp_path, gone) == {} and store.is_forgotten("u3")
    store.close()
