"""The write path: a bounded buffer per process and a writer thread that flushes it to the store.

A worker hands each settled run over with one ``deque.append`` (:meth:`RecordWriter.add`). The
writer thread flushes every ``FLUSH_SECONDS`` or as soon as ``FLUSH_SIZE`` entries wait, in one
transaction holding the records, the rollup upserts and the registry beats; and it is flushed at
exit and when a consumer stops (the SIGTERM drain stops consumers). Workers never wait for it:
the buffer holds at most ``BUFFER_CAPACITY`` entries, and while the store is down or slow the
oldest are dropped and counted in :attr:`RecordWriter.dropped` (a warning at most every
``DROP_WARNING_SECONDS``). The store is opened by the writer itself, in the process that writes:
a forked child starts its own writer and its own store client.
"""
from __future__ import annotations

import atexit
import logging
import operator
import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Optional

from fsdf.log import EveryNSeconds
from fsdf.records.model import build_row, rollups_of
from fsdf.records.store import Batch, RunStore, open_store
from fsdf.secrets import redact

if TYPE_CHECKING:
    from fsdf.controls.base import RunOutcome
    from fsdf.records.middleware import RunRecorder

FLUSH_SECONDS = 0.5
FLUSH_SIZE = 500
FULL_BATCH_POLL_SECONDS = 0.1
MAX_BATCH = 5000  # entries per transaction when a backlog is written
BUFFER_CAPACITY = 100_000
PRUNE_SECONDS = 60.0
PRUNE_CHUNKS_PER_PASS = 20
DROP_WARNING_SECONDS = 5.0
EXIT_FLUSH_SECONDS = 5.0

logger = logging.getLogger('fsdf.records')
ChunkSums = tuple[str, int, int, float, float]
"""(status, second, runs, duration sum, duration max) of a chunk's runs: :func:`chunk_sums`."""
Entry = tuple['RunRecorder', 'RunOutcome | ChunkSums', int]
"""(the recorder that saw it, the outcome or a chunk's sums, the worker's thread id)."""
_status, _started, _finished = (operator.attrgetter(name) for name in ('status', 'started', 'finished'))


def chunk_sums(outcomes: list['RunOutcome']) -> 'ChunkSums | None':
    """The statistics of a chunk's runs as one entry, if they all succeeded within one second; else None.

    A chunk of very short calls takes about 0.5 ms, so nearly every chunk is one such entry. The sums are
    taken in C (``map``), not per run in Python: what the writer's loop adds up per run, at a fifth of
    its cost.
    """
    statuses = list(map(_status, outcomes))
    if not statuses or statuses.count('succeeded') != len(statuses):
        return None
    finished = list(map(_finished, outcomes))
    second = int(min(finished))
    if int(max(finished)) != second:
        return None
    started = list(map(_started, outcomes))
    if 0.0 in started:  # a run never started has no duration (the writer's loop counts it 0)
        return None
    durations = list(map(operator.sub, finished, started))
    return 'succeeded', second, len(durations), sum(durations), max(durations)


class RecordWriter:
    """One process's buffer and writer thread for one store URL."""

    def __init__(self, url: str, capacity: Optional[int] = None, flush_seconds: Optional[float] = None) -> None:
        self.url = url
        self.capacity = capacity or BUFFER_CAPACITY
        self.flush_seconds = flush_seconds or FLUSH_SECONDS
        self.flush_size = FLUSH_SIZE
        self.dropped = 0
        """Entries dropped because the store could not keep up (since the writer started)."""
        self.written = 0
        """Entries written to the store."""
        self._buffer: deque[Entry] = deque(maxlen=self.capacity)
        self._beats: dict[str, dict[str, Any]] = {}
        self._queues: dict[str, str] = {}
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._store: Optional[RunStore] = None
        self._store_lock = threading.Lock()
        self._warn_drops = EveryNSeconds(DROP_WARNING_SECONDS)
        self._next_prune = time.monotonic() + 1.0
        self._closed = False
        self._failing = False  # the last write attempt failed
        self._start_thread()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name='fsdf-records-writer', daemon=True)
        self._thread.start()

    def restart_in_child(self) -> None:
        """After a fork: the parent's thread, locks and store client do not belong to this process.

        The buffer is emptied too: its runs are the parent's, which writes them itself.
        """
        self._buffer.clear()
        self._beats, self._queues = {}, {}
        self._flush_lock, self._store_lock = threading.Lock(), threading.Lock()
        self._wake = threading.Event()
        self._store = None  # not closed: closing would close the parent's connection
        self.dropped = self.written = 0
        if not self._closed:
            self._start_thread()

    # -- what producers call (any thread, never blocks) -----------------------------------
    def add(self, entry: Entry) -> None:
        """Buffer one settled run; drops the oldest entry (counted) when the buffer is full.

        Recorders inline this (it runs once per message); the writer notices a full batch by polling.
        """
        buffer = self._buffer
        if len(buffer) >= self.capacity:
            self.dropped += 1  # an unlocked count: a rare lost increment only under a full buffer
        buffer.append(entry)

    @property
    def buffer(self) -> 'deque[Entry]':
        """The buffer itself, for recorders that append to it directly."""
        return self._buffer

    def beat(self, consumer_id: str, info: dict[str, Any]) -> None:
        """Register a consumer's latest state, written with the next flush."""
        self._beats[consumer_id] = info

    def note_queue(self, queue: str, broker_kind: str) -> None:
        """Register a queue's broker kind, written with the next flush."""
        self._queues[queue] = broker_kind

    def store(self) -> RunStore:
        """The store, opened on first use in this process; raises if it cannot be opened."""
        with self._store_lock:
            if self._store is None:
                self._store = open_store(self.url)
            return self._store

    # -- flushing ------------------------------------------------------------------------
    def flush(self, timeout: float = EXIT_FLUSH_SECONDS) -> bool:
        """Write everything buffered now, trying for up to ``timeout`` s; True if the buffer emptied.

        A store that fails is retried until the deadline, unless it was already failing when the flush
        began: then one attempt is made, so a stop or an exit does not wait out a store that is away.
        A writer-thread attempt under way is waited for only until the deadline. One attempt against a
        store whose host is away lasts the client's own timeout (~2 s for MongoDB), so the flush can end
        that much past ``timeout``.
        """
        deadline = time.monotonic() + timeout
        was_failing = self._failing
        while True:
            if self._flush_once(max(0.0, deadline - time.monotonic())) and not self._buffer and not self._beats \
                    and not self._queues:
                return True
            if time.monotonic() >= deadline or (was_failing and self._failing):
                return False
            time.sleep(0.05 if self._buffer else 0.2)

    def _run(self) -> None:
        while not self._closed:
            # Polled, not signalled: a worker setting an event per batch costs more than ten looks a second.
            due = time.monotonic() + self.flush_seconds
            while len(self._buffer) < self.flush_size and time.monotonic() < due and not self._wake.is_set():
                self._wake.wait(FULL_BATCH_POLL_SECONDS)
            self._wake.clear()
            try:
                while self._flush_once() and len(self._buffer) >= self.flush_size:
                    pass  # a backlog: keep writing full batches
                if time.monotonic() >= self._next_prune:
                    self._prune()
            except Exception:  # a bug must not end the thread: records would pile up unseen
                logger.exception('the run records writer failed; it goes on with the next batch')

    def _flush_once(self, wait: float = -1) -> bool:
        """Write one batch; False (entries put back, or dropped when there is no room) if the store failed.

        ``wait``: how long to wait (s) for an attempt under way in another thread (-1: as long as it
        takes); False when that runs out.
        """
        if not self._flush_lock.acquire(timeout=max(0.0, wait) if wait >= 0 else -1):
            return False
        try:
            entries = self._take(MAX_BATCH)
            beats, self._beats = self._beats, {}
            queues, self._queues = self._queues, {}
            batch = self._batch_of(entries, beats, queues)
            if not batch:
                return True
            try:
                self.store().write(batch)
            except Exception as exc:  # store away or slow: keep what fits, newest first
                self._failing = True
                self._put_back(entries, beats, queues, exc)
                return False
            self._failing = False
            self.written += len(entries)
            return True
        finally:
            self._flush_lock.release()

    def _take(self, most: int) -> list[Entry]:
        buffer, taken = self._buffer, []
        try:
            for _ in range(min(most, len(buffer))):
                taken.append(buffer.popleft())
        except IndexError:
            pass
        return taken

    @staticmethod
    def _batch_of(entries: list[Entry], beats: dict[str, dict[str, Any]], queues: dict[str, str]) -> Batch:
        batch = Batch(consumers=beats, queues=queues)
        per_second: dict[tuple[str, str, int], list[float]] = {}
        now = int(time.time())
        for recorder, outcome, thread_id in entries:  # the hot loop of the writer: inlined, ~1 us an entry
            if isinstance(outcome, tuple):  # a chunk's sums (chunk_sums): counts only, no record
                status, second, runs, total, longest = outcome
            else:
                started, finished, status = outcome.started, outcome.finished, outcome.status
                total = longest = finished - started if started and finished else 0.0
                if status == 'dead_lettered' and outcome.exception is not None:
                    status = 'failed'  # record_status, inlined
                second, runs = int(finished) or now, 1
                if recorder.save_records:
                    batch.rows.append(build_row(recorder.queue, recorder.function, outcome, thread_id,
                                                recorder.save_result, recorder.expire_seconds))
            key = (recorder.queue, status, second)
            row = per_second.get(key)
            if row is None:
                per_second[key] = [runs, total, longest]
            else:
                row[0] += runs
                row[1] += total
                if longest > row[2]:
                    row[2] = longest
        batch.rollups = rollups_of(per_second)
        return batch

    def _put_back(self, entries: list[Entry], beats: dict[str, dict[str, Any]], queues: dict[str, str],
                  exc: Exception) -> None:
        for consumer_id, info in beats.items():
            self._beats.setdefault(consumer_id, info)
        for queue, kind in queues.items():
            self._queues.setdefault(queue, kind)
        room = max(0, self.capacity - len(self._buffer))
        kept = entries[len(entries) - room:] if room < len(entries) else entries
        self.dropped += len(entries) - len(kept)
        self._buffer.extendleft(reversed(kept))
        if self._warn_drops.ready(time.monotonic()):
            logger.warning('run store %s is not taking records (%s); %d waiting, %d dropped so far',
                           redact(self.url), redact(str(exc))[:200], len(self._buffer), self.dropped)

    def _prune(self) -> None:
        self._next_prune = time.monotonic() + PRUNE_SECONDS
        try:
            store = self.store()
            for _ in range(PRUNE_CHUNKS_PER_PASS):  # one chunk per transaction: writers wait little
                if store.prune(time.time()) < 2000:
                    break
        except Exception as exc:
            logger.debug('pruning the run store failed: %s', redact(exc))

    def close(self, timeout: float = EXIT_FLUSH_SECONDS) -> None:
        """Flush what is buffered (up to ``timeout`` s) and stop the thread."""
        self.flush(timeout)
        self._closed = True
        self._wake.set()


_writers: dict[str, RecordWriter] = {}
_writers_lock = threading.Lock()


def writer_for(url: str, capacity: Optional[int] = None) -> RecordWriter:
    """This process's writer for a store URL, started on first use (``capacity``: its buffer's, on first use)."""
    writer = _writers.get(url)
    if writer is None:
        with _writers_lock:
            writer = _writers.get(url)
            if writer is None:
                writer = _writers[url] = RecordWriter(url, capacity)
    return writer


def flush_all(timeout: float = EXIT_FLUSH_SECONDS) -> None:
    """Flush every writer of this process (at exit; after a consumer's drain)."""
    for writer in list(_writers.values()):
        writer.flush(timeout)


def _restart_writers_in_child() -> None:
    """In a forked child: each writer gets its own thread and, on first use, its own store client."""
    global _writers_lock
    _writers_lock = threading.Lock()
    for writer in _writers.values():
        writer.restart_in_child()


os.register_at_fork(after_in_child=_restart_writers_in_child)
atexit.register(flush_all)


def register_queue(queue: str, broker_kind: str) -> None:
    """Register a queue's broker kind in the default store (written by the next flush)."""
    from fsdf.records.store import default_store_url
    writer_for(default_store_url()).note_queue(queue, broker_kind)
