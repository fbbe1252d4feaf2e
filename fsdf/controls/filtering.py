"""``do_task_filtering``: a call whose arguments already ran successfully is acked without running.

The key is the arguments in canonical JSON (sorted keys). A key is recorded only after a
successful run, so a call that failed (or is still running) does not filter its twins; two
twins fetched at the same moment may both run. Where keys live depends on the broker, so
filtering reaches exactly as far as the queue's consumers do:

- LOCAL_PYTHON_QUEUE: in the process (its consumers are all there);
- PERSISTQUEUE: in SQLite beside the queues, shared by every process of the machine. The
  embedded brokers never need Redis (SPEC section 4);
- every server broker (the Redis kinds, RabbitMQ, Kafka, MongoDB, and kinds added later): in
  Redis (:class:`fsdf.controls.redis_filter.RedisFilterStore`), because their consumers span
  machines. Each entry is its own key with its own expiry.

Another store can be put in place with :func:`register_filter_store`.
"""
from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Optional

from fsdf.config import settings
from fsdf.controls.base import Middleware, RunOutcome
from fsdf.enums import BrokerEnum

SQLITE_FILE_NAME = 'fsdf_task_filter.sqlite'
_PURGE_EVERY = 1000  # records between sweeps of expired keys


def filter_key(arguments: dict[str, Any]) -> str:
    """The filtering key of a call: its arguments as canonical JSON."""
    return json.dumps(arguments, sort_keys=True, separators=(',', ':'), ensure_ascii=False)


class FilterStore(ABC):
    """Where the keys of successful calls of one queue are kept, each until its expiry (0 = forever)."""

    @abstractmethod
    def seen(self, key: str) -> bool:
        """Whether the key was recorded and has not expired."""

    @abstractmethod
    def record(self, key: str, expire_seconds: float) -> None:
        """Remember the key for ``expire_seconds`` (0 = forever)."""

    @abstractmethod
    def clear(self) -> None:
        """Forget every key of the queue."""


class MemoryFilterStore(FilterStore):
    """Keys in a dict of this process."""

    def __init__(self) -> None:
        self._expires: dict[str, float] = {}  # key -> epoch expiry, 0 = never
        self._lock = threading.Lock()
        self._records = 0

    def seen(self, key: str) -> bool:
        expires = self._expires.get(key)
        return expires is not None and (expires == 0 or expires > time.time())

    def record(self, key: str, expire_seconds: float) -> None:
        now = time.time()
        with self._lock:
            self._expires[key] = now + expire_seconds if expire_seconds else 0
            self._records += 1
            if self._records % _PURGE_EVERY == 0:
                self._expires = {k: e for k, e in self._expires.items() if e == 0 or e > now}

    def clear(self) -> None:
        with self._lock:
            self._expires.clear()


class SqliteFilterStore(FilterStore):
    """Keys in ``PERSIST_QUEUE_PATH/fsdf_task_filter.sqlite``, one table shared by every queue and process."""

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        folder = settings.path('PERSIST_QUEUE_PATH')
        folder.mkdir(parents=True, exist_ok=True)
        import sqlite3  # here: only tasks that filter on this store need it
        self._db = sqlite3.connect(str(folder / SQLITE_FILE_NAME), timeout=60, check_same_thread=False,
                                   isolation_level=None)
        self._lock = threading.Lock()
        self._records = 0
        with self._lock:
            self._db.execute('PRAGMA journal_mode=WAL')
            self._db.execute('CREATE TABLE IF NOT EXISTS fsdf_task_filter (queue TEXT NOT NULL, key TEXT NOT NULL, '
                             'expires REAL NOT NULL, PRIMARY KEY (queue, key)) WITHOUT ROWID')

    def seen(self, key: str) -> bool:
        with self._lock:
            row = self._db.execute('SELECT expires FROM fsdf_task_filter WHERE queue = ? AND key = ?',
                                   (self.queue_name, key)).fetchone()
        return row is not None and (row[0] == 0 or row[0] > time.time())

    def record(self, key: str, expire_seconds: float) -> None:
        now = time.time()
        with self._lock:
            self._db.execute('INSERT OR REPLACE INTO fsdf_task_filter (queue, key, expires) VALUES (?, ?, ?)',
                             (self.queue_name, key, now + expire_seconds if expire_seconds else 0))
            self._records += 1
            if self._records % _PURGE_EVERY == 0:
                self._db.execute('DELETE FROM fsdf_task_filter WHERE queue = ? AND expires != 0 AND expires <= ?',
                                 (self.queue_name, now))

    def clear(self) -> None:
        with self._lock:
            self._db.execute('DELETE FROM fsdf_task_filter WHERE queue = ?', (self.queue_name,))


def _redis_store(queue_name: str) -> FilterStore:
    from fsdf.controls.redis_needed import load_redis_control  # redis is an optional extra
    return load_redis_control('fsdf.controls.redis_filter', 'do_task_filtering').RedisFilterStore(queue_name)


_STORE_MAKERS: dict[BrokerEnum, Callable[[str], FilterStore]] = {
    **{kind: _redis_store for kind in BrokerEnum},
    BrokerEnum.LOCAL_PYTHON_QUEUE: lambda queue_name: MemoryFilterStore(),
    BrokerEnum.PERSISTQUEUE: SqliteFilterStore,
}


def register_filter_store(kind: BrokerEnum, make: Callable[[str], FilterStore]) -> None:
    """Use ``make(queue_name)`` as the filter store of a broker kind."""
    _STORE_MAKERS[BrokerEnum(kind)] = make


def filter_store(kind: BrokerEnum, queue_name: str) -> FilterStore:
    """The one filter store of this process (its default runtime) for a queue."""
    from fsdf.runtime import default_runtime
    kind = BrokerEnum(kind)
    return default_runtime().shared(('filter-store', kind, queue_name), lambda: _STORE_MAKERS[kind](queue_name))


class TaskFilter(Middleware):
    """Skips calls whose arguments already ran successfully within ``expire_seconds`` (0 = forever)."""

    def __init__(self, store: FilterStore, expire_seconds: float) -> None:
        self.store = store
        self.expire_seconds = expire_seconds

    def skip_reason(self, arguments: dict[str, Any], extra: dict[str, Any]) -> Optional[str]:
        return 'filtered' if self.store.seen(filter_key(arguments)) else None

    def after_settle(self, outcome: RunOutcome) -> None:
        if outcome.status == 'succeeded':
            self.store.record(filter_key(outcome.arguments), self.expire_seconds)
