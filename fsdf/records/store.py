"""The run store's interface: what the writer writes and what the queries read, one backend each.

Backends: :mod:`fsdf.records.sqlite_store` (``sqlite:///path``, the default, one machine) and
:mod:`fsdf.records.mongo_store` (``mongodb://...``, many machines). Both page newest first by a
keyset cursor (an opaque string; never ``OFFSET``) and never count a big table exactly.
A store is thread-safe; it is opened lazily in the process that uses it (never inherited across a fork).
"""
from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Optional

CONSUMERS_KEPT_SECONDS = 86400
"""A consumer gone this long is removed from the registry by the pruning."""

_QUICK_DEADLINE: ContextVar[Optional[tuple[float, float]]] = ContextVar('fsdf_quick_read_deadline', default=None)


class ReadTooLong(Exception):
    """A read made under :func:`quick_reads` ran past its time (or found every connection lent) and was stopped."""


@contextmanager
def quick_reads(seconds: float) -> Iterator[None]:
    """Reads made in this context (this thread or task) by a store with ``stops_slow_reads`` raise
    :class:`ReadTooLong` once this thread has spent ``seconds`` of CPU since entering it, instead of going on.

    For a caller that may not wait long (an event loop answering many clients): it tries a read at
    once and, on ReadTooLong, makes it again where waiting is fine (a thread), with no limit. A read
    stopped this way has changed nothing (reads never write). CPU time (``time.thread_time``), not
    wall time: on a crowded machine the thread's waits for a core would otherwise stop reads that are
    quick, and the work thrown away would crowd it more. Edge: a read waiting on a cold disk spends
    little CPU, so it is stopped later in wall time.
    """
    token = _QUICK_DEADLINE.set((time.perf_counter() + seconds, time.thread_time() + seconds))
    try:
        yield
    finally:
        _QUICK_DEADLINE.reset(token)


def quick_read_deadline() -> Optional[tuple[float, float]]:
    """The deadline of the reads made now (see :func:`quick_reads`), for :func:`past`; None: no limit."""
    return _QUICK_DEADLINE.get()


def past(deadline: tuple[float, float]) -> bool:
    """Whether this thread has spent a quick_reads deadline's CPU time.

    Its wall time is looked at first: a thread cannot have spent more CPU than the time gone by, and
    ``perf_counter`` costs a tenth of ``thread_time`` (a system call, 1-5 us in this VM), so a read
    that ends within its time never asks for its CPU time.
    """
    return time.perf_counter() > deadline[0] and time.thread_time() > deadline[1]


Rollups = dict[tuple[str, str, int, int], list[float]]
"""(queue, status, granularity s, bucket start) -> [count, duration sum, duration max]."""


@dataclass
class Batch:
    """What one flush writes, in one transaction where the backend has them."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    """More records, as :func:`~fsdf.records.model.build_row` tuples (what the writer makes: cheaper than dicts)."""
    rollups: Rollups = field(default_factory=dict)
    consumers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """consumer id -> its latest beat."""
    queues: dict[str, str] = field(default_factory=dict)
    """queue -> broker kind name, for queues first seen since the last flush."""

    def __bool__(self) -> bool:
        return bool(self.records or self.rows or self.rollups or self.consumers or self.queues)


@dataclass(frozen=True)
class RunFilter:
    """Which records a page shows; every field left None matches everything.

    ``since``/``until`` are epoch seconds on the end time; ``task_id`` matches as a prefix;
    ``keyword`` is a full-text term over arguments, result and exception.
    """

    queue: Optional[str] = None
    function: Optional[str] = None
    status: Optional[str] = None
    since: Optional[float] = None
    until: Optional[float] = None
    task_id: Optional[str] = None
    host: Optional[str] = None
    keyword: Optional[str] = None
    parent_task_id: Optional[str] = None
    root_task_id: Optional[str] = None


class RunStore(ABC):
    """Records, rollups, the registry of queues and consumers, and pause flags."""

    url: str
    stops_slow_reads: ClassVar[bool] = False
    """Whether its reads honour :func:`quick_reads` (raise ReadTooLong when late, never block on a busy pool):
    then a caller may try them on an event loop. A store reading over the network leaves this False."""

    @abstractmethod
    def write(self, batch: Batch) -> None:
        """Write a batch (records replace earlier records of the same task id); raises if the store is away."""

    @abstractmethod
    def prune(self, now: float, chunk: int = 2000) -> int:
        """Delete one chunk of expired records and old rollup buckets; how many records went."""

    @abstractmethod
    def page_runs(self, run_filter: RunFilter, limit: int, cursor: Optional[str],
                  fields: Optional[tuple[str, ...]] = None) -> tuple[list[dict[str, Any]], Optional[str]]:
        """Records newest first after ``cursor``; and the cursor of the next page (None: no more).

        ``fields``: each record holds only these fields (the stores read less); None: every field.
        """

    @abstractmethod
    def get_run(self, task_id: str) -> Optional[dict[str, Any]]:
        """The record of a task id, None if there is none."""

    @abstractmethod
    def tree_counts(self, task_id: str) -> dict[str, dict[str, int]]:
        """``{'descendants': {status: n}, 'children': {status: n}}`` kept at write time (no scan).

        ``descendants`` is kept for roots only (a task published from outside any task)."""

    def children_counts(self, task_ids: list[str]) -> dict[str, dict[str, int]]:
        """Each task id's direct children counted by status (``{}`` for a task with none), for a page of nodes.

        A backend answers it in one round trip; this fallback asks once per id."""
        return {task_id: self.tree_counts(task_id)['children'] for task_id in task_ids}

    @abstractmethod
    def rollups(self, queue: Optional[str], granularity: int, since: float) -> list[dict[str, Any]]:
        """Rollup rows ``{queue, status, bucket, count, duration_sum, duration_max}`` from ``since`` on."""

    @abstractmethod
    def consumers(self) -> list[dict[str, Any]]:
        """Every registered consumer's latest beat (``beat_time`` says how fresh)."""

    @abstractmethod
    def queues(self) -> list[dict[str, Any]]:
        """Every registered queue: ``{name, broker_kind, first_seen, paused}``."""

    @abstractmethod
    def set_paused(self, queue: str, paused: bool) -> None:
        """Set or clear a queue's pause flag."""

    @abstractmethod
    def paused_queues(self) -> set[str]:
        """Names of the queues paused now."""

    def close(self) -> None:
        """Release connections; the store is not used after."""


def default_store_url() -> str:
    """RESULT_STORE_URL, or SQLite beside the PERSISTQUEUE files when it is empty."""
    from fsdf.config import settings
    if settings.RESULT_STORE_URL:
        return settings.RESULT_STORE_URL
    return 'sqlite:///' + str(settings.path('PERSIST_QUEUE_PATH') / 'fsdf_runs.sqlite')


def open_store(url: Optional[str] = None) -> RunStore:
    """A store for ``url`` (default :func:`default_store_url`); ValueError on an unknown scheme."""
    url = url or default_store_url()
    if url.startswith('sqlite:///'):
        from fsdf.records.sqlite_store import SqliteRunStore
        return SqliteRunStore(os.path.expanduser(url[len('sqlite:///'):]), url)
    if url.startswith(('mongodb://', 'mongodb+srv://')):
        from fsdf.records.mongo_store import MongoRunStore
        return MongoRunStore(url)
    from fsdf.secrets import redact_url
    raise ValueError(f'RESULT_STORE_URL must start with sqlite:/// or mongodb://, got {redact_url(url)!r}')
