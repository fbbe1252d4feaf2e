"""The read side, shared by the ``fsdf`` command and the dashboard: plain functions over the run store.

Every function takes ``store=None`` (the store at ``RESULT_STORE_URL``, opened once per process)
and returns dicts or small dataclasses of JSON-able values. Pages are newest first; pass the
``next_cursor`` of one page as ``cursor`` to get the next (None: no more). Nothing counts a big
table: a page says only whether more follow.
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from fsdf.enums import BrokerEnum
from fsdf.records import pause
from fsdf.records.middleware import STALE_AFTER_SECONDS
from fsdf.records.store import RunFilter, RunStore, default_store_url, open_store

DEFAULT_PAGE = 50
CHILDREN_PAGE = 200
MAX_PAGE = 1000
WINDOW_UNITS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}
"""A stats window's unit is also its bucket size: ``60s`` is 60 one-second buckets, ``10d`` ten days."""

_stores: dict[str, RunStore] = {}
_stores_lock = threading.Lock()


@dataclass
class RunPage:
    """One page of records, newest first, and the cursor of the next page (None: this is the last)."""

    records: list[dict[str, Any]]
    next_cursor: Optional[str]


@dataclass
class StatsSeries:
    """A queue's (or every queue's) runs per bucket: ``buckets`` are ``{bucket, counts, duration_sum,
    duration_max}`` in time order, only buckets that had runs; ``bucket`` is the start, epoch seconds."""

    queue: Optional[str]
    granularity: int
    since: float
    buckets: list[dict[str, Any]] = field(default_factory=list)


def _forget_parent_stores() -> None:
    """In a forked child: the parent's store clients are not this process's to use."""
    global _stores_lock
    _stores.clear()
    _stores_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_parent_stores)


def default_store() -> RunStore:
    """The store at RESULT_STORE_URL, opened once per process."""
    url = default_store_url()
    with _stores_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = open_store(url)
        return store


def _or_default(store: Optional[RunStore]) -> RunStore:
    return store if store is not None else default_store()


# -- runs --------------------------------------------------------------------------------
def list_runs(queue: Optional[str] = None, function: Optional[str] = None, status: Optional[str] = None,
              since: Optional[float] = None, until: Optional[float] = None, task_id: Optional[str] = None,
              host: Optional[str] = None, search: Optional[str] = None, limit: int = DEFAULT_PAGE,
              cursor: Optional[str] = None, store: Optional[RunStore] = None,
              fields: Optional[tuple[str, ...]] = None) -> RunPage:
    """Records newest first matching every filter given (``task_id`` is a prefix, ``search`` a keyword;
    ``fields``: only these fields of each)."""
    run_filter = RunFilter(queue=queue, function=function, status=status, since=since, until=until,
                           task_id=task_id or None, host=host, keyword=search or None)
    records, next_cursor = _or_default(store).page_runs(run_filter, _page_size(limit), cursor, fields)
    return RunPage(records, next_cursor)


def get_run(task_id: str, store: Optional[RunStore] = None) -> Optional[dict[str, Any]]:
    """The whole record of one task, None if there is none (never ran, expired, or records are off)."""
    return _or_default(store).get_run(task_id)


def children(task_id: str, limit: int = CHILDREN_PAGE, cursor: Optional[str] = None,
             status: Optional[str] = None, store: Optional[RunStore] = None,
             fields: Optional[tuple[str, ...]] = None) -> RunPage:
    """The records of the tasks ``task_id`` published, newest first, paged (``fields``: only these fields)."""
    records, next_cursor = _or_default(store).page_runs(
        RunFilter(parent_task_id=task_id, status=status), _page_size(limit), cursor, fields)
    return RunPage(records, next_cursor)


def subtree_counts(task_id: str, store: Optional[RunStore] = None) -> dict[str, dict[str, int]]:
    """Per-status counts kept at write time, read without scanning the tree.

    ``children``: the task's direct children, for any task. ``descendants``: every task below it,
    kept for roots only (a task published from outside any task); empty for inner nodes, whose
    deeper counts come from expanding their children.
    """
    return _or_default(store).tree_counts(task_id)


def children_counts(task_ids: list[str], store: Optional[RunStore] = None) -> dict[str, dict[str, int]]:
    """Each task's direct children per status (``{}``: none), for a whole page of nodes in one store read."""
    return _or_default(store).children_counts(list(task_ids))


def _page_size(limit: int) -> int:
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f'limit must be an int >= 1, got {limit!r}')
    return min(limit, MAX_PAGE)


# -- statistics --------------------------------------------------------------------------
def parse_window(window: str) -> tuple[int, int]:
    """``'60s'``/``'60m'``/``'24h'``/``'10d'`` -> (bucket seconds, how many buckets); ValueError otherwise."""
    match = re.fullmatch(r'\s*(\d+)\s*([smhd])\s*', window or '')
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"a window is a number and a unit s, m, h or d (like 60s, 60m, 24h, 10d), got {window!r}")
    return WINDOW_UNITS[match.group(2)], int(match.group(1))


def queue_stats(queue: Optional[str] = None, window: str = '60m', now: Optional[float] = None,
                store: Optional[RunStore] = None) -> StatsSeries:
    """Runs per status and duration sums per bucket over ``window``, from the rollups (at most a few hundred rows).

    ``queue=None``: every queue together.
    """
    granularity, buckets = parse_window(window)
    now = time.time() if now is None else now
    since = now - granularity * buckets
    merged: dict[int, dict[str, Any]] = {}
    for row in _or_default(store).rollups(queue, granularity, since):
        bucket = merged.setdefault(row['bucket'], {'bucket': row['bucket'], 'counts': {}, 'duration_sum': 0.0,
                                                   'duration_max': 0.0})
        bucket['counts'][row['status']] = bucket['counts'].get(row['status'], 0) + row['count']
        bucket['duration_sum'] += row['duration_sum']
        bucket['duration_max'] = max(bucket['duration_max'], row['duration_max'])
    return StatsSeries(queue, granularity, since, [merged[b] for b in sorted(merged)])


# -- registry and live state -------------------------------------------------------------
def list_consumers(queue: Optional[str] = None, host: Optional[str] = None, include_gone: bool = True,
                   now: Optional[float] = None, store: Optional[RunStore] = None) -> list[dict[str, Any]]:
    """Registered consumers, each with ``alive`` (beat within STALE_AFTER_SECONDS and not stopped) and ``beat_age``."""
    now = time.time() if now is None else now
    found = []
    for info in _or_default(store).consumers():
        if (queue is not None and info.get('queue') != queue) or (host is not None and info.get('host') != host):
            continue
        age = now - (info.get('beat_time') or 0)
        info = {**info, 'beat_age': round(age, 3), 'alive': age <= STALE_AFTER_SECONDS and not info.get('stopped')}
        if include_gone or info['alive']:
            found.append(info)
    return sorted(found, key=lambda c: (c.get('queue') or '', c.get('host') or '', c.get('pid') or 0))


def queue_rate(queue: str, now: Optional[float] = None, store: Optional[RunStore] = None) -> float:
    """Runs per second of a queue over all its live consumers (their recent settle rates)."""
    return sum(c.get('rates', {}).get('settled', 0.0)
               for c in list_consumers(queue, include_gone=False, now=now, store=store))


def _ask_broker(queue: str, broker_kind: Union[BrokerEnum, str], question: str) -> object:
    """One of a queue's broker's own figures (``count``, ``count_delayed``, ``oldest_age``); None if it cannot say."""
    from fsdf.brokers import get_broker
    kind = BrokerEnum[broker_kind] if isinstance(broker_kind, str) else BrokerEnum(broker_kind)
    try:
        return getattr(get_broker(kind, queue), question)()
    except Exception:  # NotImplementedError, a broker that is away: no number rather than a wrong one
        return None


def waiting_messages(queue: str, broker_kind: Union[BrokerEnum, str]) -> Optional[int]:
    """Messages waiting in a queue's broker; None where the broker cannot count or is unreachable."""
    count = _ask_broker(queue, broker_kind, 'count')
    return count if isinstance(count, int) and count >= 0 else None


def delayed_messages(queue: str, broker_kind: Union[BrokerEnum, str]) -> Optional[int]:
    """Delayed messages a queue's broker holds, not yet waiting; None where it cannot tell or is away."""
    count = _ask_broker(queue, broker_kind, 'count_delayed')
    return count if isinstance(count, int) and count >= 0 else None


def oldest_message_age(queue: str, broker_kind: Union[BrokerEnum, str]) -> Optional[float]:
    """Seconds the oldest waiting message of a queue has waited; None where the broker cannot tell or is away."""
    age = _ask_broker(queue, broker_kind, 'oldest_age')
    return round(age, 3) if isinstance(age, (int, float)) else None


def list_queues(count_waiting: bool = True, now: Optional[float] = None,
                store: Optional[RunStore] = None) -> list[dict[str, Any]]:
    """Every registered queue: ``name, broker_kind, paused, consumers_alive, rate`` and, where the broker
    counts, ``waiting``, ``delayed`` (held until due, not yet waiting: Broker.count_delayed; None where the
    broker cannot tell), ``dead_letters`` (waiting in ``<queue>_dlq``), ``oldest_age`` (seconds the oldest
    waiting message has waited; None where the broker cannot tell) and ``seconds_left`` (waiting / rate; None
    when the rate is 0 or the queue is paused: a paused queue's last rate says nothing of when it empties)."""
    store = _or_default(store)
    consumers = list_consumers(include_gone=False, now=now, store=store)
    rows = []
    for queue in store.queues():
        live = [c for c in consumers if c.get('queue') == queue['name']]
        rate = sum(c.get('rates', {}).get('settled', 0.0) for c in live)
        row = {**queue, 'consumers_alive': len(live), 'rate': round(rate, 3), 'waiting': None, 'delayed': None,
               'dead_letters': None, 'oldest_age': None, 'seconds_left': None}
        if count_waiting and queue['broker_kind']:
            row['waiting'] = waiting_messages(queue['name'], queue['broker_kind'])
            row['delayed'] = delayed_messages(queue['name'], queue['broker_kind'])
            row['dead_letters'] = waiting_messages(f'{queue["name"]}_dlq', queue['broker_kind'])
            row['oldest_age'] = oldest_message_age(queue['name'], queue['broker_kind'])
            if row['waiting'] is not None and rate > 0 and not queue.get('paused'):
                row['seconds_left'] = round(row['waiting'] / rate, 1)
        rows.append(row)
    return rows


def pause_queue(name: str, store: Optional[RunStore] = None) -> None:
    """Pause a queue everywhere: its consumers fetch nothing within about 2 s (running calls finish)."""
    pause.set_paused(name, True, _or_default(store))


def resume_queue(name: str, store: Optional[RunStore] = None) -> None:
    """Resume a paused queue: its consumers fetch again within about 2 s."""
    pause.set_paused(name, False, _or_default(store))


def dropped_records() -> int:
    """Records this process dropped because the store could not keep up (since it started)."""
    from fsdf.records.writer import _writers
    return sum(writer.dropped for writer in list(_writers.values()))


# -- inside a tree (added for the dashboard) -----------------------------------------------
def tree_runs(root_task_id: str, status: Optional[str] = None, since: Optional[float] = None,
              until: Optional[float] = None, task_id: Optional[str] = None, search: Optional[str] = None,
              function: Optional[str] = None, host: Optional[str] = None, queue: Optional[str] = None,
              limit: int = DEFAULT_PAGE, cursor: Optional[str] = None, store: Optional[RunStore] = None,
              fields: Optional[tuple[str, ...]] = None) -> RunPage:
    """The records below a root (not the root itself) matching every filter given, newest first, paged
    (``fields``: only these fields of each)."""
    run_filter = RunFilter(root_task_id=root_task_id, status=status, since=since, until=until,
                           task_id=task_id or None, keyword=search or None, function=function, host=host,
                           queue=queue)
    records, next_cursor = _or_default(store).page_runs(run_filter, _page_size(limit), cursor, fields)
    return RunPage(records, next_cursor)


def ancestors(task_id: str, stop_at: Optional[str] = None, most: int = 100,
              store: Optional[RunStore] = None) -> list[str]:
    """The ids from the root (or ``stop_at``) down to ``task_id``'s parent, following recorded parents.

    Stops early where a parent has no record (expired, or its queue keeps none) or after ``most`` steps.
    """
    store = _or_default(store)
    path: list[str] = []
    record = store.get_run(task_id)
    while record is not None and record.get('parent_task_id') and len(path) < most and task_id != stop_at:
        task_id = record['parent_task_id']
        path.append(task_id)
        record = store.get_run(task_id)
    return path[::-1]
