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
from fsdf.brokers.base import Broker, Delivery
from fsdf.config import settings
from fsdf.hosts import HOST, process_alive

_READY, _TAKEN = int(AckStatus.ready), int(AckStatus.unack)
# A consumer that has not beaten for this long is taken for dead (it beats every few seconds).
_STALE_AFTER = 12.0
_PROMOTE_EVERY = 0.1  # how often a consumer moves due delayed messages into the queue


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
        self._next_promotion = 0.0

    def publish(self, body: str, priority: Optional[int] = None) -> None:
        self.publish_many([body])

    def publish_many(self, bodies: list[str]) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(f'INSERT INTO {self._table} (data, timestamp, status) VALUES (?, ?, {_READY})',
                                 [(body, now) for body in bodies])

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        with self._lock, self._db:
            self._db.executemany('INSERT INTO fsdf_delayed (due, data) VALUES (?, ?)', [(due, b) for b in bodies])

    def _promote_due(self) -> None:
        now = time.time()
        if now < self._next_promotion:
            return
        self._next_promotion = now + _PROMOTE_EVERY
        with self._lock, self._db:
            rows = self._db.execute('DELETE FROM fsdf_delayed WHERE due <= ? RETURNING _id, data, due',
                                    (now,)).fetchall()
            if rows:
                rows.sort()
                self._db.executemany(f'INSERT INTO {self._table} (data, timestamp, status) VALUES (?, ?, {_READY})',
                                     [(data, due) for _, data, due in rows])

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            self._promote_due()
            rows = self._take(max_count)
            if rows or self._closed.is_set():
                return [Delivery(data, msg_id) for msg_id, data in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            # Other processes publish without telling us: poll, backing off to 50 ms when idle.
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.05)

    def _take(self, max_count: int) -> list[tuple[int, Any]]:
        with self._lock, self._db:
            rows = self._db.execute(
                f'UPDATE {self._table} SET status = {_TAKEN} WHERE _id IN (SELECT _id FROM {self._table} '
                f'WHERE status < {_TAKEN} ORDER BY _id LIMIT ?) RETURNING _id, data', (max_count,)).fetchall()
            if rows:
                self._db.executemany('INSERT OR REPLACE INTO fsdf_leases (msg_id, consumer) VALUES (?, ?)',
                                     [(row[0], self.consumer_id) for row in rows])
        rows.sort()
        return rows

    def ack(self, delivery: Delivery) -> None:
        with self._lock, self._db:
            self._db.execute(f'DELETE FROM {self._table} WHERE _id = ?', (delivery.tag,))
            self._db.execute('DELETE FROM fsdf_leases WHERE msg_id = ?', (delivery.tag,))

    def requeue(self, delivery: Delivery) -> None:
        with self._lock, self._db:
            self._db.execute(f'UPDATE {self._table} SET status = {_READY} WHERE _id = ?', (delivery.tag,))
            self._db.execute('DELETE FROM fsdf_leases WHERE msg_id = ?', (delivery.tag,))

    def count(self) -> int:
        with self._lock:
            return self._db.execute(f'SELECT COUNT(*) FROM {self._table} WHERE status < {_TAKEN}').fetchone()[0]

    def purge(self) -> None:
        with self._lock, self._db:
            self._db.execute(f'DELETE FROM {self._table} WHERE status < {_TAKEN}')
            self._db.execute('DELETE FROM fsdf_delayed')

    def close(self) -> None:
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
        with self._lock, self._db:
            local = self._db.execute('SELECT consumer, pid FROM fsdf_consumers WHERE host = ?', (HOST,)).fetchall()
            gone = [(consumer,) for consumer, pid in local if not process_alive(pid)]
            self._db.executemany('DELETE FROM fsdf_consumers WHERE consumer = ?', gone)
            orphaned = ('SELECT msg_id FROM fsdf_leases WHERE consumer NOT IN '
                        '(SELECT consumer FROM fsdf_consumers WHERE last_beat > ?)')
            cutoff = time.time() - _STALE_AFTER
            recovered = self._db.execute(
                f'UPDATE {self._table} SET status = {_READY} WHERE _id IN ({orphaned})', (cutoff,)).rowcount
            self._db.execute(f'DELETE FROM fsdf_leases WHERE msg_id IN ({orphaned})', (cutoff,))
        return recovered

