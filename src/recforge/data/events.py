"""The event store: interactions posted to the server, kept in a SQL database.

By default one SQLite file (``MODEL.events.sqlite`` beside the model directory) in WAL mode
with ``synchronous=FULL``; any SQLAlchemy URL instead (``postgresql+psycopg://user@host/db``,
``sqlite:///path``) when configured. The store is written with SQLAlchemy Core, so one code
path serves every database. An append returns only after its transaction is committed
(SQLite: on disk; PostgreSQL: with its default ``synchronous_commit=on``, flushed to its
WAL), so every acknowledged event survives a ``kill -9`` of the server. Events count as
seen items for their user at once.
``recforge train --data events:PATH_OR_URL`` trains from the store.

Erasure (``delete_user``) costs what the user's own events cost: rows are found through an
index on a keyed hash of the user id (``user_tag``), never by a scan. It leaves no copy of
the user's ids or events in the store's files: on SQLite the rows are overwritten in place
by empty tombstones (``secure_delete`` zeroes the old bytes; a DELETE would let SQLite
rebalance pages, which leaves copies of moved rows in their free space), then a
``wal_checkpoint(TRUNCATE)`` empties the WAL. Rows are only ever appended at the end of the
table, where SQLite moves no stored row (an appended row that does not fit starts a new
page), so a user's events lie about one to a page and an erasure rewrites a page per event
(which is why a new store has 1 KiB pages: ``event_db.PAGE_SIZE``).
Rows clustered by user (``WITHOUT ROWID`` keyed by tag) would share pages, but every post
would then insert between stored rows: SQLite splits pages and leaves copies of the moved
rows in the unallocated space of the pages they left, which ``secure_delete`` never zeroes
(tests/test_events.py, the erasure test, catches it). The store remembers an erasure as a keyed
hash of the id (a *mark*) and its time, never the id: the key is a random secret kept in
the store (``store_info``), so the files list no erased id, though whoever holds them can
test a guessed id. A model may hold a copy of an erased user's data; the server decides
from the marks what it may still answer from (``serving.service``). On PostgreSQL the rows
are deleted; their bytes stay in dead tuples until VACUUM, and in PostgreSQL's own WAL,
archives and backups (docs/serving.md, "Erasure").

Passwords never leave this module and :mod:`recforge.data.event_db` (the tables, engines and
dialect-specific statements): errors and ``repr`` name the database by its URL with the
password replaced by ``***``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from recforge._locks import FairLock
from recforge.data.event_db import (
    BUSY_TIMEOUT,
    LEGACY_USER_INDEX,
    LIVE,
    check_ids,
    copy_events,
    create_engine,
    driver_reason,
    erasures_table,
    events_table,
    insert_ignore,
    is_url,
    legacy_forgotten_table,
    mask_url,
    metadata,
    parse_url,
    scrub,
    store_info_table,
    upsert_marks,
    url_secrets,
)
from recforge.data.interactions import Interactions
from recforge.errors import DataError

_log = logging.getLogger(__name__)

__all__ = ["EventStore"]

def _of_users() -> sa.ColumnElement[bool]:
    """The rows of the users ``:users`` with the tags ``:tags``: found by the tags' index,
    the ids checked too (two ids may share a tag)."""
    return sa.and_(events_table.c.user_tag.in_(sa.bindparam("tags", expanding=True)),
                   events_table.c.user.in_(sa.bindparam("users", expanding=True)))


#: Erasure on SQLite: each row overwritten in place by a smaller tombstone. Nothing moves
#: (an update that shrinks a row never rebalances pages, a delete does, and SQLite leaves
#: copies of the rows it moves in the free space of their old pages); ``secure_delete``
#: zeroes the old bytes.
_TOMBSTONE = events_table.update().where(_of_users()).values(
    user="", item="", value=None, timestamp=None, received=0.0, user_tag=None)
#: Erasure elsewhere.
_DELETE = events_table.delete().where(_of_users())
_USER_ITEMS = sa.select(events_table.c.item).where(_of_users()).distinct()

#: How long an erasure waits for readers in other processes (a training run reading the
#: store) before it leaves emptying the WAL to the next write (seconds).
ERASURE_CHECKPOINT_WAIT = 2.0

#: Bound parameters per ``IN (...)`` list: far below every database's limit.
_CHUNK = 500

class EventStore:
    """Append-only interaction log in SQLite or any database SQLAlchemy reaches.

    Parameters
    ----------
    target:
        A filesystem path (a SQLite file; its directory is created) or a SQLAlchemy URL:
        ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
        ``postgresql+psycopg://user:password@host:5432/db`` (a bare ``postgresql://`` or
        ``postgres://`` uses psycopg 3, the driver of ``pip install 'recforge[postgres]'``).
    create:
        Create the tables when they are missing (the server). ``False`` opens an existing
        store only and raises :class:`~recforge.errors.DataError` otherwise (training
        from a store must not create an empty one).

    Thread-safe: calls from any thread share a connection pool; on SQLite they take turns
    (one writer at a time is SQLite's rule), on a server database they run concurrently.
    Every failure to reach the database is a :class:`~recforge.errors.DataError` naming
    the URL with its password masked.
    """

    def __init__(self, target: str | os.PathLike[str], *, create: bool = True) -> None:
        #: The SQLite file when the store is one, else ``None``.
        self.path: Path | None = None
        if is_url(target):
            url = parse_url(str(target))
        else:
            self.path = Path(target)
            url = URL.create("sqlite", database=str(self.path))
        #: The database URL, password masked: safe to print and log.
        self.url = mask_url(url)
        #: Where the store is, for messages: the path given, else :attr:`url`.
        self.name = str(self.path) if self.path is not None else self.url
        self._secrets = url_secrets(url)
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
            if not in_memory and not url.query.get("uri"):
                file = Path(database)
                if self.path is None:
                    self.path = file
                if not create and not file.is_file():
                    raise DataError("event store not found", source=self.name)
                file.parent.mkdir(parents=True, exist_ok=True)
        self._sqlite = url.get_backend_name() == "sqlite"
        #: Serialises SQLite calls; server databases need no lock of ours.
        self._lock: FairLock | None = FairLock() if self._sqlite else None
        #: An erasure whose WAL could not be emptied yet (a reader in another process):
        #: the next write tries again.
        self._wal_dirty = False
        #: The SQLAlchemy engine (for callers that need the database directly).
        self.engine: Engine = create_engine(url, self.name, self._secrets)
        try:
            with self.engine.begin() as conn:
                if not create and not sa.inspect(conn).has_table(events_table.name):
                    raise DataError(f"no event store here (missing table {events_table.name})",
                                    source=self.name)
                # a new store's tables, or those a store of an earlier version lacks
                metadata.create_all(conn, checkfirst=True)
                self._key = self._store_key(conn)
                upgraded = self._upgrade(conn)
            if self._sqlite:
                if upgraded:  # rewrite the file: copies the old layout left in free space
                    self._vacuum()
                self._checkpoint(wait=0.0)  # a WAL left by a crash after an erasure
        except sa.exc.SQLAlchemyError as exc:
            self.engine.dispose()
            raise self._error("cannot open the event store", exc) from None
        except DataError:
            self.engine.dispose()
            raise

    # -- construction ----------------------------------------------------------------------
    def _store_key(self, conn: Connection) -> bytes:
        """The store's secret (created with the store): the key of its tags and marks."""
        query = sa.select(store_info_table.c.value).where(store_info_table.c.name == "key")
        found = conn.execute(query).scalar()
        if found is None:
            stmt = insert_ignore(conn, store_info_table, {"name": "key",
                                                      "value": secrets.token_hex(32)})
            conn.execute(stmt)
            found = conn.execute(query).scalar_one()  # ours, or a racing process's
        try:
            key = bytes.fromhex(found)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise DataError("the store's key (table store_info) is damaged",
                            source=self.name)
        return key

    def _upgrade(self, conn: Connection) -> bool:
        """Bring a store of an earlier version to this one, in the caller's transaction:
        tag every event, index the tags instead of the ids, turn the erased users' ids into
        marks. Returns whether anything changed (then a SQLite file is vacuumed)."""
        inspector = sa.inspect(conn)
        changed = False
        preparer = conn.dialect.identifier_preparer
        table = preparer.format_table(events_table)
        if "user_tag" not in {c["name"] for c in inspector.get_columns(events_table.name)}:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN "
                                 f"{preparer.quote('user_tag')} BIGINT")
            users = conn.execute(sa.select(events_table.c.user).distinct()).scalars().all()
            if users:
                conn.execute(events_table.update().where(events_table.c.user == sa.bindparam("u"))
                             .values(user_tag=sa.bindparam("t")),
                             [{"u": u, "t": self.tag(u)} for u in users])
            changed = True
        if LEGACY_USER_INDEX in {i["name"] for i in inspector.get_indexes(events_table.name)}:
            conn.exec_driver_sql(f"DROP INDEX {preparer.quote(LEGACY_USER_INDEX)}")
            changed = True
        for index in events_table.indexes:
            index.create(conn, checkfirst=True)
        if inspector.has_table(legacy_forgotten_table.name):
            marks = [{"mark": self.mark(user), "at": float(at)} for user, at in conn.execute(
                sa.select(legacy_forgotten_table.c.user, legacy_forgotten_table.c.at))]
            if marks:
                upsert_marks(conn, marks)
            legacy_forgotten_table.drop(conn)
            changed = True
        return changed

    # -- the keyed hashes of user ids ------------------------------------------------------
    def tag(self, user: Any) -> int:
        """The user's tag: a keyed hash of its id (64 bits) that the index on events holds
        in place of the id."""
        digest = hashlib.blake2b(str(user).encode("utf-8"), key=self._key, digest_size=8,
                                 person=b"recforge-tag").digest()
        return int.from_bytes(digest, "big", signed=True)

    def mark(self, user: Any) -> str:
        """The mark an erasure of ``user`` leaves: a keyed hash of its id (hex)."""
        return hashlib.blake2b(str(user).encode("utf-8"), key=self._key, digest_size=32,
                               person=b"recforge-erased").hexdigest()

    def _users(self, users: Sequence[str]) -> dict[str, list[Any]]:
        """The parameters of :func:`_of_users` for ``users``."""
        return {"tags": sorted({self.tag(u) for u in users}), "users": list(users)}

    # -- SQLite housekeeping ---------------------------------------------------------------
    def _checkpoint(self, wait: float) -> bool:
        """Copy the WAL into the database file and truncate it to zero bytes (SQLite), so
        that no earlier version of a page stays in it; waits up to ``wait`` seconds for
        readers in other processes. Returns whether it did; if not, the next write tries
        again. The caller holds the store's lock (or is the constructor)."""
        with self.engine.connect() as conn:  # (a PRAGMA opens no transaction)
            conn.exec_driver_sql(f"PRAGMA busy_timeout={int(wait * 1000)}")
            try:
                busy, log, _ = conn.exec_driver_sql(
                    "PRAGMA wal_checkpoint(TRUNCATE)").one()
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT * 1000}")
        self._wal_dirty = bool(busy) or log > 0  # log -1: no WAL (in memory)
        return not self._wal_dirty

    def _vacuum(self) -> None:
        """Rewrite the SQLite file (free pages dropped, every page rebuilt without the
        leftovers in its free space), then empty the WAL."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM")
        self._checkpoint(wait=ERASURE_CHECKPOINT_WAIT)

    def compact(self) -> None:
        """Drop the tombstones that erasures leave (SQLite) and give their space back:
        a full rewrite of the store (``VACUUM``), for maintenance while it is idle; erasure
        needs none of it."""
        with self._connect(write=True) as conn:
            conn.execute(events_table.delete().where(~LIVE))
        if self._sqlite:
            with self._locked():
                self._vacuum()

    def _error(self, what: str, exc: BaseException) -> DataError:
        return DataError(f"{what}: {scrub(driver_reason(exc), self._secrets)}",
                         source=self.name)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock is not None:
            self._lock.acquire()
        try:
            yield
        finally:
            if self._lock is not None:
                self._lock.release()

    @contextmanager
    def _connect(self, write: bool, *, erasing: bool = False) -> Iterator[Connection]:
        """A connection (in a transaction, committed on exit, when ``write``). After a
        write that ``erasing`` (or after an erasure whose WAL is still to be emptied), the
        WAL is emptied, under the same lock."""
        with self._locked():
            with (self.engine.begin() if write else self.engine.connect()) as conn:
                yield conn
            if self._sqlite and write and (erasing or self._wal_dirty):
                if not self._checkpoint(wait=ERASURE_CHECKPOINT_WAIT if erasing else 0.0) \
                        and erasing:
                    _log.warning("%s: erased events stay in the WAL until the readers of "
                                 "another process finish (the next write empties it)",
                                 self.name)

    def close(self) -> None:
        """Empty the WAL into the database file (SQLite: ``wal_checkpoint(TRUNCATE)``) and
        close every pooled connection; the last connection to close removes the ``-wal``
        and ``-shm`` side files (a reader in another process keeps them, the WAL empty).
        The server calls it on a clean shutdown. The store stays usable: a later call
        opens connections again."""
        if self._sqlite:
            with self._locked():
                try:
                    self._checkpoint(wait=0.0)
                except sa.exc.SQLAlchemyError as exc:  # (a file gone: close all the same)
                    _log.warning("%s: the WAL was not emptied on close (%s)", self.name,
                                 scrub(driver_reason(exc), self._secrets))
        self.engine.dispose()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventStore({self.name!r})"

    # -- writes ----------------------------------------------------------------------------
    def append(self, events: Sequence[tuple[Any, Any, float | None, int | None]]) -> int:
        """Store ``(user, item, value, timestamp)`` tuples in one transaction; returns
        their number once the transaction is committed."""
        now = time.time()
        rows = [{"user": str(u), "item": str(i), "value": None if v is None else float(v),
                 "timestamp": None if t is None else int(t), "received": now}
                for u, i, v, t in events]
        if not rows:
            return 0
        check_ids([r["user"] for r in rows] + [r["item"] for r in rows])
        tags = {u: self.tag(u) for u in {r["user"] for r in rows}}  # once per user
        for r in rows:
            r["user_tag"] = tags[r["user"]]
        with self._connect(write=True) as conn:
            if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
                copy_events(conn, rows)
            else:
                conn.execute(events_table.insert(), rows)  # one executemany
        return len(rows)

    def delete_user(self, user: Any, *, spellings: Iterable[Any] = (),
                    at: float | None = None) -> int:
        """Erase every event of ``user`` (and of the other ``spellings`` of its id) and
        leave a mark for each, dated ``at`` (default: now); returns the number of events
        erased. Costs what the user's own events cost (the tag's index), and leaves no copy
        of them in a SQLite store's files (module docstring)."""
        names = list(dict.fromkeys(str(u) for u in (user, *spellings)))
        at = time.time() if at is None else float(at)
        marks = [{"mark": self.mark(name), "at": at} for name in names]
        with self._connect(write=True, erasing=True) as conn:
            n = conn.execute(_TOMBSTONE if self._sqlite else _DELETE,
                             self._users(names)).rowcount
            upsert_marks(conn, marks)
        return int(n)

    # -- reads -----------------------------------------------------------------------------
    def user_items(self, user: Any) -> list[str]:
        """The distinct items ``user`` posted."""
        with self._connect(write=False) as conn:
            return list(conn.execute(_USER_ITEMS, self._users([str(user)])).scalars())

    def all_user_items(self) -> dict[str, list[str]]:
        """Every user's posted items (reads the whole store)."""
        out: dict[str, list[str]] = {}
        query = sa.select(events_table.c.user, events_table.c.item).where(LIVE).distinct()
        with self._connect(write=False) as conn:
            for user, item in conn.execute(query):
                out.setdefault(user, []).append(item)
        return out

    def all_user_values(self) -> dict[str, list[tuple[str, float | None]]]:
        """Every user's posted ``(item, value)`` pairs, the latest value of each pair
        (``None`` where none was given). Reads the whole store (a server's start)."""
        latest: dict[tuple[str, str], float | None] = {}
        query = sa.select(events_table.c.user, events_table.c.item, events_table.c.value).where(
            LIVE).order_by(events_table.c.received, events_table.c.id)
        with self._connect(write=False) as conn:
            for user, item, value in conn.execute(query):
                if value is not None or (user, item) not in latest:
                    latest[(user, item)] = value
        return _by_user(latest)

    def user_values_after(self, last_id: int) -> dict[str, list[tuple[str, float | None]]]:
        """:meth:`all_user_values` of the events stored after the one numbered
        ``last_id`` (:meth:`last_id`): what a server that read the store then is missing.
        Costs what those events cost (the primary key's order)."""
        latest: dict[tuple[str, str], float | None] = {}
        query = sa.select(events_table.c.user, events_table.c.item, events_table.c.value).where(
            events_table.c.id > last_id, LIVE).order_by(events_table.c.id)
        with self._connect(write=False) as conn:
            for user, item, value in conn.execute(query):
                if value is not None or (user, item) not in latest:
                    latest[(user, item)] = value
        return _by_user(latest)

    def last_id(self) -> int:
        """The number of the latest event stored (0: none yet)."""
        with self._connect(write=False) as conn:
            return int(conn.execute(sa.select(sa.func.max(events_table.c.id))).scalar() or 0)

    def erased_at(self, user: Any) -> float | None:
        """When ``user`` was last erased (seconds since the epoch), ``None`` if never."""
        query = sa.select(erasures_table.c.at).where(erasures_table.c.mark == self.mark(user))
        with self._connect(write=False) as conn:
            at = conn.execute(query).scalar()
        return None if at is None else float(at)

    def is_forgotten(self, user: Any) -> bool:
        """Whether ``user`` was ever erased (its mark is on record)."""
        return self.erased_at(user) is not None

    def erasures(self) -> dict[str, float]:
        """Every erasure's mark (:meth:`mark`) and time: ids are not on record."""
        with self._connect(write=False) as conn:
            return {str(m): float(at) for m, at in
                    conn.execute(sa.select(erasures_table.c.mark, erasures_table.c.at))}

    def erasure_state(self) -> tuple[int, float]:
        """The number of marks and the latest erasure's time: changes with every erasure
        (a server reading the store twice learns whether it must read it whole again)."""
        query = sa.select(sa.func.count(), sa.func.max(erasures_table.c.at))
        with self._connect(write=False) as conn:
            n, latest = conn.execute(query).one()
        return int(n), float(latest or 0.0)

    def count(self) -> int:
        """The number of events stored (erased ones not counted)."""
        with self._connect(write=False) as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events_table)
                                    .where(LIVE)).scalar_one())

    def to_frame(self) -> pd.DataFrame:
        """All events in arrival order: ``user, item, rating, timestamp`` (``rating`` only
        when some event has a value, ``timestamp`` only when every event has one). An id
        column comes back as integers when every id in it is the decimal text of an
        int64 (``"7"``, not ``"007"`` or ``"+7"``)."""
        cols = events_table.c
        query = (sa.select(cols.user, cols.item, cols.value.label("rating"), cols.timestamp)
                 .where(LIVE).order_by(cols.id))
        with self._connect(write=False) as conn:
            # The driver's own cursor: plain tuples, which pandas turns into columns in C
            # (SQLAlchemy's Row objects cost pandas a slow attribute probe each).
            cursor = conn.connection.cursor()
            try:
                cursor.execute(str(query.compile(dialect=conn.dialect)))
                frame = pd.DataFrame(cursor.fetchall(),
                                     columns=[d[0] for d in cursor.description])
            finally:
                cursor.close()
        for col in ("user", "item"):
            frame[col] = _ids(frame[col].to_numpy(dtype=object))
        if frame["rating"].isna().all():
            frame = frame.drop(columns="rating")
        else:
            frame["rating"] = frame["rating"].astype(np.float64)
        if frame.empty or frame["timestamp"].isna().any():
            frame = frame.drop(columns="timestamp")
        else:  # no NULL: integers as stored (never through float64)
            frame["timestamp"] = frame["timestamp"].astype(np.int64)
        return frame

    def to_interactions(self, duplicates: str = "last") -> Interactions:
        """The store as :class:`~recforge.data.interactions.Interactions` (training data)."""
        try:
            frame = self.to_frame()
        except (sa.exc.SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise self._error("cannot read the event store", exc) from None
        if frame.empty:
            raise DataError("the event store holds no events", source=self.name)
        if "rating" in frame and frame["rating"].isna().any():
            frame = _fill_values(frame, self.name)
        return Interactions.from_frame(frame, duplicates=duplicates,  # type: ignore[arg-type]
                                       source=self.name)

    @staticmethod
    def ids(values: Iterable[Any]) -> list[str]:
        return [str(v) for v in values]


def _by_user(latest: dict[tuple[str, str], float | None]
             ) -> dict[str, list[tuple[str, float | None]]]:
    out: dict[str, list[tuple[str, float | None]]] = {}
    for (user, item), value in latest.items():
        out.setdefault(user, []).append((item, value))
    return out


def _fill_values(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Events posted without a value among events with values, as the server reads them:
    an event without a value keeps the value its (user, item) pair had before (or, for a
    pair whose first events came without one, the first value given later). Pairs that
    never got a value cannot join rated data: they are left out, with a warning."""
    pairs = frame.groupby(["user", "item"], sort=False)["rating"]
    rating = pairs.ffill().fillna(pairs.bfill())
    frame = frame.assign(rating=rating)
    left = frame["rating"].isna()
    if left.any():
        _log.warning("%s: %s of %s events belong to (user, item) pairs that were never "
                     "posted with a value while other events were; they are left out of the "
                     "rated training data", name, f"{int(left.sum()):,}", f"{len(frame):,}")
        frame = frame.loc[~left].reset_index(drop=True)
    return frame


def _ids(text: np.ndarray) -> np.ndarray:
    """Ids as stored (text), or as int64 when every one is the canonical text of one.
    Decided on the distinct ids only: far fewer than the events."""
    codes, uniques = pd.factorize(text)
    if len(uniques) == 0:
        return text
    unique_text = np.asarray(uniques, dtype=object)
    as_int = pd.to_numeric(pd.Series(unique_text), errors="coerce")
    if as_int.dtype.kind not in "iu" or as_int.dtype.kind == "u" and as_int.max() > 2**63 - 1:
        return text
    ints = as_int.to_numpy(dtype=np.int64)
    if not (ints.astype(str).astype(object) == unique_text).all():
        return text
    return ints[codes]
