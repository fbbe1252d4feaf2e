"""PERSISTQUEUE: persist-queue's SQLite acked queue, shared by the processes of one machine.

Each queue is the table named after it in ``PERSIST_QUEUE_PATH/<queue>.sqlite``, in
persist-queue's ``SQLiteAckQueue`` schema (``_id, data, timestamp, status``), so another
program can publish with ``INSERT INTO "<queue>" (data, timestamp, status) VALUES (?, ?, 0)``,
or with persist-queue itself (``SQLiteAckQueue(folder, name=..., db_file_name=..., serializer=...)``
with the table name hook; tests/test_consume.py). fsdf opens the file with the standard
library's sqlite3 as persist-queue does (WAL, a 60 s busy timeout) and writes every statement itself:
importing persist-queue cost a worker's start about 60 ms (its package imports asyncio), for the one
CREATE TABLE fsdf used it for.
fsdf adds tables beside it: when each consumer last said it was alive (``fsdf_consumers``), and a
small number for each consumer that has taken messages (``fsdf_holders``, ``holder`` never reused). A
taken row's ``status`` says who holds it: ``HOLDER_BASE + holder`` (persist-queue's own statuses are
below 10, and ``status < 2`` is still "ready" for persist-queue and for ``count``, ``purge``, a take).
A consumer that stops beating, or whose process is gone, or that never beat, has its messages put back
by any other consumer of the queue: the rows whose holder is not in ``fsdf_consumers``.

Earlier versions (up to d2f1576) wrote one row a message into ``fsdf_leases (msg_id, consumer)`` and set
``status = 2``; the table is still made and read, so a message such a version took is put back
when its consumer is gone, and processes of both versions can share a file while it is upgraded (an
earlier version never takes, counts or returns a row marked with a holder: a newer consumer returns
those). One holder number instead of one lease row a message: the lease row was about 30% of a take,
and with two processes the file's write lock was held 80% of the time; the CPU spent holding it is
now about a third less (``bench/processes.py --probe``).

Acks are batched: ``ack`` only notes the message, and its row is deleted by the broker's next write
transaction (in a busy consumer, the fetch thread's next take), or by a small flusher thread within
``ACK_FLUSH_SECONDS`` if none comes, or on ``close`` and at interpreter exit. SQLite lets one writer at a
time into a file, so one transaction per ack made processes queue on its write lock; now one transaction
carries a batch of acks and a take. An acked message whose row is not yet deleted stays taken by its
consumer, so a crash before the delete only delivers it again (at-least-once), and a clean stop delivers
nothing acked again. fsdf's processes take turns writing on a ``flock`` of ``<queue>.sqlite.lock``.
A requeue gives back only messages this consumer still holds; an ack deletes its message whoever holds
it now (a consumer taken for dead ran it to its end: the new holder's run is the at-least-once repeat).
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import sqlite3
import threading
import time
from typing import Iterable, Iterator, Optional

from fsdf.brokers import liveness
from fsdf.brokers.ack_batch import run_ack_flusher
from fsdf.brokers.base import Broker, BrokerClosedError, Delivery, waited
from fsdf.brokers.file_lock import FileLock
from fsdf.brokers.polling import DueThrottle, poll
from fsdf.config import settings
from fsdf.hosts import HOST
from fsdf.log import EveryNSeconds
from fsdf.secrets import redact

_READY, _TAKEN = 1, 2  # persist-queue's AckStatus.ready and .unack (_TAKEN: by fsdf versions before holders)
HOLDER_BASE = 1000  # a taken row's status is HOLDER_BASE + its holder (above persist-queue's 0-9)
ACK_FLUSH_SECONDS = 0.02  # an ack no take carried is deleted after this (so within about twice it)
ACK_RETRY_SECONDS = 1.0   # pause after a failed flush (the file locked for the whole busy timeout)


def _take_statements(table: str) -> list[str]:
    """A take as one statement, ``INSERT INTO temp.fsdf_take VALUES (acked ids JSON, max count, holder,
    consumer)``: temp objects of the writing connection (a TEMP trigger may write the main tables); the ids
    taken are left in ``temp.fsdf_taken``. A trigger names tables unqualified: temp ones first, so
    ``fsdf_taken`` is the temp table, and the queue and ``fsdf_holders`` are the main ones (queue names never
    start with ``fsdf_``). The holder's row is written again if a recovery dropped it (we looked dead, and
    are not): every row taken by a holder has its holder row, so recovery finds them from ``fsdf_holders``."""
    return [
        'CREATE TEMP TABLE IF NOT EXISTS fsdf_taken (id INTEGER PRIMARY KEY)',
        'CREATE TEMP VIEW IF NOT EXISTS fsdf_take (acked, most, holder, consumer) AS SELECT NULL, NULL, NULL, NULL',
        'CREATE TEMP TRIGGER IF NOT EXISTS fsdf_take_run INSTEAD OF INSERT ON fsdf_take BEGIN '
        f'DELETE FROM {table} WHERE _id IN (SELECT value FROM json_each(NEW.acked)); '
        'DELETE FROM fsdf_taken; '
        f'INSERT INTO fsdf_taken (id) SELECT _id FROM {table} WHERE status < {_TAKEN} '
        'ORDER BY _id LIMIT NEW.most; '
        f'UPDATE {table} SET status = {HOLDER_BASE} + NEW.holder WHERE _id IN (SELECT id FROM temp.fsdf_taken); '
        'INSERT OR IGNORE INTO fsdf_holders (holder, consumer) SELECT NEW.holder, NEW.consumer '
        'WHERE EXISTS (SELECT 1 FROM temp.fsdf_taken); '
        'END',
    ]


def queue_table(queue_name: str) -> str:
    """The queue's table name, quoted for SQL (persist-queue's table name hook gives the same)."""
    return '"{}"'.format(queue_name.replace('"', '""'))


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
        folder.mkdir(parents=True, exist_ok=True)
        # One connection for every thread, each statement under self._lock (sqlite3 objects are not to be
        # used by two threads at once); the busy timeout is how long a write waits for another process's.
        # Autocommit: a take is one statement (see _mark_taken), its own transaction; _writing BEGINs its own.
        self._db = sqlite3.connect(folder / f'{queue_name}.sqlite', timeout=60, check_same_thread=False,
                                   isolation_level=None)
        self._db.execute('PRAGMA journal_mode=WAL')
        self._lock = threading.Lock()
        self._processes_lock = FileLock(folder / f'{queue_name}.sqlite.lock')
        self._table = queue_table(queue_name)
        self._read_taken = (f'SELECT t.id, CAST(q.data AS BLOB) FROM fsdf_taken t JOIN {self._table} q '
                            'ON q._id = t.id ORDER BY t.id')
        with self._lock, self._db:
            self._db.execute('PRAGMA synchronous=NORMAL')
            self._db.execute(f'CREATE TABLE IF NOT EXISTS {self._table} (_id INTEGER PRIMARY KEY AUTOINCREMENT, '
                             'data BLOB, timestamp FLOAT, status INTEGER)')  # persist-queue's schema
            self._db.execute('CREATE TABLE IF NOT EXISTS fsdf_holders (holder INTEGER PRIMARY KEY AUTOINCREMENT, '
                             'consumer TEXT NOT NULL UNIQUE)')
            self._db.execute('CREATE TABLE IF NOT EXISTS fsdf_leases ('  # earlier versions' (module docstring)
                             'msg_id INTEGER PRIMARY KEY, consumer TEXT NOT NULL)')
            self._db.execute('CREATE TABLE IF NOT EXISTS fsdf_consumers (consumer TEXT PRIMARY KEY, '
                             'host TEXT, pid INTEGER, started REAL, last_beat REAL)')
            self._db.execute('CREATE TABLE IF NOT EXISTS fsdf_delayed (_id INTEGER PRIMARY KEY AUTOINCREMENT, '
                             'due REAL NOT NULL, data BLOB)')
            self._db.execute('CREATE INDEX IF NOT EXISTS fsdf_delayed_due ON fsdf_delayed (due)')
            for statement in _take_statements(self._table):
                self._db.execute(statement)
        self._promotion = DueThrottle()
        # Ids of acked messages whose rows are not deleted yet. Appended by any thread without a lock;
        # emptied only in a write transaction (``_writing``), which deletes them, so close() never finds
        # it empty while another thread is still deleting what it took (7515cec's race on Redis).
        self._acked: collections.deque[int] = collections.deque()
        self._acks_waiting = threading.Event()
        self._flusher: Optional[threading.Thread] = None
        self._flusher_lock = threading.Lock()
        self._flush_errors = EveryNSeconds(10)
        self._file_closed = False  # set by close() under self._lock
        self._holder: Optional[int] = None  # this consumer's number in fsdf_holders, given at its first take

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, which also deletes the messages acked since the last one.

        Threads of this process take turns on ``self._lock``; the processes using this file take turns
        on a lock on a file beside it, so a waiting process sleeps in the kernel and wakes as soon as
        the writer is done (SQLite's busy handler sleeps 1 to 100 ms between tries, and a process could
        starve for seconds while another wrote back to back); SQLite's own lock then serves programs
        that are not fsdf. If the transaction fails, the acks wait for the next one.
        """
        with self._lock:
            if self._file_closed:
                raise BrokerClosedError(f'the PERSISTQUEUE broker of {self.queue_name!r} is closed')
            acked = self._pop_acked()
            try:
                with self._processes_lock, self._db:
                    self._db.execute('BEGIN IMMEDIATE')  # a read first would make the write fail, not wait
                    self._delete_acked(acked)
                    yield
            except BaseException:
                self._acked.extend(acked)
                raise

    def publish(self, body: str, priority: Optional[int] = None) -> None:
        self.publish_many([body])

    def publish_many(self, bodies: list[str]) -> None:
        now = time.time()
        self._check_open()
        with self._writing():
            self._db.executemany(f'INSERT INTO {self._table} (data, timestamp, status) VALUES (?, ?, {_READY})',
                                 [(body, now) for body in bodies])

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        self._check_open()
        with self._writing():
            self._db.executemany('INSERT INTO fsdf_delayed (due, data) VALUES (?, ?)', [(due, b) for b in bodies])

    def _check_open(self) -> None:
        """Raise a clear error instead of SQLite's "Cannot operate on a closed database"."""
        if self._closed.is_set():
            raise BrokerClosedError(f'the PERSISTQUEUE broker of {self.queue_name!r} is closed')

    def _promote_due(self) -> None:
        now = time.time()
        if not self._promotion.ready(now):
            return
        with self._writing():
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
        """Delete the acked rows and mark up to ``max_count`` ready rows taken (``_mark_taken``); then read their
        bodies, as bytes, after the processes' write lock is let go.

        As bytes (``CAST``): sqlite3 decodes TEXT as UTF-8 for the whole reply, so one row another program
        wrote that is not UTF-8 would fail the take of every message with it, again and again. Read on the
        writing connection, joined to ``temp.fsdf_taken``: a second connection's read of the ids as a JSON
        array cost half as much again (1.5 against 1.0 µs a message).
        """
        self._promote_due()
        holder = self._holder if self._holder is not None else self._allocate_holder()
        with self._lock:
            self._mark_taken(max_count, holder)
            try:  # taken by us: nobody else changes these rows now
                rows = self._db.execute(self._read_taken).fetchall()
            except BaseException as error:  # committed as ours, handed to nobody: back now, not when we die
                failure, ids = error, self._db.execute('SELECT json_group_array(id) FROM fsdf_taken').fetchone()[0]
            else:
                return [Delivery(data, msg_id) for msg_id, data in rows]
        self._give_back_after_failed_read(ids)  # after self._lock: its transaction takes it
        raise failure

    def _allocate_holder(self) -> int:
        """This consumer's number in ``fsdf_holders``, in its own transaction (once per broker; another thread
        of it asking at the same time gets the same number)."""
        with self._writing():
            (holder,) = self._db.execute(
                'INSERT INTO fsdf_holders (consumer) VALUES (?) ON CONFLICT(consumer) DO UPDATE '
                'SET consumer = excluded.consumer RETURNING holder', (self.consumer_id,)).fetchone()
        self._holder = holder
        return holder

    def _mark_taken(self, max_count: int, holder: int) -> None:
        """The take's write transaction, under ``self._lock``: one statement (the ``fsdf_take`` trigger) that
        deletes the acked rows and marks up to ``max_count`` ready rows taken by ``holder``; their ids are left
        in ``temp.fsdf_taken``.

        One statement, because sqlite3 lets go of the GIL at every statement, and in a busy process (50
        threads) getting it back can take up to the 5 ms switch interval while this process holds the
        file's write lock, which every other process then waits for: the take of 7 statements (BEGIN to
        COMMIT) held the lock 2 to 3 times as long as it used the CPU.
        """
        if self._file_closed:
            raise BrokerClosedError(f'the PERSISTQUEUE broker of {self.queue_name!r} is closed')
        acked = self._pop_acked()
        try:
            arguments = (json.dumps(acked), max_count, holder, self.consumer_id)
            with self._processes_lock:  # autocommit: SQLite waits for its write lock before the first read
                self._db.execute('INSERT INTO temp.fsdf_take VALUES (?, ?, ?, ?)', arguments)
        except BaseException:
            self._acked.extend(acked)
            raise

    def _give_back_after_failed_read(self, ids: str) -> None:
        try:
            with self._writing():
                self._give_back(ids)
        except Exception as exc:  # they stay ours: close() or our death returns them
            self.logger.error('could not give back %d messages of %r after a failed read: %s',
                              len(json.loads(ids)), self.queue_name, redact(exc))

    def _give_back(self, ids: str) -> None:
        """Make the messages (a JSON array of ids) ready again, in the caller's transaction, if this consumer
        still holds them: one that was recovered (we looked dead) may be running in another consumer, and
        putting it back would deliver it a third time and take it from that consumer. Rows found by id."""
        if self._holder is not None:  # else this broker never took anything
            self._db.execute(f'UPDATE {self._table} SET status = {_READY} WHERE status = ? AND '
                             '_id IN (SELECT value FROM json_each(?))', (HOLDER_BASE + self._holder, ids))

    def ack(self, delivery: Delivery) -> None:
        """Note the ack; the next take deletes its rows, or the flusher within ``ACK_FLUSH_SECONDS``."""
        self._check_open()
        self._acked.append(delivery.tag)
        if not self._acks_waiting.is_set():
            self._acks_waiting.set()
        if self._flusher is None:
            self._start_flusher()

    # -- batched acks --------------------------------------------------------------------
    def _pop_acked(self) -> list[int]:
        """Empty the ack buffer (``_writing`` does, then deletes them or puts them back)."""
        acked = self._acked
        return [acked.popleft() for _ in range(len(acked))]

    def _delete_acked(self, acked: list[int]) -> None:
        """Delete acked messages, inside the caller's transaction."""
        if acked:
            self._db.execute(f'DELETE FROM {self._table} WHERE _id IN (SELECT value FROM json_each(?))',
                             (json.dumps(acked),))

    def flush_acks(self) -> None:
        """Delete the acked messages now, in one transaction (the next take would have); after close, nothing."""
        if not self._acked or self._file_closed:  # close() deleted them, or they came after it
            return
        with contextlib.suppress(BrokerClosedError), self._writing():
            pass

    def _start_flusher(self) -> None:
        with self._flusher_lock:
            if self._flusher is not None or self._closed.is_set():
                return
            self._flusher = threading.Thread(target=self._flush_loop, name=f'fsdf-acks-{self.queue_name}',
                                             daemon=True)
            self._flusher.start()
            atexit.register(self._flush_at_exit)  # a script that ends without close() still settles its acks

    def _flush_at_exit(self) -> None:
        try:
            self.flush_acks()
        except Exception as exc:  # the messages come back to the queue, as a crashed consumer's would
            self.logger.error('could not delete %d acked messages of %r at exit: %s', len(self._acked),
                              self.queue_name, redact(exc))

    def _flush_loop(self) -> None:
        """Delete acks no take carried within ``ACK_FLUSH_SECONDS`` (a consumer full of long calls takes nothing)."""
        run_ack_flusher(self._acks_waiting, self._closed, self._flush_in_background, ACK_FLUSH_SECONDS,
                        ACK_RETRY_SECONDS)

    def _flush_in_background(self) -> bool:
        """``flush_acks`` for the flusher thread: False if the file stayed locked past the busy timeout."""
        try:
            self.flush_acks()
        except Exception as exc:  # keep them, try again
            if self._flush_errors.ready(time.monotonic()):
                self.logger.error('could not delete %d acked messages of %r (will retry): %s',
                                  len(self._acked), self.queue_name, redact(exc))
            self._acks_waiting.set()  # the failed flush put them back: retry them though no new ack comes
            return False
        return True

    def requeue(self, delivery: Delivery) -> None:
        self.requeue_many([delivery])

    def requeue_many(self, deliveries: Iterable[Delivery]) -> None:
        """Give back, in one transaction, the messages this consumer still holds (each keeps its id, so its place)."""
        self._check_open()
        ids = json.dumps([delivery.tag for delivery in deliveries])
        with self._writing():
            self._give_back(ids)

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
        with self._writing():
            self._db.execute(f'DELETE FROM {self._table} WHERE status < {_TAKEN}')
            self._db.execute('DELETE FROM fsdf_delayed')

    def close(self) -> None:
        """Delete the acked messages, leave the consumers table (another consumer's lease check returns what
        this one still holds), close the file."""
        if self._closed.is_set():
            return
        super().close()
        try:
            with self._writing():
                self._db.execute('DELETE FROM fsdf_consumers WHERE consumer = ?', (self.consumer_id,))
        finally:
            with self._lock:  # a take reading its bodies finishes first
                self._file_closed = True
                self._db.close()
                self._processes_lock.close()
        atexit.unregister(self._flush_at_exit)

    def beat(self) -> None:
        now = time.time()
        with self._writing():
            self._db.execute('INSERT INTO fsdf_consumers (consumer, host, pid, started, last_beat) '
                             'VALUES (?, ?, ?, ?, ?) '
                             'ON CONFLICT(consumer) DO UPDATE SET last_beat = excluded.last_beat',
                             (self.consumer_id, HOST, os.getpid(), now, now))

    def recover_abandoned(self) -> int:
        now = time.time()
        with self._writing():
            consumers = self._db.execute('SELECT consumer, host, pid, last_beat FROM fsdf_consumers').fetchall()
            dead = [(consumer,) for consumer, host, pid, last_beat in consumers
                    if liveness.is_dead(host, pid, last_beat or 0, now)]
            self._db.executemany('DELETE FROM fsdf_consumers WHERE consumer = ?', dead)
            return self._return_orphans() + self._return_old_leases()

    def _return_orphans(self) -> int:
        """Make ready again, in the caller's transaction, the rows of holders whose consumer is not in
        ``fsdf_consumers`` (dead, closed, or never beat: it fetched without consuming), and drop those holders.
        Reads the whole queue table (no index on status: one would cost every message, as the lease row did),
        so only when there is such a holder: about 40 ms for 200,000 rows, once for each consumer that stops
        after taking (and at each check while one that never beats holds messages, as its rows need)."""
        orphans = [holder for (holder,) in self._db.execute(
            'SELECT holder FROM fsdf_holders WHERE consumer NOT IN (SELECT consumer FROM fsdf_consumers)')]
        if not orphans:
            return 0
        holders = json.dumps(orphans)
        recovered: int = self._db.execute(f'UPDATE {self._table} SET status = {_READY} WHERE status IN '
                                          f'(SELECT {HOLDER_BASE} + value FROM json_each(?))', (holders,)).rowcount
        self._db.execute('DELETE FROM fsdf_holders WHERE holder IN (SELECT value FROM json_each(?))', (holders,))
        return recovered

    def _return_old_leases(self) -> int:
        """The rule of ``_return_orphans`` for rows taken by earlier versions (status 2 and a ``fsdf_leases`` row)."""
        orphaned = 'SELECT msg_id FROM fsdf_leases WHERE consumer NOT IN (SELECT consumer FROM fsdf_consumers)'
        recovered: int = self._db.execute(
            f'UPDATE {self._table} SET status = {_READY} WHERE status = {_TAKEN} AND _id IN ({orphaned})').rowcount
        self._db.execute(f'DELETE FROM fsdf_leases WHERE msg_id IN ({orphaned})')
        return recovered

