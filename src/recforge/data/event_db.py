"""The database side of the event store (:mod:`recforge.data.events`): its tables, the
engines and connections of SQLite and server databases, the statements that differ by
dialect, and database URLs with their passwords kept out of every message.

Passwords never leave this module and :mod:`recforge.data.events`: errors and ``repr``
name the database by its URL with the password replaced by ``***``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url

from recforge.errors import DataError

__all__ = [
    "BUSY_TIMEOUT",
    "LEGACY_USER_INDEX",
    "LIVE",
    "check_ids",
    "copy_events",
    "create_engine",
    "driver_reason",
    "erasures_table",
    "events_table",
    "insert_ignore",
    "is_url",
    "legacy_forgotten_table",
    "mask_url",
    "metadata",
    "parse_url",
    "scrub",
    "store_info_table",
    "upsert_marks",
    "url_secrets",
]

metadata = sa.MetaData()

#: One row per posted event. The names and layout are those of the earlier raw-SQLite
#: store (plus ``user_tag``), so its files open (and are upgraded: ``EventStore.
#: _upgrade``). ``timestamp`` is 64-bit (millisecond epochs fit). ``user_tag`` is a keyed
#: hash of ``user`` (``EventStore.tag``), the only user column an index holds: an
#: index on the id itself keeps copies of it in the free space of its pages after splits.
#: ``NULL`` marks an erased event's tombstone (SQLite), which every read leaves out.
events_table = sa.Table(
    "events", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("user", sa.Text(), nullable=False),
    sa.Column("item", sa.Text(), nullable=False),
    sa.Column("value", sa.Double()),
    sa.Column("timestamp", sa.BigInteger()),
    sa.Column("received", sa.Double(), nullable=False),
    sa.Column("user_tag", sa.BigInteger()),
    sa.Index("events_user_tag", "user_tag", sqlite_where=sa.text("user_tag IS NOT NULL"),
             postgresql_where=sa.text("user_tag IS NOT NULL")),
    sqlite_autoincrement=True,
)

#: Erased users: a keyed hash of the id (``EventStore.mark``) and the time of the
#: latest erasure. A later post does not undo it: a model trained before it may hold a
#: copy of the old data.
erasures_table = sa.Table(
    "erasures", metadata,
    sa.Column("mark", sa.String(64), primary_key=True),
    sa.Column("at", sa.Double(), nullable=False),
)

#: The store's own settings: ``key``, the random secret of its tags and marks.
store_info_table = sa.Table(
    "store_info", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
)

#: The earlier versions' table of erased users, ids in clear (upgraded to marks, dropped).
legacy_forgotten_table = sa.Table(
    "forgotten", sa.MetaData(),
    sa.Column("user", sa.Text(), primary_key=True),
    sa.Column("at", sa.Double(), nullable=False),
)

#: The earlier versions' index on the user id itself (dropped by the upgrade).
LEGACY_USER_INDEX = "events_user"

#: Rows that are events (not tombstones of erased ones).
LIVE = events_table.c.user_tag.is_not(None)

#: How long a SQLite call waits for another process's write (seconds) instead of failing
#: with "database is locked".
BUSY_TIMEOUT = 30

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


def is_url(target: str | os.PathLike[str]) -> bool:
    return not isinstance(target, os.PathLike) and "://" in str(target)


def url_secrets(url: URL) -> list[str]:
    """The literal passwords in ``url`` (to scrub from driver error messages)."""
    found = [url.password] if url.password else []
    query = url.query.get("password")
    found += [query] if isinstance(query, str) else list(query or ())
    return [str(s) for s in found if s]


def scrub(message: str, secrets: Iterable[str]) -> str:
    """``message`` with every password in it replaced by ``***`` (a password of under four
    characters only where it stands alone, so that ``p`` does not garble ``password``)."""
    for secret in secrets:
        if len(secret) >= 4:
            message = message.replace(secret, "***")
        else:
            message = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***",
                             message)
    return message


def driver_reason(exc: BaseException) -> str:
    """A driver error's own message, first line, without SQLAlchemy's background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    text = text.split("\n(Background on this error")[0].strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: Page size of a new SQLite store (bytes; SQLite's default is 4096). Events arrive
#: interleaved across users, so an erasure rewrites about one page per erased event, twice
#: (WAL, then the checkpoint into the file): 1 KiB pages cut that I/O by four. Measured on a
#: 1,000,000-event store on 2 cores: 6.2-7.7 ms to erase a user of 238 events against
#: 8.7-12.7 ms with 4 KiB pages, the file 2 % larger.
PAGE_SIZE = 1024


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every SQLite connection: :data:`PAGE_SIZE` (only a new, empty file takes it; it must
    come before WAL mode, which writes the header), WAL (readers never block the writer),
    ``synchronous=FULL`` (a commit returns once the WAL is synced to disk) and
    ``secure_delete`` (deleted content is overwritten with zeros, also in pages put on the
    free list: some builds of SQLite have it on by default, others not)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA page_size={PAGE_SIZE}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA secure_delete=ON")
    finally:
        cursor.close()


def parse_url(text: str) -> URL:
    """A SQLAlchemy URL from text (``postgresql://`` and ``postgres://`` mean psycopg 3); a
    malformed one is a DataError naming it with its password masked."""
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


def create_engine(url: URL, name: str, secrets: list[str]) -> Engine:
    """The engine of ``url``: on SQLite a shared in-memory database or a file with the
    pragmas of :func:`_sqlite_pragmas` and a busy timeout; elsewhere pooled connections
    checked before use. ``name`` and ``secrets`` serve the error messages."""
    is_sqlite = url.get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {}
    if is_sqlite:
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT, "check_same_thread": False}
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
                        ")", source=name) from None
    except ImportError as exc:
        hint = (" (pip install 'recforge[postgres]')"
                if url.get_backend_name() == "postgresql" else "")
        raise DataError(f"the database driver for {url.drivername} is not installed: "
                        f"{exc}{hint}", source=name) from None
    except (sa.exc.ArgumentError, TypeError) as exc:
        raise DataError(f"bad database URL: {scrub(str(exc), secrets)}", source=name) from None
    if is_sqlite:
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def upsert_marks(conn: Connection, marks: list[dict[str, Any]]) -> None:
    """Insert or update erasure marks (``mark``, ``at``), in the caller's transaction."""
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        stmt = insert(erasures_table)
        conn.execute(stmt.on_conflict_do_update(index_elements=[erasures_table.c.mark],
                                                set_={"at": stmt.excluded.at}), marks)
    else:  # other databases: delete, then insert
        conn.execute(erasures_table.delete().where(erasures_table.c.mark == sa.bindparam("m")),
                     [{"m": m["mark"]} for m in marks])
        conn.execute(erasures_table.insert(), marks)


def insert_ignore(conn: Connection, table: sa.Table, values: dict[str, Any]
                  ) -> sa.Executable:
    """An insert that leaves an existing row with the same key alone (SQLite,
    PostgreSQL; elsewhere a plain insert)."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return sqlite.insert(table).values(**values).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(table).values(**values).on_conflict_do_nothing()
    return table.insert().values(**values)


def check_ids(ids: list[str]) -> None:
    """Ids every database stores alike: no NUL character (PostgreSQL's text refuses it)
    and valid Unicode (no unpaired surrogate, which has no UTF-8 form)."""
    joined = "\n".join(ids)
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError("an id is not valid Unicode (an unpaired surrogate)") from None
    if "\x00" in joined:
        raise DataError("an id contains a NUL character")


def copy_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` with PostgreSQL's ``COPY`` through psycopg 3, in the caller's
    transaction: five times the rate of an executemany (95,000 against 20,000 events a
    second in batches of 1,000 on a local server)."""
    names = [c.name for c in events_table.columns if c.name != "id"]
    preparer = conn.dialect.identifier_preparer
    sql = (f"COPY {preparer.format_table(events_table)} "
           f"({', '.join(preparer.quote(n) for n in names)}) FROM STDIN")
    cursor = conn.connection.cursor()
    try:
        with cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row([row[n] for n in names])
    finally:
        cursor.close()
