"""The dashboard's read routes: each a thin function from a request to the query function the CLI calls.

Every function here is synchronous (Starlette runs it in its thread pool, so a slow store read never
stalls the event loop) and returns JSON-able values; bad input raises
:class:`~fsdf.web.params.BadRequest`. Nothing is kept between requests: the store is the truth.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Optional

from starlette.requests import Request

from fsdf.records import queries
from fsdf.records.store import RunStore
from fsdf.secrets import known_secrets
from fsdf.web import params
from fsdf.web.params import BadRequest
from fsdf.web.present import Scrubber, clean_consumer, clean_queue, clean_record


NODE_FIELDS = ('task_id', 'status', 'function', 'duration', 'end_time', 'exception_type', 'parent_task_id')
"""What a children page shows of each node (the tree and run pages show its status, id, function, duration and
children's counts); the whole record is one click away. Not its queue, start time, retries or root: 800 values
fewer a page of 200 read from SQLite, at ~0.2 us each (the sqlite3 module lets go of the GIL for every column)."""
RUN_FIELDS = ('task_id', 'queue', 'function', 'status', 'arguments', 'result', 'exception_type', 'exception_message',
              'retries', 'end_time', 'duration', 'host', 'pid', 'script', 'parent_task_id', 'root_task_id')
"""What a page of runs (the runs page, a tree search) shows of each record: not its traceback, timeline (publish,
start, queue wait), thread or expiry, which its own page shows (``/api/runs/<task_id>``, one click away). Each
value read from SQLite costs ~0.2 us (the sqlite3 module lets go of the GIL for every column): the other six
were a fifth of a page's CPU, and a failed run's traceback is up to 8,000 characters."""


def store_of(request: Request) -> RunStore:
    """The store the app was made with, else the one at RESULT_STORE_URL (looked up once a request, not per query)."""
    store: Optional[RunStore] = request.app.state.store
    return queries.default_store() if store is None else store


def _page(page: queries.RunPage) -> dict[str, Any]:
    return {'records': Scrubber(known_secrets()).page(page.records), 'next_cursor': page.next_cursor}


def _queried(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a query function; a ValueError from it (a bad cursor or window) is the caller's input, a 400."""
    try:
        return call(*args, **kwargs)
    except ValueError as exc:
        if kwargs.get('cursor'):
            raise BadRequest(f'cursor is not a next_cursor this store gave ({exc})') from None
        raise BadRequest(str(exc)) from None


def overview(request: Request) -> dict[str, Any]:
    """Today's counts by status, consumers alive, runs in flight and records dropped where consumers report them."""
    store = store_of(request)
    now = time.time()
    midnight = time.mktime(time.localtime(now)[:3] + (0, 0, 0, 0, 0, -1))
    hours = max(1, math.ceil((now - midnight) / 3600))
    series = queries.queue_stats(None, f'{hours}h', now=now, store=store)
    today: dict[str, int] = {}
    for bucket in series.buckets:
        if bucket['bucket'] >= midnight - 3599:  # the hour that holds midnight counts (local midnight is on the hour)
            for status, count in bucket['counts'].items():
                today[status] = today.get(status, 0) + count
    alive = queries.list_consumers(include_gone=False, now=now, store=store)
    return {'today': today, 'done_today': today.get('succeeded', 0),
            'failed_today': sum(today.get(s, 0) for s in ('failed', 'dead_lettered', 'malformed')),
            'consumers_alive': len(alive), 'in_progress': _reported_sum(alive, 'in_flight'),
            'records_dropped': _reported_sum(alive, 'records_dropped'),
            'rate': round(sum(c.get('rates', {}).get('settled', 0.0) for c in alive), 3), 'time': now}


def _reported_sum(consumers: list[dict[str, Any]], counter: str) -> Optional[int]:
    """The sum of a counter over the consumers whose beats carry it; None when none does (shown as unknown)."""
    values = [c['counters'][counter] for c in consumers if counter in (c.get('counters') or {})]
    return sum(values) if values else None


def queues(request: Request) -> dict[str, Any]:
    """Every registered queue with its broker, waiting count, consumers, rate, time left and pause flag."""
    rows = queries.list_queues(store=store_of(request))
    return {'queues': [clean_queue(q) for q in rows]}


def queue(request: Request) -> dict[str, Any]:
    """One queue: its row of the queues page, its function (as its newest record names it), its consumers
    (with their options) and its newest failures."""
    name = request.path_params['name']
    store = store_of(request)
    row = next((q for q in queries.list_queues(store=store) if q['name'] == name), None)
    if row is None:
        raise LookupError(f'no queue {name!r} is registered')
    failures = _queried(queries.list_runs, queue=name, status='failed', limit=20, store=store)
    newest = queries.list_runs(queue=name, limit=1, store=store).records
    return {'queue': clean_queue(row), 'function': newest[0].get('function') if newest else None,
            'consumers': [clean_consumer(c) for c in queries.list_consumers(queue=name, store=store)],
            'failures': _page(failures)['records']}


def runs(request: Request) -> dict[str, Any]:
    """Records newest first, filtered by the query string, a keyset page at a time."""
    query = request.query_params
    filters = params.run_filters(query)
    page = _queried(queries.list_runs, **filters, limit=params.limit(query), cursor=params.cursor(query),
                    store=store_of(request), fields=RUN_FIELDS)
    return _page(page)


def run(request: Request) -> dict[str, Any]:
    """One task's whole record and its subtree counts."""
    task_id = request.path_params['task_id']
    record = queries.get_run(task_id, store=store_of(request))
    if record is None:
        raise LookupError(f'no record of task {task_id!r} (never ran, expired, or its queue keeps no records)')
    return {'record': clean_record(record), 'counts': queries.subtree_counts(task_id, store=store_of(request))}


def children(request: Request) -> dict[str, Any]:
    """A page (200 by default) of a task's children, newest first: each node's NODE_FIELDS and its children's counts.

    Nodes, not whole records: a page of 200 whole records is about 100 kB of arguments and results
    that a tree does not show (and costs the dashboard ~10 ms of CPU to scrub and encode).
    """
    query = request.query_params
    store = store_of(request)
    task_id = request.path_params['task_id']
    page = _queried(queries.children, task_id, limit=params.children_limit(query), cursor=params.cursor(query),
                    status=params.status(query), store=store, fields=NODE_FIELDS)
    counts = queries.children_counts([r['task_id'] for r in page.records if r['task_id']], store=store)
    for node in page.records:  # each holds NODE_FIELDS only
        node['counts'] = counts.get(node['task_id'], {})
    return {'records': page.records, 'next_cursor': page.next_cursor}


def tree(request: Request) -> dict[str, Any]:
    """A tree's root (record and counts), or with filters the tree's nodes that match them, paged.

    Filters: ``task_id`` (prefix), ``status``, ``since``/``until``, ``q`` (keyword). ``path=1`` adds to
    each match its ancestors' ids from the root down (so a page can open the way to it).
    """
    task_id = request.path_params['task_id']
    query = request.query_params
    store = store_of(request)
    filters = params.run_filters({k: v for k, v in query.items() if k != 'path'})
    root = queries.get_run(task_id, store=store)
    body: dict[str, Any] = {'root': clean_record(root) if root else None, 'task_id': task_id,
                            'counts': queries.subtree_counts(task_id, store=store)}
    if any(filters[k] is not None for k in ('status', 'since', 'until', 'task_id', 'search')):
        # The store indexes trees by their root: a search from an inner node searches its whole tree.
        root_id = (root or {}).get('root_task_id') or task_id
        page = _queried(queries.tree_runs, root_id, **_tree_filters(filters), limit=params.limit(query),
                        cursor=params.cursor(query), store=store, fields=RUN_FIELDS)
        body['matches'] = _page(page)
        if query.get('path') == '1':
            for record in body['matches']['records']:
                record['path'] = queries.ancestors(record['task_id'], root_id, store=store)
    return body


def _tree_filters(filters: dict[str, Any]) -> dict[str, Any]:
    return {k: filters[k] for k in ('status', 'since', 'until', 'task_id', 'search', 'function', 'host', 'queue')}


def consumers(request: Request) -> dict[str, Any]:
    """Registered consumers (``queue``/``host`` narrow them), each with its heartbeat age and ``alive``."""
    query = request.query_params
    found = queries.list_consumers(queue=params.text(query, 'queue'), host=params.text(query, 'host'),
                                   store=store_of(request))
    return {'consumers': [clean_consumer(c) for c in found]}


def stats(request: Request) -> dict[str, Any]:
    """Runs per status per bucket over ``window`` (``60s``, ``60m``, ``24h``, ``10d``); queue ``_all``: every queue."""
    name = request.path_params['queue']
    series = queries.queue_stats(None if name == '_all' else name, params.window(request.query_params),
                                 store=store_of(request))
    return dataclasses.asdict(series)
