"""Durable records (SQLAlchemy Core): per-user daily quotas, and the tables other modules add.

One code path for two databases:

- **SQLite** (the default, ``storage.path``; ``:memory:`` keeps it in memory): one connection guarded by a
  lock, so the store can be used from worker threads; the file is created owner-only in a private folder,
  in WAL mode, with ``secure_delete`` (deleted rows are overwritten); transactions are ``BEGIN IMMEDIATE``.
- **PostgreSQL** (cluster mode, ``cluster.database_url``: ``postgresql://`` or ``postgresql+psycopg://``,
  driven by psycopg 3): a small connection pool (checked before use); several processes share the records.
  TLS is what the URL says (``?sslmode=verify-full``); nothing here turns verification off.

Each module owns its tables: it declares them as SQLAlchemy :class:`~sqlalchemy.Table` objects on a
:class:`~sqlalchemy.MetaData` of its own and calls :meth:`Store.create` at start, which creates what is
missing and migrates what an earlier version made (see there). Statements are SQLAlchemy Core
(``select``, ``update``, :meth:`Store.insert` for ``ON CONFLICT``), so they run on both databases.

Store nothing personal here beyond Telegram ids: no names, no ID numbers, no images.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    Row,
    Table,
    Text,
    column,
    create_engine,
    delete,
    event,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, ResourceClosedError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateColumn

from core.infra.redact import register_secret

T = TypeVar("T")

#: What ``cluster.database_url`` may start with (``postgresql://`` means the psycopg 3 driver).
SCHEMES = ("postgresql", "postgresql+psycopg")
#: Connections the PostgreSQL pool keeps open (plus at most :data:`POOL_OVERFLOW` more while busy).
POOL_SIZE, POOL_OVERFLOW = 2, 3
#: Seconds to wait for the PostgreSQL server to answer a connection (unless the URL says otherwise).
CONNECT_TIMEOUT = 10
#: The PostgreSQL advisory lock held while the schema is created, so processes starting together do not race.
_SCHEMA_LOCK = 0x61697062  # "aipb"

metadata = MetaData()

#: Uses of a command per user and day (``access.daily_quota``).
quota_use = Table(
    "quota_use",
    metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("command", Text, primary_key=True),
    Column("day", Text, primary_key=True),
    Column("count", Integer, nullable=False),
)


def insert_into(db: Connection | str, target: Table) -> Any:
    """``INSERT`` into ``target`` for the database of ``db`` (a connection, or the dialect's name), with
    ``.on_conflict_do_nothing(index_elements=…)`` and ``.on_conflict_do_update(index_elements=…, set_=…,
    where=…)``: the same statement on SQLite and PostgreSQL. Its result's ``rowcount`` says whether a row was
    written (0: the conflict did nothing; SQLAlchemy keeps an ``INSERT``'s row count only when asked to)."""
    name = db if isinstance(db, str) else db.dialect.name
    insert = pg_dialect.insert if name == "postgresql" else sqlite_dialect.insert
    return insert(target).execution_options(preserve_rowcount=True)


class StoreUnavailable(Exception):
    """The database cannot be opened or reached; ``str(err)`` is one line without a password."""


def is_url(value: str) -> bool:
    """Whether ``value`` names a database server (``scheme://…``) rather than a SQLite file."""
    return "://" in value


def shown_url(url: str) -> str:
    """``url`` with its password masked, for messages (never raises)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url if "@" not in url else f"…@{url.rsplit('@', 1)[1]}"


def check_url(url: str) -> URL:
    """``url`` parsed, with the psycopg 3 driver; :class:`StoreUnavailable` (one line, no password) unless it
    is a ``postgresql://`` or ``postgresql+psycopg://`` URL with a host or a socket folder and a database."""
    scheme = url.partition("://")[0]
    if scheme not in SCHEMES:
        wanted = " or ".join(f"{s}://" for s in SCHEMES)
        raise StoreUnavailable(f"must be a {wanted} URL (got {shown_url(url)!r})")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        raise StoreUnavailable(f"not a valid URL ({shown_url(url)!r}: {type(err).__name__})") from None
    if parsed.password:
        register_secret(parsed.password)
    if not parsed.database:
        raise StoreUnavailable(f"names no database (got {shown_url(url)!r}; write …/<database>)")
    if not parsed.host and not parsed.query.get("host"):
        raise StoreUnavailable(f"names no server (got {shown_url(url)!r})")
    return parsed.set(drivername="postgresql+psycopg")


def _one_line(err: BaseException, password: str | None) -> str:
    """The driver's words for ``err`` on one line, without ``password``."""
    cause = getattr(err, "orig", None) or err
    words = " ".join(str(cause).split()) or type(cause).__name__
    if password:
        words = words.replace(password, "***")
    return words[:300]


def connect(path: str) -> sqlite3.Connection:
    """A stdlib connection to the SQLite file ``path`` (created owner-only, in a private folder), in WAL mode,
    in autocommit mode (callers open their transactions), with ``secure_delete`` so deleted rows are
    overwritten. ``path`` may be ``:memory:``. (The store's own engine is made of one; so is the SQLite state.)"""
    if path != ":memory:":
        folder = Path(path).parent
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
        if not Path(path).exists():
            Path(path).touch(mode=0o600)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL" if path != ":memory:" else "PRAGMA journal_mode=MEMORY")
    db.execute("PRAGMA secure_delete=ON")
    return db


def _sqlite_engine(path: str) -> Engine:
    """One shared connection (``StaticPool``) to ``path``, in WAL mode (memory journal for ``:memory:``),
    ``secure_delete`` on, and ``BEGIN IMMEDIATE`` transactions (SQLAlchemy's recipe for pysqlite: the driver
    in autocommit mode, the ``BEGIN`` emitted by the ``begin`` event)."""
    engine = create_engine("sqlite://", creator=lambda: connect(path), poolclass=StaticPool)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite emits no BEGIN (nor a COMMIT before DDL) of its own

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.connect().close()  # the file and its folder now (an OSError here names storage.path)
    return engine


def _postgresql_engine(url: URL) -> Engine:
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": CONNECT_TIMEOUT}
    return create_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
    )


class Store:
    """The bot's database: a SQLite file (or ``:memory:``), or a ``postgresql://`` URL.

    :class:`StoreUnavailable` when it cannot be opened (a bad URL, a server that does not answer).
    """

    def __init__(self, url_or_path: str | Path) -> None:
        target = str(url_or_path)
        self._password: str | None = None
        if is_url(target):
            url = check_url(target)
            self._password = url.password if isinstance(url.password, str) else None
            self.path = url.render_as_string(hide_password=True)  # what messages and reprs show
            self.engine = _postgresql_engine(url)
            self._lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        else:
            self.path = target
            try:
                self.engine = _sqlite_engine(target)
            except SQLAlchemyError as err:
                raise StoreUnavailable(_one_line(err, None)) from None
            self._lock = threading.Lock()  # one connection: one caller at a time, as before
        self.dialect: str = self.engine.dialect.name
        self._closed = False
        self.chat_columns: list[Any] = []  # columns holding a chat id, cleared by forget_user (names_chats)
        try:
            self.create(quota_use)
        except SQLAlchemyError as err:
            self.engine.dispose()
            if self.dialect == "sqlite":
                raise StoreUnavailable(_one_line(err, None)) from None
            raise StoreUnavailable(f"cannot connect to {self.path} ({_one_line(err, self._password)})") from None

    # ------------------------------------------------------------------ the API for modules and plugins
    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self._lock:
            if self._closed:
                raise ResourceClosedError("the store is closed")
            with self.engine.begin() as conn:
                yield conn

    def transaction(self, fn: Callable[[Connection], T]) -> T:
        """``fn(db)`` inside one transaction (committed when it returns, rolled back if it raises); ``db`` is
        a SQLAlchemy :class:`~sqlalchemy.Connection`. On SQLite the transaction is ``BEGIN IMMEDIATE`` (it
        holds the write lock from the start); on PostgreSQL it is ``READ COMMITTED``: make a change that
        must happen once a conditional ``UPDATE … WHERE`` and look at its ``rowcount``.

        For records that must change together (a batch of updates journaled at once); call it through
        ``services.run_db``.
        """
        with self._begin() as conn:
            return fn(conn)

    def execute(self, statement: Any, params: Sequence[Any] | dict[str, Any] | None = None) -> list[Row[Any]]:
        """Run one statement in a transaction of its own and return its rows (none for a statement without).

        ``statement``: a SQLAlchemy Core statement (``select(…)``, ``update(…)``, ``text("… :name")`` with a
        ``dict`` of ``params``). A plain string is passed to the driver as it is (``?`` marks its parameters,
        translated for PostgreSQL): for tests and one-off looks, not for code that must run on both.
        """
        with self._begin() as conn:
            if isinstance(statement, str):
                sql, args = self._driver_sql(statement), tuple(params or ())
                result = conn.exec_driver_sql(sql, args) if args else conn.exec_driver_sql(sql)
            else:
                result = conn.execute(statement, params) if params is not None else conn.execute(statement)
            return list(result.fetchall()) if result.returns_rows else []

    def _driver_sql(self, sql: str) -> str:
        if self.engine.dialect.paramstyle == "qmark":
            return sql
        return _QMARK.sub(lambda m: m.group(0) if m.group(0) != "?" else "%s", sql.replace("%", "%%"))

    def insert(self, target: Table) -> Any:
        """:func:`insert_into` for this store's database."""
        return insert_into(self.dialect, target)

    def create(self, *tables: Table) -> None:
        """Create the tables (and their indexes) that do not exist yet, and migrate those that do: a column
        added to a table's definition since (it must be nullable, without a default) is added with
        ``ALTER TABLE … ADD COLUMN``, and a missing index is created. Idempotent; call it at start, before
        the tables are used. On PostgreSQL an advisory lock makes processes that start together take turns.
        """
        with self._begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            found = inspect(conn)
            for wanted in tables:
                if not found.has_table(wanted.name):
                    wanted.create(conn)
                    continue
                have = {c["name"] for c in found.get_columns(wanted.name)}
                for col in wanted.columns:
                    if col.name in have:
                        continue
                    if not col.nullable or col.primary_key or col.server_default is not None:
                        raise StoreUnavailable(
                            f"cannot add the column {wanted.name}.{col.name} (not null or a default)"
                        )
                    name = conn.dialect.identifier_preparer.format_table(wanted)
                    conn.execute(
                        text(f"ALTER TABLE {name} ADD COLUMN {CreateColumn(col).compile(dialect=conn.dialect)}")
                    )
                for index in wanted.indexes:
                    index.create(conn, checkfirst=True)

    # ------------------------------------------------------------------ the core's own records
    def quota_used(self, user_id: int, command: str, day: str) -> int:
        """How many times ``user_id`` used ``command`` on ``day``."""
        c = quota_use.c
        rows = self.execute(select(c.count).where(c.user_id == user_id, c.command == command, c.day == day))
        return int(rows[0][0]) if rows else 0

    def use_quota(self, user_id: int, command: str, day: str, limit: int) -> bool:
        """Count one use of ``command`` by ``user_id`` on ``day`` if fewer than ``limit`` were used.

        One conditional upsert (``… ON CONFLICT DO UPDATE SET count = count + 1 WHERE count < limit``):
        exact when several processes count at once."""
        if limit <= 0:
            return False
        c = quota_use.c
        stmt = self.insert(quota_use).values(user_id=user_id, command=command, day=day, count=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[c.user_id, c.command, c.day], set_={"count": c.count + 1}, where=c.count < limit
        )

        def use(db: Connection) -> bool:
            counted = db.execute(stmt).rowcount == 1
            db.execute(delete(quota_use).where(c.day < day))
            return counted

        return self.transaction(use)

    def names_chats(self, chat_column: Any) -> None:
        """Register a column holding chat ids (e.g. ``outbox.c.chat_id``): :meth:`forget_user` deletes the rows
        naming the user's chats."""
        if all(chat_column is not known for known in self.chat_columns):
            self.chat_columns.append(chat_column)

    def forget_user(
        self, user_id: int, *, tables: tuple[str | Table, ...] = (), chats: tuple[int, ...] | None = None
    ) -> int:
        """Delete every row about ``user_id`` — its quota use, its rows in ``tables`` (each with a ``user_id``
        column), and the rows of every registered chat column (:meth:`names_chats`: the outbox) naming one of
        ``chats`` (default: the user's private chat, whose id is the user's) — in one transaction. On SQLite
        nothing is left behind in the files either: rows are overwritten (``secure_delete``) and the
        write-ahead log is checkpointed and truncated. Returns the number of rows deleted."""
        targets = [quota_use, *(t if isinstance(t, Table) else table(t, column("user_id")) for t in tables)]
        chat_ids = sorted({user_id, *(chats or ())})

        def forget(db: Connection) -> int:
            count = sum(db.execute(delete(t).where(t.c.user_id == user_id)).rowcount for t in targets)
            for chat_column in self.chat_columns:
                count += db.execute(delete(chat_column.table).where(chat_column.in_(chat_ids))).rowcount
            return count

        count = self.transaction(forget)
        if self.dialect == "sqlite":
            with self._lock:
                raw = self.engine.raw_connection()  # outside any transaction: the checkpoint must see none
                try:
                    raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
                finally:
                    raw.close()
        return count

    def close(self) -> None:
        """Close every connection; any later call raises ``ResourceClosedError`` (a ``SQLAlchemyError``)."""
        with self._lock:
            self._closed = True
            self.engine.dispose()

    def __repr__(self) -> str:
        shown = os.path.basename(self.path) if self.dialect == "sqlite" else self.path
        return f"Store({shown!r})"


#: A ``?`` outside quotes, or a quoted string (kept as is).
_QMARK = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?")

__all__ = ["SCHEMES", "Store", "StoreUnavailable", "check_url", "insert_into", "metadata", "quota_use", "shown_url"]
