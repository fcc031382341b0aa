"""The event store: interactions posted to the server, kept in a SQL database.

By default one SQLite file (``MODEL.events.sqlite`` beside the model directory) in WAL mode
with ``synchronous=FULL``; any SQLAlchemy URL instead (``postgresql+psycopg://user@host/db``,
``sqlite:///path``) when configured. The store is written with SQLAlchemy Core, so one code
path serves every database. An append returns only after its transaction is committed
(SQLite: on disk; PostgreSQL: with its default ``synchronous_commit=on``, flushed to its
WAL), so every acknowledged event survives a ``kill -9`` of the server. Events count as
seen items for their user at once; ``delete_user`` removes a user's events and remembers
the user as forgotten: a model may hold a copy of their data, so the server answers for
them as for a user it never saw (from events they post afterwards, if any), never from
that copy.
``recforge train --data events:PATH_OR_URL`` trains from the store.

Passwords never leave this module: errors and ``repr`` name the database by its URL with
the password replaced by ``***``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from recforge.errors import DataError

_log = logging.getLogger(__name__)

__all__ = ["EventStore", "mask_url"]

_metadata = sa.MetaData()

#: One row per posted event. The names and layout are those of the earlier raw-SQLite
#: store, so its files open unchanged. ``timestamp`` is 64-bit (millisecond epochs fit).
_events = sa.Table(
    "events", _metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("user", sa.Text(), nullable=False),
    sa.Column("item", sa.Text(), nullable=False),
    sa.Column("value", sa.Double()),
    sa.Column("timestamp", sa.BigInteger()),
    sa.Column("received", sa.Double(), nullable=False),
    sa.Index("events_user", "user"),
    sqlite_autoincrement=True,
)

#: Users who asked to be forgotten, and when (a later post does not undo it: a model
#: may hold a copy of their old data).
_forgotten = sa.Table(
    "forgotten", _metadata,
    sa.Column("user", sa.Text(), primary_key=True),
    sa.Column("at", sa.Double(), nullable=False),
)

#: Bound parameters per ``IN (...)`` list: far below every database's limit.
_CHUNK = 500

#: ``scheme://user:SECRET@``: everything up to the last ``@`` is masked, so a password
#: with a stray ``@`` or ``/`` in it never shows in part.
_PASSWORD_IN_TEXT = re.compile(r"(://[^:/@\s]*:)\S*@")
_PASSWORD_IN_QUERY = re.compile(r"(?i)([?&]password=)[^&\s]*")


def mask_url(target: str | URL) -> str:
    """``target`` as text with any password (in the authority or a ``password=`` query
    parameter) replaced by ``***``; works on strings that do not parse as a URL too."""
    text = (target.render_as_string(hide_password=False) if isinstance(target, URL)
            else str(target))
    return _PASSWORD_IN_QUERY.sub(r"\1***", _PASSWORD_IN_TEXT.sub(r"\1***@", text))


def _is_url(target: str | os.PathLike[str]) -> bool:
    return not isinstance(target, os.PathLike) and "://" in str(target)


def _secrets(url: URL) -> list[str]:
    """The literal passwords in ``url`` (to scrub from driver error messages)."""
    found = [url.password] if url.password else []
    query = url.query.get("password")
    found += [query] if isinstance(query, str) else list(query or ())
    return [str(s) for s in found if s]


def _scrub(message: str, secrets: Iterable[str]) -> str:
    """``message`` with every password in it replaced by ``***`` (a password of under four
    characters only where it stands alone, so that ``p`` does not garble ``password``)."""
    for secret in secrets:
        if len(secret) >= 4:
            message = message.replace(secret, "***")
        else:
            message = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***",
                             message)
    return message


def _reason(exc: BaseException) -> str:
    """A driver error's own message, first line, without SQLAlchemy's background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    text = text.split("\n(Background on this error")[0].strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every SQLite connection: WAL (readers never block the writer) and ``synchronous=FULL``
    (a commit returns once the WAL is synced to disk)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


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
        if _is_url(target):
            url = self._parse(str(target))
        else:
            self.path = Path(target)
            url = URL.create("sqlite", database=str(self.path))
        #: The database URL, password masked: safe to print and log.
        self.url = mask_url(url)
        #: Where the store is, for messages: the path given, else :attr:`url`.
        self.name = str(self.path) if self.path is not None else self.url
        self._secrets = _secrets(url)
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
        self._lock: threading.Lock | None = threading.Lock() if self._sqlite else None
        #: The SQLAlchemy engine (for callers that need the database directly).
        self.engine: Engine = self._engine(url)
        try:
            with self.engine.begin() as conn:
                if create:
                    _metadata.create_all(conn, checkfirst=True)
                else:
                    missing = [t.name for t in _metadata.sorted_tables
                               if not sa.inspect(conn).has_table(t.name)]
                    if missing:
                        raise DataError(f"no event store here (missing table "
                                        f"{', '.join(missing)})", source=self.name)
        except sa.exc.SQLAlchemyError as exc:
            self.engine.dispose()
            raise self._error("cannot open the event store", exc) from None
        except DataError:
            self.engine.dispose()
            raise

    # -- construction ----------------------------------------------------------------------
    def _parse(self, text: str) -> URL:
        try:
            url = make_url(text)
        except (sa.exc.ArgumentError, ValueError):
            raise DataError("not a valid database URL (the form is dialect+driver://user:"
                            "password@host:port/database, the port a number, special "
                            "characters in the password %-encoded)", source=mask_url(text)
                            ) from None
        if url.drivername in ("postgresql", "postgres"):  # psycopg 3, not SQLAlchemy 2.0's
            url = url.set(drivername="postgresql+psycopg")  # psycopg2 default
        return url

    def _engine(self, url: URL) -> Engine:
        kwargs: dict[str, Any] = {}
        if self._sqlite:
            # Wait for another process's write instead of failing with "database is locked".
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            database = url.database or ""
            if database in ("", ":memory:"):  # one shared in-memory database, not one per
                kwargs["poolclass"] = sa.pool.StaticPool  # thread
        else:
            kwargs["pool_pre_ping"] = True  # survive a database restart under a long server
            if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
                kwargs["connect_args"] = {"connect_timeout": 10}  # fail, not hang, when the
                # host does not answer
        try:
            engine = sa.create_engine(url, **kwargs)
        except sa.exc.NoSuchModuleError:
            raise DataError(f"unknown database type {url.drivername!r} (a SQLAlchemy URL "
                            "such as sqlite:///events.db or postgresql+psycopg://user@host/db"
                            ")", source=self.name) from None
        except ImportError as exc:
            hint = (" (pip install 'recforge[postgres]')"
                    if url.get_backend_name() == "postgresql" else "")
            raise DataError(f"the database driver for {url.drivername} is not installed: "
                            f"{exc}{hint}", source=self.name) from None
        except (sa.exc.ArgumentError, TypeError) as exc:
            raise DataError(f"bad database URL: {_scrub(str(exc), self._secrets)}",
                            source=self.name) from None
        if self._sqlite:
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def _error(self, what: str, exc: BaseException) -> DataError:
        return DataError(f"{what}: {_scrub(_reason(exc), self._secrets)}", source=self.name)

    @contextmanager
    def _connect(self, write: bool) -> Iterator[Connection]:
        """A connection (in a transaction, committed on exit, when ``write``)."""
        if self._lock is not None:
            self._lock.acquire()
        try:
            with (self.engine.begin() if write else self.engine.connect()) as conn:
                yield conn
        finally:
            if self._lock is not None:
                self._lock.release()

    def close(self) -> None:
        """Close every pooled connection."""
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
        _check_ids([r["user"] for r in rows] + [r["item"] for r in rows])
        with self._connect(write=True) as conn:
            if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
                _copy_events(conn, rows)
            else:
                conn.execute(_events.insert(), rows)  # one executemany
        return len(rows)

    def delete_user(self, user: Any) -> int:
        """Remove every event of ``user`` and remember them as forgotten; returns the
        number of events removed."""
        user_s, now = str(user), time.time()
        with self._connect(write=True) as conn:
            n = conn.execute(_events.delete().where(_events.c.user == user_s)).rowcount
            conn.execute(self._upsert_forgotten(conn, user_s, now))
        return int(n)

    def _upsert_forgotten(self, conn: Connection, user: str, at: float) -> sa.Executable:
        dialect = conn.dialect.name
        if dialect in ("sqlite", "postgresql"):
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            stmt = insert(_forgotten).values(user=user, at=at)
            return stmt.on_conflict_do_update(index_elements=[_forgotten.c.user],
                                              set_={"at": stmt.excluded.at})
        # Other databases: delete, then insert, in the caller's transaction.
        conn.execute(_forgotten.delete().where(_forgotten.c.user == user))
        return _forgotten.insert().values(user=user, at=at)

    # -- reads -----------------------------------------------------------------------------
    def user_items(self, user: Any) -> list[str]:
        """The distinct items ``user`` posted."""
        query = sa.select(_events.c.item).where(_events.c.user == str(user)).distinct()
        with self._connect(write=False) as conn:
            return list(conn.execute(query).scalars())

    def all_user_items(self) -> dict[str, list[str]]:
        """Every user's posted items (for an in-memory index at server start)."""
        out: dict[str, list[str]] = {}
        query = sa.select(_events.c.user, _events.c.item).distinct()
        with self._connect(write=False) as conn:
            for user, item in conn.execute(query):
                out.setdefault(user, []).append(item)
        return out

    def all_user_values(self) -> dict[str, list[tuple[str, float | None]]]:
        """Every user's posted ``(item, value)`` pairs, the latest value of each pair
        (``None`` where none was given)."""
        latest: dict[tuple[str, str], float | None] = {}
        query = sa.select(_events.c.user, _events.c.item, _events.c.value).order_by(
            _events.c.received, _events.c.id)
        with self._connect(write=False) as conn:
            for user, item, value in conn.execute(query):
                if value is not None or (user, item) not in latest:
                    latest[(user, item)] = value
        out: dict[str, list[tuple[str, float | None]]] = {}
        for (user, item), value in latest.items():
            out.setdefault(user, []).append((item, value))
        return out

    def is_forgotten(self, user: Any) -> bool:
        query = sa.select(sa.literal(1)).where(_forgotten.c.user == str(user))
        with self._connect(write=False) as conn:
            return conn.execute(query).first() is not None

    def forgotten(self) -> set[str]:
        with self._connect(write=False) as conn:
            return set(conn.execute(sa.select(_forgotten.c.user)).scalars())

    def forgotten_at(self) -> dict[str, float]:
        """Each forgotten user and when (seconds since the epoch)."""
        with self._connect(write=False) as conn:
            return {str(u): float(at) for u, at in
                    conn.execute(sa.select(_forgotten.c.user, _forgotten.c.at))}

    def count(self) -> int:
        with self._connect(write=False) as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(_events))
                       .scalar_one())

    def to_frame(self) -> pd.DataFrame:
        """All events in arrival order: ``user, item, rating, timestamp`` (``rating`` only
        when some event has a value, ``timestamp`` only when every event has one). An id
        column comes back as integers when every id in it is the decimal text of an
        int64 (``"7"``, not ``"007"`` or ``"+7"``)."""
        query = (sa.select(_events.c.user, _events.c.item, _events.c.value.label("rating"),
                           _events.c.timestamp).order_by(_events.c.id))
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

    def to_interactions(self, duplicates: str = "last") -> Any:
        """The store as :class:`~recforge.data.interactions.Interactions` (training data)."""
        from recforge.data.interactions import Interactions

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


def _check_ids(ids: list[str]) -> None:
    """Ids every database stores alike: no NUL character (PostgreSQL's text refuses it)
    and valid Unicode (no unpaired surrogate, which has no UTF-8 form)."""
    joined = "\n".join(ids)
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError("an id is not valid Unicode (an unpaired surrogate)") from None
    if "\x00" in joined:
        raise DataError("an id contains a NUL character")


def _copy_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` with PostgreSQL's ``COPY`` through psycopg 3, in the caller's
    transaction: five times the rate of an executemany (95,000 against 20,000 events a
    second in batches of 1,000 on a local server)."""
    names = [c.name for c in _events.columns if c.name != "id"]
    preparer = conn.dialect.identifier_preparer
    sql = (f"COPY {preparer.format_table(_events)} "
           f"({', '.join(preparer.quote(n) for n in names)}) FROM STDIN")
    cursor = conn.connection.cursor()
    try:
        with cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row([row[n] for n in names])
    finally:
        cursor.close()


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
