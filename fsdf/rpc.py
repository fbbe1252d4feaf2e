"""Where RPC-mode results travel from the consumer back to the publisher's ``AsyncResult``.

Each broker family has a natural store: in-process for LOCAL_PYTHON_QUEUE, a SQLite file for
PERSISTQUEUE (the processes of one machine), Redis for everything else (``fsdf:result:<task id>``).
A result is JSON: ``{"status": "success"|"failed", "result": ..., "exception": {...}}``.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Optional

from fsdf._optional import import_optional
from fsdf.config import settings
from fsdf.enums import BrokerEnum

RESULT_TTL_SECONDS = 600
BLOCK_SLICE_SECONDS = 10.0  # one blocking Redis wait; below redis_connection.SOCKET_TIMEOUT_SECONDS


class ResultBackend(ABC):
    """Stores one JSON result per task id for a while, and waits for one to arrive."""

    @abstractmethod
    def put(self, task_id: str, payload: dict[str, Any], ttl: float = RESULT_TTL_SECONDS) -> None:
        """Store a task's result."""

    @abstractmethod
    def wait(self, task_id: str, timeout: Optional[float]) -> Optional[dict[str, Any]]:
        """The task's result, waiting up to ``timeout`` s (None: forever); None if it did not come."""

    def close(self) -> None:  # noqa: B027 - optional: only stores that hold a file or a connection override it
        """Let go of files and connections; the runtime calls this when it closes."""


class LocalResultBackend(ResultBackend):
    """Results of in-process queues, kept in memory as JSON text so they read back as from any other store."""

    def __init__(self) -> None:
        self._results: dict[str, tuple[float, str]] = {}
        self._arrived = threading.Condition()

    def put(self, task_id: str, payload: dict[str, Any], ttl: float = RESULT_TTL_SECONDS) -> None:
        now = time.monotonic()
        with self._arrived:
            if len(self._results) > 10_000:
                self._results = {k: v for k, v in self._results.items() if v[0] > now}
            self._results[task_id] = (now + ttl, json.dumps(payload))
            self._arrived.notify_all()

    def wait(self, task_id: str, timeout: Optional[float]) -> Optional[dict[str, Any]]:
        with self._arrived:
            self._arrived.wait_for(lambda: task_id in self._results, timeout)
            found = self._results.get(task_id)
        return json.loads(found[1]) if found else None


class SqliteResultBackend(ResultBackend):
    """Results in ``PERSIST_QUEUE_PATH/fsdf_results.sqlite``; waiters poll it (2 ms backing off to 50 ms)."""

    def __init__(self) -> None:
        folder = settings.path('PERSIST_QUEUE_PATH')
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(folder / 'fsdf_results.sqlite', timeout=30, check_same_thread=False)
        with self._db:
            self._db.execute('PRAGMA journal_mode=WAL')
            self._db.execute('CREATE TABLE IF NOT EXISTS fsdf_results '
                             '(task_id TEXT PRIMARY KEY, payload TEXT, expires REAL)')

    def put(self, task_id: str, payload: dict[str, Any], ttl: float = RESULT_TTL_SECONDS) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.execute('DELETE FROM fsdf_results WHERE expires < ?', (now,))
            self._db.execute('INSERT OR REPLACE INTO fsdf_results VALUES (?, ?, ?)',
                             (task_id, json.dumps(payload), now + ttl))

    def wait(self, task_id: str, timeout: Optional[float]) -> Optional[dict[str, Any]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            with self._lock:
                row = self._db.execute('SELECT payload FROM fsdf_results WHERE task_id = ?', (task_id,)).fetchone()
            if row:
                return json.loads(row[0])
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.05)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def result_key(task_id: str) -> str:
    """The Redis list that carries a task's result back."""
    return f'fsdf:result:{task_id}'


class RedisResultBackend(ResultBackend):
    """Results in Redis lists ``fsdf:result:<task id>``; a waiter blocks on the list without consuming it."""

    def __init__(self) -> None:
        connection = import_optional('fsdf.redis_connection', 'redis', 'RPC results are kept in Redis')
        self._redis = connection.redis_client()

    def put(self, task_id: str, payload: dict[str, Any], ttl: float = RESULT_TTL_SECONDS) -> None:
        key = result_key(task_id)
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, json.dumps(payload))
            pipe.pexpire(key, max(1, round(ttl * 1000)))  # EXPIRE 0 would delete the result at once
            pipe.execute()

    def wait(self, task_id: str, timeout: Optional[float]) -> Optional[dict[str, Any]]:
        key = result_key(task_id)
        if timeout is not None and timeout <= 0:
            raw = self._redis.lindex(key, 0)
            return json.loads(raw) if raw is not None else None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # Block in slices shorter than the client's socket timeout, which would otherwise cut a long wait.
            block = BLOCK_SLICE_SECONDS if deadline is None else min(BLOCK_SLICE_SECONDS, deadline - time.monotonic())
            # BLMOVE from a list to itself returns its element and leaves it there for other waiters.
            raw = self._redis.blmove(key, key, max(block, 0.01), 'LEFT', 'LEFT')
            if raw is not None:
                return json.loads(raw)
            if deadline is not None and time.monotonic() >= deadline:
                return None


_BACKEND_CLASSES: dict[str, type[ResultBackend]] = {
    'local': LocalResultBackend, 'sqlite': SqliteResultBackend, 'redis': RedisResultBackend}


def result_backend_for(kind: BrokerEnum) -> ResultBackend:
    """The result store that fits a broker kind (one per process: the default runtime's)."""
    from fsdf.runtime import default_runtime
    name = {BrokerEnum.LOCAL_PYTHON_QUEUE: 'local', BrokerEnum.PERSISTQUEUE: 'sqlite'}.get(BrokerEnum(kind), 'redis')
    return default_runtime().shared(('result-backend', name), _BACKEND_CLASSES[name], ResultBackend.close)


def success_payload(result: Any) -> dict[str, Any]:
    """The stored form of a successful run; a result that is not JSON is stored as its repr."""
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        return {'status': 'success', 'result': repr(result), 'result_was_not_json': True}
    return {'status': 'success', 'result': result}


def failure_payload(exception: Optional[BaseException], retries: int) -> dict[str, Any]:
    """The stored form of a run that ended in the dead-letter queue."""
    return {'status': 'failed', 'retries': retries,
            'exception': {'type': type(exception).__name__, 'message': str(exception)}}
