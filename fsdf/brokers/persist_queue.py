"""PERSISTQUEUE: persist-queue's SQLite acked queue, shared by the processes of one machine.

Each queue is the table named after it in ``PERSIST_QUEUE_PATH/<queue>.sqlite``, in
persist-queue's ``SQLiteAckQueue`` schema (``_id, data, timestamp, status``), so another
program can publish with ``INSERT INTO "<queue>" (data, timestamp, status) VALUES (?, ?, 0)``.
fsdf adds two tables beside it: which consumer holds which message (``fsdf_leases``) and when
each consumer last said it was alive (``fsdf_consumers``). A consumer that stops beating, or
whose process is gone, has its messages put back by any other consumer of the queue.
"""
from __future__ import annotations

import os
import time
from typing import Any, Optional

from persistqueue.sqlackqueue import AckStatus

from fsdf._compat.persistqueue_internals import QueueTable, table_name, write_lock, writer
from fsdf.brokers import liveness
from fsdf.brokers.base import Broker, BrokerClosedError, Delivery, waited
from fsdf.brokers.polling import DueThrottle, poll
from fsdf.config import settings
from fsdf.hosts import HOST

_READY, _TAKEN = int(AckStatus.ready), int(AckStatus.unack)


class _PassThrough:
    """persist-queue serializer that stores fsdf's JSON text as it is (never pickle)."""

    @staticmethod
    def dumps(value: Any) -> Any:
        return value

    @staticmethod
    def loads(value: Any) -> Any:
        return value


class PersistQueueBroker(Broker):
    """SQLite broker: persistent, acked, one machine, many processes."""

    guarantee = 'at-least-once on one machine; survives process crashes'
    lease_check_seconds = 4.0
    requeue_to_front = True  # a requeued row keeps its id, so its old place
    publishes_after_close = False  # close() closes the SQLite connection

    @classmethod
    def queue_name_problem(cls, name: str) -> Optional[str]:
        """The queue is a SQLite table: SQLite keeps every name starting with 'sqlite_' to itself."""
        if name.lower().startswith('sqlite_'):
            return 'is reserved by SQLite (names starting with "sqlite_")'
        return None

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        folder = settings.path('PERSIST_QUEUE_PATH')
        self._queue = QueueTable(str(folder), name=queue_name, multithreading=True, timeout=60,
                                  serializer=_PassThrough, auto_resume=False,
                                  db_file_name=f'{queue_name}.sqlite')
        self._db = writer(self._queue)
        self._lock = write_lock(self._queue)
        self._table = table_name(self._queue)
        with self._lock, self._db:
            self._db.execute('PRAGMA synchronous=NORMAL')
            self._db.execute('CREATE TABLE IF NOT EXISTS fsdf_leases ('
                             'msg_id INTEGER PRIMARY KEY, consumer TEXT NOT NULL)')
            self._db.execute('CREATE TABLE IF NOT EXISTS fsdf_consumers (consumer TEXT PRIMARY KEY, '
                             'host TEXT, pid INTEGER, started REAL, last_beat REAL)')
            self._db.execute('CREATE TABLE IF NOT EXISTS fsdf_delayed (_id INTEGER PRIMARY KEY AUTOINCREMENT, '
                             'due REAL NOT NULL, data BLOB)')
            self._db.execute('CREATE INDEX IF NOT EXISTS fsdf_delayed_due ON fsdf_delayed (due)')
        self._promotion = DueThrottle()

    def publish(self, body: str, priority: Optional[int] = None) -> None:
        self.publish_many([body])

    def publish_many(self, bodies: list[str]) -> None:
        now = time.time()
        self._check_open()
        with self._lock, self._db:
            self._db.executemany(f'INSERT INTO {self._table} (data, timestamp, status) VALUES (?, ?, {_READY})',
                                 [(body, now) for body in bodies])

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        self._check_open()
        with self._lock, self._db:
            self._db.executemany('INSERT INTO fsdf_delayed (due, data) VALUES (?, ?)', [(due, b) for b in bodies])

    def _check_open(self) -> None:
        """Raise a clear error instead of SQLite's "Cannot operate on a closed database"."""
        if self._closed.is_set():
            raise BrokerClosedError(f'the PERSISTQUEUE broker of {self.queue_name!r} is closed')

    def _promote_due(self) -> None:
        now = time.time()
        if not self._promotion.ready(now):
            return
        with self._lock, self._db:
            rows = self._db.execute('DELETE FROM fsdf_delayed WHERE due <= ? RETURNING _id, data, due',
                                    (now,)).fetchall()
            if rows:
                rows.sort()
                self._db.executemany(f'INSERT INTO {self._table} (data, timestamp, status) VALUES (?, ?, {_READY})',
                                     [(data, due) for _, data, due in rows])

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        # Other processes publish without telling us: poll.
        return poll(lambda: self._take(max_count), timeout, self._closed)

    def _take(self, max_count: int) -> list[Delivery]:
        """Mark up to ``max_count`` ready rows taken; as deliveries whose bodies are bytes.

        As bytes (``CAST``): sqlite3 decodes TEXT as UTF-8 for the whole reply, so one row another
        program wrote that is not UTF-8 would fail the take of every message with it, again and again.
        """
        self._promote_due()
        with self._lock, self._db:
            rows = self._db.execute(
                f'UPDATE {self._table} SET status = {_TAKEN} WHERE _id IN (SELECT _id FROM {self._table} '
                f'WHERE status < {_TAKEN} ORDER BY _id LIMIT ?) RETURNING _id, CAST(data AS BLOB)',
                (max_count,)).fetchall()
            if rows:
                self._db.executemany('INSERT OR REPLACE INTO fsdf_leases (msg_id, consumer) VALUES (?, ?)',
                                     [(row[0], self.consumer_id) for row in rows])
        rows.sort()
        return [Delivery(data, msg_id) for msg_id, data in rows]

    def ack(self, delivery: Delivery) -> None:
        self._check_open()
        with self._lock, self._db:
            self._db.execute(f'DELETE FROM {self._table} WHERE _id = ?', (delivery.tag,))
            self._db.execute('DELETE FROM fsdf_leases WHERE msg_id = ?', (delivery.tag,))

    def requeue(self, delivery: Delivery) -> None:
        self._check_open()
        with self._lock, self._db:
            self._db.execute(f'UPDATE {self._table} SET status = {_READY} WHERE _id = ?', (delivery.tag,))
            self._db.execute('DELETE FROM fsdf_leases WHERE msg_id = ?', (delivery.tag,))

    def count(self) -> int:
        self._check_open()
        with self._lock:
            return self._db.execute(f'SELECT COUNT(*) FROM {self._table} WHERE status < {_TAKEN}').fetchone()[0]

    def oldest_age(self) -> Optional[float]:
        """The head row (lowest id, as a take picks) by its body's times, else its ``timestamp`` column."""
        self._check_open()
        with self._lock:
            row = self._db.execute(f'SELECT CAST(data AS BLOB), timestamp FROM {self._table} '
                                   f'WHERE status < {_TAKEN} ORDER BY _id LIMIT 1').fetchone()
        return 0.0 if row is None else waited(row[0], row[1])

    def count_delayed(self) -> Optional[int]:
        """The rows of ``fsdf_delayed``: each leaves it for the queue when a fetch finds it due."""
        self._check_open()
        with self._lock:
            return self._db.execute('SELECT COUNT(*) FROM fsdf_delayed').fetchone()[0]

    def purge(self) -> None:
        self._check_open()
        with self._lock, self._db:
            self._db.execute(f'DELETE FROM {self._table} WHERE status < {_TAKEN}')
            self._db.execute('DELETE FROM fsdf_delayed')

    def close(self) -> None:
        if self._closed.is_set():
            return
        super().close()
        with self._lock, self._db:
            self._db.execute('DELETE FROM fsdf_consumers WHERE consumer = ?', (self.consumer_id,))
        self._queue.close()

    def beat(self) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.execute('INSERT INTO fsdf_consumers (consumer, host, pid, started, last_beat) '
                             'VALUES (?, ?, ?, ?, ?) '
                             'ON CONFLICT(consumer) DO UPDATE SET last_beat = excluded.last_beat',
                             (self.consumer_id, HOST, os.getpid(), now, now))

    def recover_abandoned(self) -> int:
        now = time.time()
        with self._lock, self._db:
            consumers = self._db.execute('SELECT consumer, host, pid, last_beat FROM fsdf_consumers').fetchall()
            dead = [(consumer,) for consumer, host, pid, last_beat in consumers
                    if liveness.is_dead(host, pid, last_beat or 0, now)]
            self._db.executemany('DELETE FROM fsdf_consumers WHERE consumer = ?', dead)
            # Leases of the dead, and of consumers that never beat (they fetched without consuming).
            orphaned = 'SELECT msg_id FROM fsdf_leases WHERE consumer NOT IN (SELECT consumer FROM fsdf_consumers)'
            recovered = self._db.execute(
                f'UPDATE {self._table} SET status = {_READY} WHERE _id IN ({orphaned})').rowcount
            self._db.execute(f'DELETE FROM fsdf_leases WHERE msg_id IN ({orphaned})')
        return recovered

