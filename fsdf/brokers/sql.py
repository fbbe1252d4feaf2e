"""SQLACHEMY: a table per queue in PostgreSQL, MariaDB/MySQL or SQLite, through SQLAlchemy 2 Core.

The database is ``SQLACHEMY_ENGINE_URL`` (empty: ``sqlite:///<PERSIST_QUEUE_PATH>/fsdf_sql_queues.sqlite``),
e.g. ``postgresql+psycopg://user:pw@host/db`` or ``mysql+pymysql://user:pw@host/db``. Queue ``q`` is the
table ``q`` (its name quoted by SQLAlchemy, never formatted into SQL), its dead letters the table ``q_dlq``.
One row per message::

    id        BIGINT, autoincrement primary key
    body      TEXT (LONGTEXT on MySQL): the message's JSON text
    due       DOUBLE, epoch seconds on the database server's clock: when the message may be taken;
              defaults to the server's "now", so a delayed message is a row with a later due time
    lease     VARCHAR(32), NULL while waiting; the token of the fetch that took it
    consumer  VARCHAR(255), NULL while waiting; the consumer that took it (host:pid:id)
    taken_at  DOUBLE, NULL while waiting; when it was taken (server clock)

Another program publishes with ``INSERT INTO q (body) VALUES ('{"a": 1, "b": 2}')``.
A take leases the oldest due rows (``ORDER BY due, id``) to one fetch with a fresh token (see
fsdf/brokers/sql_dialects.py for the statement on each database); ack DELETEs the row (acks from many
threads go out together, one ``DELETE ... WHERE id IN`` each); requeue sets ``lease`` back to NULL.
``count`` counts waiting due rows; ``purge`` deletes waiting rows, delayed ones too. Consumers beat
into ``fsdf_consumers`` (``consumer, queue, host, pid, last_beat``); rows leased to a consumer that
is dead by :func:`fsdf.brokers.liveness.is_dead` go back to waiting, put there by any other consumer of the queue.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar, Optional

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine

from fsdf.brokers import liveness
from fsdf.brokers.ack_batch import AckBatch
from fsdf.brokers.base import Broker, Delivery, waited
from fsdf.brokers.sql_dialects import SqlDialect, dialect_class
from fsdf.config import settings
from fsdf.hosts import HOST
from fsdf.runtime import default_runtime

DEFAULT_SQLITE_FILE = 'fsdf_sql_queues.sqlite'
CONSUMERS_TABLE = 'fsdf_consumers'
def engine_url() -> str:
    """``SQLACHEMY_ENGINE_URL``, or the default SQLite file in ``PERSIST_QUEUE_PATH``."""
    if settings.SQLACHEMY_ENGINE_URL:
        return settings.SQLACHEMY_ENGINE_URL
    folder = settings.path('PERSIST_QUEUE_PATH')
    folder.mkdir(parents=True, exist_ok=True)
    return f'sqlite:///{Path(folder) / DEFAULT_SQLITE_FILE}'


def queue_table(name: str, metadata: sa.MetaData, now_sql: str) -> sa.Table:
    """The table of queue ``name``: the row shape the module docstring documents (``now_sql``: due's default)."""
    short = uuid.uuid5(uuid.NAMESPACE_URL, name).hex[:20]  # index names share the identifier limit
    table = sa.Table(
        name, metadata,
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), primary_key=True, autoincrement=True),
        sa.Column('body', sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb'), nullable=False),
        sa.Column('due', sa.Double(), nullable=False, server_default=sa.text(f'({now_sql})')),
        sa.Column('lease', sa.String(32)),
        sa.Column('consumer', sa.String(255)),
        sa.Column('taken_at', sa.Double()),
        mysql_engine='InnoDB', mysql_charset='utf8mb4')
    # Waiting rows in take order; leased ones are few (what consumers hold) and are left out where the database can.
    sa.Index(f'fsdf_due_{short}', table.c.due, table.c.id,
             postgresql_where=table.c.lease.is_(None), sqlite_where=table.c.lease.is_(None))
    return table


def consumers_table(metadata: sa.MetaData) -> sa.Table:
    """Which consumer of which queue beat last when (``last_beat``: server clock, epoch seconds)."""
    return sa.Table(CONSUMERS_TABLE, metadata,
                    sa.Column('consumer', sa.String(255), primary_key=True),
                    sa.Column('queue', sa.String(255), nullable=False, index=True),
                    sa.Column('host', sa.String(255)),
                    sa.Column('pid', sa.Integer()),
                    sa.Column('last_beat', sa.Double(), nullable=False),
                    mysql_engine='InnoDB', mysql_charset='utf8mb4')


class _Database:
    """One engine and dialect per URL, shared by every queue of the process."""

    _lock: ClassVar[threading.Lock] = threading.Lock()  # guards the metadata's tables

    @classmethod
    def of(cls, url: str) -> '_Database':
        """The process's one database of ``url``, kept in the runtime (closed with it)."""
        return default_runtime().shared(('sql', url), lambda: cls(url), _Database.close)

    def close(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    def __init__(self, url: str) -> None:
        dialect = dialect_class(sa.make_url(url).get_backend_name())
        self.engine: Engine = sa.create_engine(url, **dialect.engine_options())
        self.dialect: SqlDialect = dialect(self.engine)
        self.metadata = sa.MetaData()
        self.consumers = consumers_table(self.metadata)
        self._create(self.consumers)

    def table(self, name: str) -> sa.Table:
        """The queue's table, created (with the dialect's extras) if it does not exist yet."""
        with self._lock:
            table = self.metadata.tables.get(name)
            if table is None:
                table = queue_table(name, self.metadata, self.dialect.now_sql)
        self._create(table, self.dialect.prepare_table)
        return table

    def _create(self, table: sa.Table, prepare: Any = None) -> None:
        """Create ``table`` and run ``prepare`` in the same transaction, unless it exists."""
        try:
            with self.engine.begin() as connection:
                if sa.inspect(connection).has_table(table.name):
                    return
                table.create(connection)
                if prepare is not None:
                    prepare(connection, table)
        except sa.exc.DBAPIError:  # another process created it meanwhile; anything else fails below
            with self.engine.connect() as connection:
                if not sa.inspect(connection).has_table(table.name):
                    raise


class SqlBroker(Broker):
    """A database table as a queue, with leases that return a dead consumer's messages."""

    guarantee = 'at-least-once: a dead consumer\'s messages return; persistent in the database'
    lease_check_seconds = 4.0
    requeue_to_front = True  # a requeued row keeps its id and due time, so its old place
    # Rows per publish_many: one transaction of an executemany, which SQLAlchemy sends as multi-row INSERTs
    # within each database's bounds (bound parameters, MySQL's max_allowed_packet).
    publish_batch_size = 10_000
    connection_errors = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError)
    groups_publishes = True  # one transaction for many rows: one commit (one WAL flush) instead of one each

    @classmethod
    def queue_name_problem(cls, name: str) -> Optional[str]:
        """The table-name rule of the database ``SQLACHEMY_ENGINE_URL`` points at."""
        url = settings.SQLACHEMY_ENGINE_URL or 'sqlite://'
        return dialect_class(sa.make_url(url).get_backend_name()).name_problem(name)

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        database = _Database.of(engine_url())
        self._engine, self._dialect, self._consumers = database.engine, database.dialect, database.consumers
        self._table = database.table(queue_name)
        self._insert = sa.insert(self._table)
        self._waiter = self._dialect.waiter(self._table)
        self._next_beat = 0.0
        self._acks = AckBatch(self._delete_acked)  # acks of many threads, deleted together
        # Tokens of takes whose reply never came: the rows may be leased to this live consumer, which
        # never got them and whose lease no check would ever end; the next take puts them back.
        self._lost_leases: list[str] = []

    # -- publishing ------------------------------------------------------------------------
    # One INSERT statement, built once and executed with parameters: building ``insert().values(...)`` per
    # call cost a third of a one-row publish, and a 10,000-row VALUES clause compiled anew per batch was
    # 2x (PostgreSQL) to 7x (SQLite) slower than an executemany (insertmanyvalues pages on PostgreSQL).
    def publish(self, body: str, priority: Optional[int] = None) -> None:
        with self._engine.begin() as connection:
            connection.execute(self._insert, {'body': body})

    def publish_many(self, bodies: list[str]) -> None:
        if bodies:  # one transaction, few round trips
            with self._engine.begin() as connection:
                connection.execute(self._insert, [{'body': body} for body in bodies])

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        if bodies:
            with self._engine.begin() as connection:
                connection.execute(self._insert, [{'body': body, 'due': due} for body in bodies])

    # -- consuming -------------------------------------------------------------------------
    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if time.monotonic() >= self._next_beat:  # holding messages without a beat would let others take them
            self.beat()
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            taken = self._take(max_count)
            if taken:
                self._waiter.took()
                return taken
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._waiter.wait(remaining, self._closed)
        return []

    def _take(self, max_count: int) -> list[Delivery]:
        table, token = self._table, uuid.uuid4().hex
        lease = {'lease': token, 'consumer': self.consumer_id, 'taken_at': self._dialect.now()}
        try:
            with self._engine.begin() as connection:
                if self._lost_leases:
                    self._unlease(connection, table.c.lease.in_(self._lost_leases))
                    self._lost_leases.clear()
                rows = self._dialect.take(connection, table, max_count, lease)
        except Exception:
            self._lost_leases.append(token)
            raise
        return [Delivery(row.body, (row.id, token)) for row in sorted(rows, key=lambda row: (row.due, row.id))]

    def _unlease(self, connection: Connection, which: sa.ColumnElement[bool]) -> int:
        """Put leased rows matching ``which`` back to waiting; how many."""
        table = self._table
        result = connection.execute(sa.update(table).where(table.c.lease.is_not(None), which)
                                    .values(lease=None, consumer=None, taken_at=None))
        if result.rowcount:
            self._dialect.notify(connection, table)
        return result.rowcount

    def ack(self, delivery: Delivery) -> None:
        self._acks.add(delivery.tag[0])

    def _delete_acked(self, ids: list[int]) -> None:
        with self._engine.begin() as connection:
            connection.execute(sa.delete(self._table).where(self._table.c.id.in_(ids)))

    def requeue(self, delivery: Delivery) -> None:
        self.requeue_many([delivery])

    def requeue_many(self, deliveries: Any) -> None:
        tags = [delivery.tag for delivery in deliveries]
        if tags:  # only rows this fetch still leases: one a dead-consumer check gave to another stays there
            with self._engine.begin() as connection:
                self._unlease(connection, sa.tuple_(self._table.c.id, self._table.c.lease).in_(tags))

    def count(self) -> int:
        table = self._table
        with self._engine.connect() as connection:
            return connection.scalar(sa.select(sa.func.count()).select_from(table).where(
                table.c.lease.is_(None), table.c.due <= self._dialect.now())) or 0

    def oldest_age(self) -> Optional[float]:
        """The row a take would pick first (``ORDER BY due, id`` on the waiting rows' index)."""
        table = self._table
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(table.c.body, table.c.due).where(
                table.c.lease.is_(None), table.c.due <= self._dialect.now()).order_by(table.c.due, table.c.id)
                .limit(1)).first()
        return 0.0 if row is None else waited(row.body, row.due)

    def count_delayed(self) -> Optional[int]:
        """Rows not yet due and not leased: the waiting rows' index, the other side of ``count``'s due test."""
        table = self._table
        with self._engine.connect() as connection:
            return connection.scalar(sa.select(sa.func.count()).select_from(table).where(
                table.c.lease.is_(None), table.c.due > self._dialect.now())) or 0

    def purge(self) -> None:
        with self._engine.begin() as connection:
            connection.execute(sa.delete(self._table).where(self._table.c.lease.is_(None)))

    def close(self) -> None:
        if self._closed.is_set():
            return
        super().close()
        self._waiter.close()
        try:
            self._acks.flush(wait=True)  # before the consumer record goes: others would put these back
            with self._engine.begin() as connection:
                connection.execute(sa.delete(self._consumers).where(self._consumers.c.consumer == self.consumer_id))
        except self.connection_errors as exc:  # the server is away: its lease check returns what is held
            self.logger.warning('closing %r: the database is unreachable (%s)', self.queue_name, type(exc).__name__)

    # -- leases ----------------------------------------------------------------------------
    def beat(self) -> None:
        self._next_beat = time.monotonic() + self.lease_check_seconds
        consumers = self._consumers
        with self._engine.begin() as connection:
            updated = connection.execute(sa.update(consumers).where(consumers.c.consumer == self.consumer_id)
                                         .values(last_beat=self._dialect.now())).rowcount
            if not updated:  # only this broker writes its own row; others may only delete it
                connection.execute(sa.insert(consumers).values(
                    consumer=self.consumer_id, queue=self.queue_name, host=HOST, pid=os.getpid(),
                    last_beat=self._dialect.now()))
        self._acks.flush()  # ones left behind by a failed send

    def recover_abandoned(self) -> int:
        consumers = self._consumers
        with self._engine.begin() as connection:
            now = float(connection.scalar(sa.select(self._dialect.now())) or 0)
            rows = connection.execute(sa.select(consumers).where(consumers.c.queue == self.queue_name)).all()
            dead = [row.consumer for row in rows if liveness.is_dead(row.host, row.pid, row.last_beat, now)]
            if dead:
                connection.execute(sa.delete(consumers).where(consumers.c.consumer.in_(dead)))
            # Read in the UPDATE itself: a consumer whose first beat committed after the list above is alive.
            alive = sa.select(consumers.c.consumer).where(consumers.c.queue == self.queue_name)
            return self._unlease(connection, sa.or_(self._table.c.consumer.is_(None),
                                                    self._table.c.consumer.not_in(alive.scalar_subquery())))
