"""The SQLite run store (``sqlite:///path``): one file, WAL, written by each process's writer thread.

Pages are keyset pages on the rowid, which follows the order records were written (close to end
time order): ``WHERE ... AND id < cursor ORDER BY id DESC LIMIT n`` walks an index backwards and
stops after n rows. Keyword search is FTS5 over arguments, result and exception (external
content), walked by rowid too. Tree counts and rollups are small upserts in the same transaction
as the records. Pruning deletes the oldest expired records in chunks.

The full-text index is filled by one ``INSERT INTO runs_fts ... SELECT`` per batch, in the same
transaction as the records (so a committed record is searchable at once), not by a per-row
trigger: FTS5 writes its pending terms out as a new segment at every statement boundary, so a
trigger fired by ``executemany`` made one tiny segment per record and the merging of them was
two thirds of a write (about 35 of 55 us a record); one statement per batch makes one segment
per batch (about 3 us a record). Deletes (replacements, pruning) still go through a trigger,
one statement per batch. Segments merge 16 at a time ('usermerge'), measured a quarter cheaper
than the default 4.
"""
from __future__ import annotations

import functools
import json
import operator
import sqlite3
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from fsdf.records.model import FIELDS, GRANULARITIES
from fsdf.records.store import (CONSUMERS_KEPT_SECONDS, Batch, ReadTooLong, RunFilter, RunStore, past,
                                quick_read_deadline)

COLUMNS = FIELDS
_TASK, _STATUS, _PARENT, _ROOT = (FIELDS.index(name) for name in ('task_id', 'status', 'parent_task_id',
                                                                  'root_task_id'))

_NODE_COLUMNS = ('task_id', 'status', 'function', 'queue', 'duration', 'start_time', 'end_time', 'retries',
                 'exception_type', 'root_task_id')
"""What a tree's page of children shows of a node (besides its parent and id): the children index holds them, so
that page reads 200 nodes from the index alone, never the records' arguments, results and tracebacks."""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, {', '.join(COLUMNS)}, UNIQUE(task_id));
CREATE INDEX IF NOT EXISTS runs_queue ON runs(queue, id);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, id);
CREATE INDEX IF NOT EXISTS runs_queue_status ON runs(queue, status, id);
CREATE INDEX IF NOT EXISTS runs_function ON runs(function, id);
DROP INDEX IF EXISTS runs_parent;
CREATE INDEX IF NOT EXISTS runs_parent_nodes ON runs(parent_task_id, id, {', '.join(_NODE_COLUMNS)})
    WHERE parent_task_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_root ON runs(root_task_id, id) WHERE parent_task_id IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS runs_fts USING fts5(arguments, result, exception_type, exception_message,
    content='runs', content_rowid='id');
DROP TRIGGER IF EXISTS runs_fts_insert;
CREATE TRIGGER IF NOT EXISTS runs_fts_delete AFTER DELETE ON runs BEGIN
    INSERT INTO runs_fts(runs_fts, rowid, arguments, result, exception_type, exception_message)
    VALUES ('delete', old.id, old.arguments, old.result, old.exception_type, old.exception_message);
END;
INSERT INTO runs_fts(runs_fts, rank) VALUES ('usermerge', 16);
CREATE TABLE IF NOT EXISTS rollups(gran INTEGER, bucket INTEGER, queue TEXT, status TEXT, n INTEGER,
    dur_sum REAL, dur_max REAL, PRIMARY KEY(gran, bucket, queue, status)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tree_counts(node TEXT, kind TEXT, status TEXT, n INTEGER,
    PRIMARY KEY(node, kind, status)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consumers(consumer_id TEXT PRIMARY KEY, queue TEXT, beat_time REAL, info TEXT);
CREATE TABLE IF NOT EXISTS queues(name TEXT PRIMARY KEY, broker_kind TEXT, first_seen REAL,
    paused INTEGER NOT NULL DEFAULT 0, paused_at REAL);
CREATE TABLE IF NOT EXISTS flushes(first_id INTEGER PRIMARY KEY, last_id INTEGER, ended_by REAL, ended_from REAL);
CREATE INDEX IF NOT EXISTS flushes_ended_by ON flushes(ended_by, first_id);
CREATE INDEX IF NOT EXISTS flushes_ended_from ON flushes(ended_from, first_id);
"""
"""``flushes``: one row per written batch, the exact bounds a time range turns into an id range (see _id_bounds).
``ended_by`` is the latest end time of this batch and every earlier one (a running maximum), ``ended_from`` the
earliest end time of this batch and every later one (a running minimum): both never decrease with ``first_id``,
so one index probe finds the first batch that can hold a record ending at or after a moment, and the last one
that can hold a record ending before it."""
_INSERT = f'INSERT INTO runs({", ".join(COLUMNS)}) VALUES ({", ".join("?" * len(COLUMNS))})'
_INSERT_WITH_ID = f'INSERT INTO runs(id, {", ".join(COLUMNS)}) VALUES ({", ".join("?" * (len(COLUMNS) + 1))})'
_FTS_COLUMNS = 'arguments, result, exception_type, exception_message'
_INDEX_NEW = f'INSERT INTO runs_fts(rowid, {_FTS_COLUMNS}) SELECT id, {_FTS_COLUMNS} FROM runs WHERE id > ?'
_row_of = operator.itemgetter(*COLUMNS)
"""A record dict as the INSERT's parameter tuple, at C speed (a generator costs ~2 us a record)."""
_ROLLUP_UPSERT = ('INSERT INTO rollups VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n, '
                  'dur_sum = dur_sum + excluded.dur_sum, dur_max = max(dur_max, excluded.dur_max)')
_TREE_UPSERT = 'INSERT INTO tree_counts VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n'
_IN_CHUNK = 500  # task ids per IN (...) lookup
_CHILDREN_COUNTS = ("SELECT tree_counts.node, tree_counts.status, tree_counts.n FROM json_each(?) "
                    "CROSS JOIN tree_counts ON tree_counts.node = json_each.value AND tree_counts.kind = 'parent'")
"""Each of a JSON array's ids' children counts (CROSS JOIN: walk the array, look each id up, never the reverse)."""
_END = FIELDS.index('end_time')
_NO_END = float('inf')  # a batch with no end times: it bounds no time range
_LEGACY_SPAN = 4096  # ids per flushes row when a store written before that table gets one
_RUN = ', '.join(f'runs.{column}' for column in (*COLUMNS, 'id'))  # COLUMNS, then the id (zip stops before it)
PREFIX_FEW = 2000
"""A task id prefix matching fewer records than this is read through the task id index and sorted."""
_TASK_ID_INDEX = 'sqlite_autoindex_runs_1'  # the index of UNIQUE(task_id)
READERS = 4
"""Read connections per store: enough to keep 2-4 cores busy; each more only adds a page cache (~2 MB)."""
CHECK_EVERY = 1000
"""SQLite virtual-machine steps between two looks at a quick read's deadline: 0.4-0.7 ms of work (a look: ~0.1 us)."""


class _Readers:
    """A bounded pool of read-only connections to one SQLite file, so reads never take the writer's lock.

    WAL lets them read side by side with each other and with a write, and the ``sqlite3`` module
    lets go of the GIL while SQLite works.

    ``with readers.connection() as db:`` lends a connection, waiting while all ``size`` are lent. They
    open on first need and are reused newest first (its page cache is the warmest); :meth:`close`
    closes the idle ones at once and the lent ones as they come back. ``PRAGMA query_only`` makes a
    write through one an error instead of a second writer.

    Under :func:`fsdf.records.store.quick_reads` a connection is never waited for and a statement
    past the deadline is interrupted (SQLite's progress handler, every CHECK_EVERY steps): both raise ReadTooLong.
    """

    def __init__(self, path: str, size: int = READERS) -> None:
        self._path = path
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        deadline = quick_read_deadline()
        if deadline is None:
            self._slots.acquire()
        elif not self._slots.acquire(blocking=False):
            raise ReadTooLong('every read connection is lent')
        try:
            db = self._take()
            try:
                if deadline is not None:
                    db.set_progress_handler(functools.partial(past, deadline), CHECK_EVERY)
                yield db
            except sqlite3.OperationalError as exc:
                if deadline is not None and str(exc) == 'interrupted' and past(deadline):
                    raise ReadTooLong('the read ran past its deadline') from None
                raise
            finally:
                if deadline is not None:
                    db.set_progress_handler(None, 0)
                self._give_back(db)
        finally:
            self._slots.release()

    def _take(self) -> sqlite3.Connection:
        """The newest idle connection, or a new one (the caller holds a slot)."""
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError('Cannot operate on a closed run store.')
            db = self._idle.pop() if self._idle else None
        return db if db is not None else self._open()

    def _give_back(self, db: sqlite3.Connection) -> None:
        with self._lock:
            if self._closed:
                db.close()
            else:
                self._idle.append(db)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=10, check_same_thread=False, isolation_level=None)
        db.execute('PRAGMA query_only=1')  # rows are plain tuples: a Row read by name cost 2 ms a page of 200
        return db

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()


class SqliteRunStore(RunStore):
    """Run records in one SQLite file: one writing connection guarded by a lock, and a pool of readers."""

    stops_slow_reads = True

    def __init__(self, path: str, url: str = '') -> None:
        self.url = url or f'sqlite:///{path}'
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute('PRAGMA journal_mode=WAL')
        self._db.execute('PRAGMA synchronous=NORMAL')
        with self._lock:
            self._db.executescript(SCHEMA)
            _fill_flushes(self._db)
        self._readers = _Readers(path)

    def close(self) -> None:
        self._readers.close()
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------
    def write(self, batch: Batch) -> None:
        with self._lock:
            db = self._db
            db.execute('BEGIN IMMEDIATE')
            try:
                if batch.records or batch.rows:
                    self._write_records([*batch.rows, *map(_row_of, batch.records)])
                db.executemany(_ROLLUP_UPSERT, [(gran, bucket, queue, status, n, dur_sum, dur_max) for
                                                (queue, status, gran, bucket), (n, dur_sum, dur_max)
                                                in batch.rollups.items()])
                db.executemany('INSERT OR REPLACE INTO consumers VALUES (?, ?, ?, ?)',
                               [(cid, info.get('queue'), info.get('beat_time'), json.dumps(info))
                                for cid, info in batch.consumers.items()])
                now = time.time()
                db.executemany('INSERT INTO queues(name, broker_kind, first_seen) VALUES (?, ?, ?) '
                               'ON CONFLICT DO UPDATE SET broker_kind = excluded.broker_kind',
                               [(name, kind, now) for name, kind in batch.queues.items()])
                db.execute('COMMIT')
            except BaseException:
                db.execute('ROLLBACK')
                raise

    def _write_records(self, rows: list[tuple[Any, ...]]) -> None:
        """Replace earlier records of the same task ids, keeping the tree counts right; index the new ones."""
        db = self._db
        latest = {r[_TASK]: r for r in rows if r[_TASK] is not None}
        fresh = [*latest.values(), *(r for r in rows if r[_TASK] is None)]
        deltas: dict[tuple[str, str, str], int] = defaultdict(int)
        self._delete_replaced(list(latest), deltas)
        _insert_after(db, fresh)
        for row in fresh:
            _count_in_tree(deltas, row[_TASK], row[_STATUS], row[_PARENT], row[_ROOT], 1)
        db.executemany(_TREE_UPSERT, [(*key, n) for key, n in deltas.items() if n])

    def _delete_replaced(self, task_ids: list[str], deltas: dict[tuple[str, str, str], int]) -> None:
        """Delete the stored records of these task ids (usually none), taking them out of the tree counts."""
        db = self._db
        replaced: list[int] = []
        for start in range(0, len(task_ids), _IN_CHUNK):
            chunk = task_ids[start:start + _IN_CHUNK]
            for old in db.execute(f'SELECT id, task_id, status, parent_task_id, root_task_id FROM runs '
                                  f'WHERE task_id IN ({", ".join("?" * len(chunk))})', chunk):
                _count_in_tree(deltas, old[1], old[2], old[3], old[4], -1)
                replaced.append(old[0])
        for start in range(0, len(replaced), _IN_CHUNK):  # one statement per chunk: see the module's note
            chunk_ids = replaced[start:start + _IN_CHUNK]
            db.execute(f'DELETE FROM runs WHERE id IN ({", ".join("?" * len(chunk_ids))})', chunk_ids)

    def prune(self, now: float, chunk: int = 2000) -> int:
        with self._lock:
            db = self._db
            db.execute('BEGIN IMMEDIATE')
            try:
                gone = db.execute('SELECT id, task_id FROM runs WHERE id IN (SELECT id FROM runs ORDER BY id '
                                  'LIMIT ?) AND expire_at < ?', (chunk, now)).fetchall()
                if gone:  # one statement, not one per row: see the module's note on FTS5 segments
                    ids = [row[0] for row in gone]  # every id between these is in the chunk: the same rows
                    db.execute('DELETE FROM runs WHERE id BETWEEN ? AND ? AND expire_at < ?', (min(ids), max(ids), now))
                db.executemany('DELETE FROM tree_counts WHERE node = ?', [(row[1],) for row in gone if row[1]])
                db.execute('DELETE FROM flushes WHERE last_id < (SELECT min(id) FROM runs)')
                for gran, keep in GRANULARITIES:
                    db.execute('DELETE FROM rollups WHERE gran = ? AND bucket < ?', (gran, now - keep))
                db.execute('DELETE FROM consumers WHERE beat_time < ?', (now - CONSUMERS_KEPT_SECONDS,))
                db.execute('COMMIT')
            except BaseException:
                db.execute('ROLLBACK')
                raise
        return len(gone)

    # -- reading -------------------------------------------------------------------------
    def page_runs(self, run_filter: RunFilter, limit: int, cursor: Optional[str],
                  fields: Optional[tuple[str, ...]] = None) -> tuple[list[dict[str, Any]], Optional[str]]:
        fixed = tuple(name for name in _FIXED_BY_FILTER if getattr(run_filter, name) is not None)
        names, selected = _selection(fields, fixed)
        fixed = tuple(name for name in fixed if name in names)
        where, params = _where(run_filter)
        if cursor:
            where.append('runs.id < ?')
            params.append(int(cursor))
        with self._readers.connection() as db:
            where_ids, id_params = _id_bounds(db, run_filter)
            clause = ' AND '.join(where + where_ids) or '1'
            params += id_params
            if run_filter.keyword:
                sql = (f'SELECT {selected} FROM runs_fts JOIN runs ON runs.id = runs_fts.rowid WHERE runs_fts MATCH ? '
                       f'AND {clause} ORDER BY runs_fts.rowid DESC LIMIT ?')
                params = [_fts_phrase(run_filter.keyword), *params]
            else:
                table = f'runs INDEXED BY {_TASK_ID_INDEX}' if _few_with_prefix(db, run_filter.task_id) else 'runs'
                sql = f'SELECT {selected} FROM {table} WHERE {clause} ORDER BY id DESC LIMIT ?'
            rows = db.execute(sql, [*params, limit + 1]).fetchall()
        page = records_of(names, fixed)(rows[:limit], *(getattr(run_filter, name) for name in fixed))
        return page, str(rows[limit - 1][-1]) if len(rows) > limit else None

    def get_run(self, task_id: str) -> Optional[dict[str, Any]]:
        with self._readers.connection() as db:
            row = db.execute(f'SELECT {_RUN} FROM runs WHERE task_id = ?', (task_id,)).fetchone()
        return _record(row) if row else None

    def tree_counts(self, task_id: str) -> dict[str, dict[str, int]]:
        with self._readers.connection() as db:
            rows = db.execute('SELECT kind, status, n FROM tree_counts WHERE node = ?', (task_id,)).fetchall()
        counts: dict[str, dict[str, int]] = {'descendants': {}, 'children': {}}
        for kind, status, n in rows:
            if n:
                counts['descendants' if kind == 'root' else 'children'][status] = n
        return counts

    def children_counts(self, task_ids: list[str]) -> dict[str, dict[str, int]]:
        """The ids go in as one JSON array that ``json_each`` walks, each looked up by the primary key: binding
        200 parameters to ``IN (?, ...)`` (and the temporary index SQLite builds of them) cost 3x the lookups
        (135 against 45 us a page of 200 nodes without children)."""
        counts: dict[str, dict[str, int]] = {task_id: {} for task_id in task_ids}
        if not task_ids:
            return counts
        with self._readers.connection() as db:
            for node, status, n in db.execute(_CHILDREN_COUNTS, (_json_texts(task_ids),)):
                if n:
                    counts[node][status] = n
        return counts

    def rollups(self, queue: Optional[str], granularity: int, since: float) -> list[dict[str, Any]]:
        sql = 'SELECT queue, status, bucket, n, dur_sum, dur_max FROM rollups WHERE gran = ? AND bucket >= ?'
        params: list[Any] = [granularity, int(since) - int(since) % granularity]
        if queue is not None:
            sql += ' AND queue = ?'
            params.append(queue)
        with self._readers.connection() as db:
            rows = db.execute(sql + ' ORDER BY bucket', params).fetchall()
        return [{'queue': q, 'status': s, 'bucket': b, 'count': n, 'duration_sum': ds, 'duration_max': dm}
                for q, s, b, n, ds, dm in rows]

    def consumers(self) -> list[dict[str, Any]]:
        with self._readers.connection() as db:
            rows = db.execute('SELECT info FROM consumers').fetchall()
        return [json.loads(row[0]) for row in rows]

    def queues(self) -> list[dict[str, Any]]:
        with self._readers.connection() as db:
            rows = db.execute('SELECT name, broker_kind, first_seen, paused FROM queues ORDER BY name').fetchall()
        return [{'name': n, 'broker_kind': k, 'first_seen': f, 'paused': bool(p)} for n, k, f, p in rows]

    def set_paused(self, queue: str, paused: bool) -> None:
        with self._lock:
            self._db.execute('INSERT INTO queues(name, first_seen, paused, paused_at) VALUES (?, ?, ?, ?) '
                             'ON CONFLICT DO UPDATE SET paused = excluded.paused, paused_at = excluded.paused_at',
                             (queue, time.time(), int(paused), time.time() if paused else None))

    def paused_queues(self) -> set[str]:
        with self._readers.connection() as db:
            return {row[0] for row in db.execute('SELECT name FROM queues WHERE paused')}


def _count_in_tree(deltas: dict[tuple[str, str, str], int], task_id: Optional[str], status: str,
                   parent: Optional[str], root: Optional[str], sign: int) -> None:
    """Add a record to its root's descendant counts and its parent's child counts (``sign`` -1: take it out)."""
    if parent:
        deltas[(parent, 'parent', status)] += sign
    if root and root != task_id:
        deltas[(root, 'root', status)] += sign


def _where(run_filter: RunFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column in ('queue', 'function', 'status', 'host', 'parent_task_id'):
        value = getattr(run_filter, column)
        if value is not None:
            where.append(f'runs.{column} = ?')
            params.append(value)
    if run_filter.root_task_id is not None:  # descendants only: the partial index holds no roots
        where.append('runs.root_task_id = ? AND runs.parent_task_id IS NOT NULL')
        params.append(run_filter.root_task_id)
    if run_filter.since is not None:
        where.append('runs.end_time >= ?')
        params.append(run_filter.since)
    if run_filter.until is not None:
        where.append('runs.end_time < ?')
        params.append(run_filter.until)
    if run_filter.task_id:  # a prefix, as a range the unique index serves
        where.append('runs.task_id >= ? AND runs.task_id < ?')
        params.extend(_prefix_range(run_filter.task_id))
    return where, params


def _id_bounds(db: sqlite3.Connection, run_filter: RunFilter) -> tuple[list[str], list[Any]]:
    """A time range as a range of ids, so a page walks only the ids of that time: exact, from ``flushes``.

    A record ending at or after ``since`` was written in a batch whose running maximum end time is at or
    after it, so at or after the first such batch; one ending before ``until`` in a batch whose running
    minimum is before it, so at or before the last such batch. Records written in any order (clocks
    apart, late flushes, imports) stay inside; the exact end_time test still applies within.
    """
    where: list[str] = []
    params: list[Any] = []
    if run_filter.since is None and run_filter.until is None:
        return where, params
    recorded, stored = _high_water(db, cover=False)[:2]  # ids past ``recorded``: by an fsdf from before flushes
    if run_filter.since is not None:
        row = db.execute('SELECT first_id FROM flushes WHERE ended_by >= ? ORDER BY ended_by, first_id LIMIT 1',
                         (run_filter.since,)).fetchone()
        where.append('runs.id >= ?')
        params.append(min(row[0] if row else recorded + 1, recorded + 1))
    if run_filter.until is not None:
        row = db.execute('SELECT last_id FROM flushes WHERE ended_from < ? ORDER BY ended_from DESC, first_id DESC '
                         'LIMIT 1', (run_filter.until,)).fetchone()
        where.append('runs.id <= ?')
        params.append(stored if stored > recorded else row[0] if row else 0)
    return where, params


def _high_water(db: sqlite3.Connection, cover: bool = True) -> tuple[int, int, tuple[float, float]]:
    """The last id ever written (a replaced or pruned record's included; 0 on a new store), the last id
    stored, and the last batch's (``ended_by``, ``ended_from``): the highest of each so far.

    Records past the last batch's row (written by an fsdf from before ``flushes``, sharing the file)
    get a row first if ``cover`` (the writer), so every stored id stays inside one; a reader (not
    ``cover``) gets the last row's ``last_id`` first and bounds those ids itself.
    """
    row = db.execute('SELECT last_id, ended_by, ended_from FROM flushes ORDER BY first_id DESC LIMIT 1').fetchone()
    stored = db.execute('SELECT coalesce(max(id), 0) FROM runs').fetchone()[0]
    recorded, last = (row[0], (row[1], row[2])) if row else (0, (-_NO_END, -_NO_END))
    if stored > recorded and not cover:
        return recorded, stored, last
    if stored > recorded:
        earliest, latest = db.execute('SELECT min(end_time), max(end_time) FROM runs WHERE id > ?',
                                      (recorded,)).fetchone()
        _record_flush(db, recorded + 1, stored, [end for end in (earliest, latest) if end is not None], last)
        return _high_water(db)
    return recorded, stored, last


def _insert_after(db: sqlite3.Connection, fresh: list[tuple[Any, ...]]) -> None:
    """Insert rows past every id ever written, so batches' id ranges never overlap; add the batch's bounds.

    SQLite gives max(id) + 1, which falls back when the newest records were just replaced; then the
    first row goes in with its id said, and the rest follow it.
    """
    high, stored, last = _high_water(db)
    if fresh and stored < high:
        db.execute(_INSERT_WITH_ID, (high + 1, *fresh[0]))
        db.executemany(_INSERT, fresh[1:])
    else:
        db.executemany(_INSERT, fresh)
    db.execute(_INDEX_NEW, (high,))  # one statement: one FTS5 segment for the whole batch
    _record_flush(db, high + 1, high + len(fresh), [row[_END] for row in fresh if row[_END] is not None], last)


def _record_flush(db: sqlite3.Connection, first_id: int, last_id: int, ends: list[float],
                  last: tuple[float, float]) -> None:
    """Add a batch's row to ``flushes`` (``last``: the previous row's ``ended_by, ended_from``), lowering the
    running minimum of the earlier rows it undercuts (none when it ends no earlier than the last row's)."""
    if last_id < first_id:
        return
    earliest, latest = (min(ends), max(ends)) if ends else (_NO_END, -_NO_END)
    if earliest < last[1]:
        db.execute('UPDATE flushes SET ended_from = ? WHERE ended_from > ?', (earliest, earliest))
    db.execute('INSERT INTO flushes VALUES (?, ?, ?, ?)', (first_id, last_id, max(latest, last[0]), earliest))


def _fill_flushes(db: sqlite3.Connection) -> None:
    """Give a store written before ``flushes`` existed its rows, _LEGACY_SPAN ids each (one scan, once)."""
    if _has_rows(db, 'flushes') or not _has_rows(db, 'runs'):
        return
    db.execute('BEGIN IMMEDIATE')
    try:
        if not _has_rows(db, 'flushes'):  # another process may have just done it
            spans = db.execute('SELECT min(id), max(id), min(end_time), max(end_time) FROM runs '
                               f'GROUP BY id / {_LEGACY_SPAN} ORDER BY 1').fetchall()
            ended_by = -_NO_END
            for first_id, last_id, earliest, latest in spans:
                _record_flush(db, first_id, last_id, [end for end in (earliest, latest) if end is not None],
                              (ended_by, _NO_END))  # (no last row's minimum known: always lower the earlier ones)
                ended_by = max(ended_by, latest if latest is not None else -_NO_END)
        db.execute('COMMIT')
    except BaseException:
        db.execute('ROLLBACK')
        raise


def _has_rows(db: sqlite3.Connection, table: str) -> bool:
    return db.execute(f'SELECT 1 FROM {table} LIMIT 1').fetchone() is not None


def _few_with_prefix(db: sqlite3.Connection, prefix: Optional[str]) -> bool:
    """Whether fewer than PREFIX_FEW task ids start with ``prefix`` (counted in the index, at most that many).

    SQLite's planner prefers walking another index in id order (no sort) to the task id range; inside
    a 20,000-node tree that reads every node (14 ms) where the range holds a few dozen ids (0.2 ms).
    """
    if not prefix:
        return False
    (found,) = db.execute('SELECT count(*) FROM (SELECT 1 FROM runs WHERE task_id >= ? AND task_id < ? LIMIT ?)',
                          (*_prefix_range(prefix), PREFIX_FEW)).fetchone()
    return bool(found < PREFIX_FEW)


def _prefix_range(prefix: str) -> tuple[str, str]:
    """The task ids starting with ``prefix`` as a half-open range the unique index serves."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _json_texts(texts: list[str]) -> str:
    """``texts`` as a JSON array. Texts that need no escape (no quote, backslash or unprintable character: task
    ids as fsdf makes them) are joined as they are, at a tenth of ``json.dumps``'s cost (4 against 40 us for 200)."""
    joined = '","'.join(texts)
    if joined.isprintable() and '\\' not in joined and joined.count('"') == 2 * (len(texts) - 1):
        return f'["{joined}"]'
    return json.dumps(texts, ensure_ascii=False)


def _fts_phrase(keyword: str) -> str:
    """A keyword as one FTS5 phrase, so user text never reads as query syntax."""
    return '"' + keyword.replace('"', '""') + '"'


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    """A record from a row selected as ``_RUN`` (its id last, which a record does not show)."""
    return dict(zip(COLUMNS, row))


_FIXED_BY_FILTER = ('queue', 'function', 'status', 'host', 'parent_task_id', 'root_task_id')
"""The RunFilter fields that match one value exactly (``=``, binary): a page filtered by one holds that value there."""


@functools.lru_cache(maxsize=64)
def _selection(fields: Optional[tuple[str, ...]], fixed: tuple[str, ...] = ()) -> tuple[tuple[str, ...], str]:
    """The columns a page of ``fields`` (None: all) shows, in table order, and the SELECT list that reads them but
    the ``fixed`` ones (the filter's values, filled in by records_of), then the id.

    Made once per set: a page asks for the same few, and building the text cost ~5 us a request."""
    names = COLUMNS if fields is None else tuple(name for name in COLUMNS if name in fields)
    return names, ', '.join(f'runs.{column}' for column in (*names, 'id') if column not in fixed)


@functools.lru_cache(maxsize=64)
def records_of(names: tuple[str, ...], fixed: tuple[str, ...] = ()) -> Callable[..., list[dict[str, Any]]]:
    """A function from rows (``names`` but the ``fixed`` ones, then the id, as page_runs selects them) and the
    ``fixed`` columns' values, in that order, to records keyed by ``names``.

    It is a list comprehension over a dict display written for these names (as ``dataclasses`` and
    ``namedtuple`` write their methods): CPython builds a display's dict at its final size from
    constant keys, 2.7x faster than ``dict(zip(names, row))`` (150 against 410 us for a page of 200
    nodes, a quarter of the page's CPU). A fixed column (the queue of a page filtered by queue) is not
    read from SQLite, where each value costs ~0.2 us. ``names`` are column names only (checked), never a
    caller's text.
    """
    if not set(names) <= set(COLUMNS) or not set(fixed) <= set(names):
        raise ValueError(f'not columns of runs: {sorted(set(names) - set(COLUMNS))} or of {names}: {fixed}')
    read = [f'v{i}' for i, name in enumerate(names) if name not in fixed]
    values = [f'f{fixed.index(name)}' if name in fixed else f'v{i}' for i, name in enumerate(names)]
    display = ', '.join(f'{name!r}: {value}' for name, value in zip(names, values))
    given = ''.join(f', f{i}' for i in range(len(fixed)))
    source = f'lambda rows{given}: [{{{display}}} for ({", ".join((*read, "_id"))},) in rows]'
    return eval(source, {'__builtins__': {}})

