"""What differs between the SQL databases behind SQLACHEMY: one small class per dialect, nothing more.

The broker (fsdf/brokers/sql.py) writes every statement once in SQLAlchemy Core; a dialect adds
only what SQL does not say the same way everywhere:

- ``now``: the database server's clock in epoch seconds (a float), so due times written by fsdf,
  by another program's plain ``INSERT`` (the column default) and the take all read one clock;
- ``take``: lease up to n due rows to one fetch. PostgreSQL: one ``UPDATE ... WHERE id IN (SELECT
  ... FOR UPDATE SKIP LOCKED) RETURNING``. MariaDB 10.6+/MySQL 8: ``SELECT ... FOR UPDATE SKIP
  LOCKED`` then ``UPDATE`` of those ids in one transaction (neither has ``UPDATE ... RETURNING`` nor
  ``LIMIT`` in an ``IN`` subquery). SQLite: one ``UPDATE ... RETURNING`` (SQLite has one writer at a
  time, so the statement is the lock);
- ``name_problem``: the identifier limits (PostgreSQL 63 bytes, MySQL 64 characters, SQLite's
  ``sqlite_`` prefix), counted for the ``_dlq`` sibling too;
- ``prepare_table`` and ``waiter``: on PostgreSQL a statement trigger NOTIFYs on every insert (fsdf's
  or another program's) and an idle consumer LISTENs; the others poll with a back-off.
"""
from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, ClassVar, Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from fsdf.names import DEAD_LETTER_SUFFIX

FIRST_PAUSE_SECONDS = 0.002  # polling dialects: after an empty take, doubling up to the longest pause
LONGEST_PAUSE_SECONDS = 0.05  # a message published to an idle queue waits at most this long


class Waiter:
    """Waits between empty takes: a poll with a back-off from 2 ms to 50 ms, woken early by ``closed``."""

    def __init__(self) -> None:
        self._pause = FIRST_PAUSE_SECONDS

    def took(self) -> None:
        """A take returned messages: the next wait starts short again."""
        self._pause = FIRST_PAUSE_SECONDS

    def wait(self, seconds: float, closed: threading.Event) -> None:
        """Wait up to ``seconds`` for a message to be published."""
        closed.wait(min(self._pause, seconds))
        self._pause = min(self._pause * 2, LONGEST_PAUSE_SECONDS)

    def close(self) -> None:
        """Release what the waiter holds."""


class SqlDialect:
    """The generic parts, and the defaults the dialects below change."""

    backend_names: ClassVar[tuple[str, ...]] = ()
    now_sql: ClassVar[str] = ''
    """SQL for the server's clock in epoch seconds: the ``due`` column's default."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def engine_options(cls) -> dict[str, Any]:
        """Keyword arguments for ``sqlalchemy.create_engine``."""
        return {'isolation_level': 'READ COMMITTED', 'pool_size': 10, 'max_overflow': 60}

    @classmethod
    def name_problem(cls, name: str) -> Optional[str]:
        """What this database forbids in a table name, or None."""
        return None

    def now(self) -> sa.ColumnElement[float]:
        """The server's clock, in epoch seconds, as an SQL expression."""
        return sa.literal_column(self.now_sql, sa.Double())

    def prepare_table(self, connection: Connection, table: sa.Table) -> None:
        """Run once, in the transaction that creates the queue's table."""

    def take(self, connection: Connection, table: sa.Table, max_count: int, lease: dict[str, Any]) -> Sequence[Row]:
        """Lease up to ``max_count`` due rows (oldest due first) with the values ``lease``; rows of (id, body, due)."""
        chosen = (sa.select(table.c.id).where(table.c.lease.is_(None), table.c.due <= self.now())
                  .order_by(table.c.due, table.c.id).limit(max_count))
        return connection.execute(sa.update(table).where(table.c.id.in_(self.lock(chosen).scalar_subquery()))
                                  .values(lease).returning(table.c.id, self.body(table), table.c.due)).all()

    def body(self, table: sa.Table) -> sa.ColumnElement[Any]:
        """The body column as a take reads it."""
        return table.c.body

    def lock(self, chosen: sa.Select[Any]) -> sa.Select[Any]:
        """The row lock a take's SELECT takes (none where the statement itself is the lock)."""
        return chosen.with_for_update(skip_locked=True)

    def notify(self, connection: Connection, table: sa.Table) -> None:
        """Wake idle consumers of ``table`` after a change an insert trigger does not see (a requeue)."""

    def waiter(self, table: sa.Table) -> Waiter:
        """How an idle consumer of ``table`` waits for the next message."""
        return Waiter()


class SqliteDialect(SqlDialect):
    """SQLite 3.35+ (``RETURNING``): one file, one writer at a time, WAL so readers never block it."""

    backend_names = ('sqlite',)
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    @classmethod
    def engine_options(cls) -> dict[str, Any]:
        # 60 s: writers of many processes queue for the one write lock instead of failing with "database is locked".
        return {'connect_args': {'timeout': 60, 'check_same_thread': False}, 'pool_size': 10, 'max_overflow': 60}

    @classmethod
    def name_problem(cls, name: str) -> Optional[str]:
        if name.lower().startswith('sqlite_'):
            return 'is reserved by SQLite (names starting with "sqlite_")'
        return None

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        sa.event.listen(engine, 'connect', _sqlite_pragmas)

    def body(self, table: sa.Table) -> sa.ColumnElement[Any]:
        # As bytes: SQLite keeps whatever another program wrote as TEXT, and the driver decodes a
        # whole reply as UTF-8, so one row that is not UTF-8 would fail every take that meets it.
        return sa.cast(table.c.body, sa.LargeBinary).label('body')

    def lock(self, chosen: sa.Select[Any]) -> sa.Select[Any]:
        return chosen  # the UPDATE holds SQLite's one write lock from its start: no other take runs meanwhile


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute('PRAGMA journal_mode=WAL')  # readers (count) do not wait for the writer
    cursor.execute('PRAGMA synchronous=NORMAL')  # durable across process crashes; WAL syncs at checkpoints
    cursor.close()


class PostgresDialect(SqlDialect):
    """PostgreSQL 9.5+: SKIP LOCKED takes, and LISTEN/NOTIFY so an idle consumer wakes at once."""

    backend_names = ('postgresql',)
    now_sql = 'extract(epoch from clock_timestamp())::float8'
    max_identifier_bytes = 63  # NAMEDATALEN - 1: longer names are cut, and two queues could share a table

    @classmethod
    def name_problem(cls, name: str) -> Optional[str]:
        limit = cls.max_identifier_bytes - len(DEAD_LETTER_SUFFIX)
        if len(name.removesuffix(DEAD_LETTER_SUFFIX).encode('utf-8')) > limit:
            return f'is longer than {limit} bytes, the most a PostgreSQL table name (and its "_dlq") allows'
        return None

    def prepare_table(self, connection: Connection, table: sa.Table) -> None:
        connection.execute(sa.text(
            'CREATE OR REPLACE FUNCTION fsdf_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN '
            "PERFORM pg_notify('fsdf_q_' || substr(md5(TG_TABLE_NAME), 1, 24), ''); RETURN NULL; END $$"))
        quoted = connection.dialect.identifier_preparer.format_table(table)
        connection.execute(sa.text(f'CREATE OR REPLACE TRIGGER fsdf_notify AFTER INSERT ON {quoted} '
                                   'FOR EACH STATEMENT EXECUTE FUNCTION fsdf_notify_insert()'))

    def notify(self, connection: Connection, table: sa.Table) -> None:
        connection.execute(sa.select(sa.func.pg_notify(channel(table.name), '')))

    def waiter(self, table: sa.Table) -> Waiter:
        return ListenWaiter(self.engine, channel(table.name))


def channel(table_name: str) -> str:
    """The NOTIFY channel of a queue's table: what the insert trigger computes (md5 of the name, in SQL)."""
    return 'fsdf_q_' + hashlib.md5(table_name.encode('utf-8')).hexdigest()[:24]


class ListenWaiter(Waiter):
    """PostgreSQL: LISTENs while idle, on its own connection; a NOTIFY of an insert ends the wait at once.

    It listens only between an empty take and the next non-empty one, so a busy consumer leaves no
    notifications piling up in the server's queue. The first empty take starts listening and returns
    at once: the take after it sees anything published before the LISTEN, the wait anything after.
    A wait lasts at most 0.5 s: delayed messages that come due and requeued ones send no insert.
    """

    LONGEST_WAIT_SECONDS = 0.5

    def __init__(self, engine: Engine, channel_name: str) -> None:
        super().__init__()
        self._engine = engine
        self._channel = channel_name
        self._connection: Any = None  # a psycopg connection outside the pool, in autocommit
        self._listening = False

    def took(self) -> None:
        if self._listening:
            self._listening = False
            try:
                self._connection.execute(f'UNLISTEN {self._channel}')  # the name is 'fsdf_q_' and hex digits
            except Exception:  # a broken connection stops listening too
                self._drop()

    def wait(self, seconds: float, closed: threading.Event) -> None:
        if not self._listening:
            try:
                self._listen()
            except Exception:  # no listening connection now: poll, and try again next wait
                self._drop()
                super().wait(seconds, closed)
            return
        deadline = time.monotonic() + min(seconds, self.LONGEST_WAIT_SECONDS)
        try:
            while not closed.is_set() and (remaining := deadline - time.monotonic()) > 0:
                if any(True for _ in self._connection.notifies(timeout=min(remaining, 0.1), stop_after=1)):
                    return
        except Exception:
            self._drop()

    def _listen(self) -> None:
        if self._connection is None:
            raw = self._engine.raw_connection()
            connection: Any = raw.driver_connection
            raw.detach()  # its own connection for good: the pool never hands it to a statement
            connection.rollback()  # out of any transaction the pool left open, so autocommit can be set
            connection.autocommit = True
            self._connection = connection
        self._connection.execute(f'LISTEN {self._channel}')
        self._listening = True

    def _drop(self) -> None:
        connection, self._connection, self._listening = self._connection, None, False
        if connection is not None:
            try:
                connection.close()
            except Exception:  # already broken
                pass

    def close(self) -> None:
        self._drop()


class MysqlDialect(SqlDialect):
    """MariaDB 10.6+ and MySQL 8+: SKIP LOCKED, two statements in one transaction, tables in utf8mb4 InnoDB."""

    backend_names = ('mysql', 'mariadb')
    now_sql = 'UNIX_TIMESTAMP(NOW(6))'
    max_identifier_chars = 64

    @classmethod
    def name_problem(cls, name: str) -> Optional[str]:
        limit = cls.max_identifier_chars - len(DEAD_LETTER_SUFFIX)
        if len(name.removesuffix(DEAD_LETTER_SUFFIX)) > limit:
            return f'is longer than {limit} characters, the most a MySQL table name (and its "_dlq") allows'
        if name.endswith(' '):
            return 'ends with a space, which MySQL table names cannot'
        return None

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        with engine.connect():  # the first connection tells the dialect the server's version
            version = engine.dialect.server_version_info or (0,)
        mariadb = getattr(engine.dialect, 'is_mariadb', False)
        if version < ((10, 6) if mariadb else (8, 0)):
            raise RuntimeError(f'SQLACHEMY needs MariaDB 10.6+ or MySQL 8.0+ (FOR UPDATE SKIP LOCKED); '
                               f'the server is {".".join(map(str, version))}')

    def take(self, connection: Connection, table: sa.Table, max_count: int, lease: dict[str, Any]) -> Sequence[Row]:
        rows = connection.execute(self.lock(
            sa.select(table.c.id, table.c.body, table.c.due).where(table.c.lease.is_(None), table.c.due <= self.now())
            .order_by(table.c.due, table.c.id).limit(max_count))).all()
        if rows:
            connection.execute(sa.update(table).where(table.c.id.in_([row.id for row in rows])).values(lease))
        return rows


DIALECTS: tuple[type[SqlDialect], ...] = (SqliteDialect, PostgresDialect, MysqlDialect)


def dialect_class(backend_name: str) -> type[SqlDialect]:
    """The dialect for a SQLAlchemy backend name (``URL.get_backend_name()``); ValueError if not supported."""
    for dialect in DIALECTS:
        if backend_name in dialect.backend_names:
            return dialect
    supported = ', '.join(name for dialect in DIALECTS for name in dialect.backend_names)
    raise ValueError(f'SQLACHEMY_ENGINE_URL is a {backend_name} URL; the SQLACHEMY broker supports {supported}')
