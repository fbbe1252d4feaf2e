"""What a run record holds, the statuses it may have, and the time buckets of the statistics.

A record is built in the writer thread from the :class:`~fsdf.controls.base.RunOutcome` a worker
handed over, so a worker pays one ``deque.append`` per run. Texts are cut so one odd call cannot
bloat the store: arguments to ``ARGUMENTS_MAX_CHARS``, a result to ``RESULT_MAX_CHARS``, an
exception message to ``EXCEPTION_MAX_CHARS`` and a traceback to ``TRACEBACK_MAX_CHARS``
characters (a cut value ends with ``…``, and arguments or results cut this way are kept as text,
no longer valid JSON).
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, Optional

from fsdf.hosts import HOST
from fsdf.message import _dumps

if TYPE_CHECKING:
    from fsdf.controls.base import RunOutcome

ARGUMENTS_MAX_CHARS = 10_000
RESULT_MAX_CHARS = 2_000
EXCEPTION_MAX_CHARS = 2_000
TRACEBACK_MAX_CHARS = 8_000

STATUSES = ('succeeded', 'failed', 'dead_lettered', 'requeued', 'retry_scheduled', 'delayed', 'expired',
            'filtered', 'malformed')
"""Statuses fsdf records; a user's middleware may add its own skip reasons.

``failed``: the function raised on its last attempt and the message went to ``<queue>_dlq``.
``dead_lettered``: a message dead-lettered for another reason. ``malformed``: it could not be
decoded (also dead-lettered). ``retry_scheduled``, ``requeued`` and ``delayed`` are replaced by
the record of the same task's next settle: a task id has one record, its latest.
"""

GRANULARITIES = ((1, 2 * 3600), (60, 3 * 86400), (3600, 35 * 86400), (86400, 400 * 86400))
"""(bucket seconds, how long buckets of that size are kept): per second for 2 h, per minute for 3 days,
per hour for 35 days, per day for 400 days."""

FIELDS = ('task_id', 'queue', 'function', 'status', 'arguments', 'result', 'exception_type', 'exception_message',
          'traceback', 'retries', 'publish_time', 'start_time', 'end_time', 'duration', 'queue_wait', 'host', 'pid',
          'thread_id', 'script', 'parent_task_id', 'root_task_id', 'expire_at')
"""A record's fields, in the order of :func:`build_row`'s tuple (and of the SQLite columns)."""

SCRIPT = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ''


def record_status(outcome: 'RunOutcome') -> str:
    """The recorded status of an outcome: a dead-letter caused by the function is ``failed``."""
    status = outcome.status
    if status == 'dead_lettered' and outcome.exception is not None:
        return 'failed'
    return status


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + '…'


def _json_or_text(value: Any, limit: int) -> Optional[str]:
    if value is None:
        return None
    try:
        text = _dumps(value)  # the messages' own compact encoder: a third of json.dumps's cost
    except (TypeError, ValueError, RecursionError):
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = repr(value)
    return text if len(text) <= limit else _cut(text, limit)


def build_row(queue: str, function: str, outcome: 'RunOutcome', thread_id: int, save_result: bool,
              expire_seconds: float) -> tuple[Any, ...]:
    """The record of one run as a tuple of plain JSON-able values in :data:`FIELDS` order.

    The writer thread calls this once per record while holding the GIL the workers need, so it
    avoids calls and checks the common case (a str task id, a float publish time, no exception) does
    not need, and makes a tuple (a tenth of a 22-key dict's cost); :func:`record_of` makes the dict.
    """
    extra = outcome.extra
    exc = outcome.exception
    publish_time = extra.get('publish_time')
    if publish_time.__class__ is not float:
        publish_time = float(publish_time) if isinstance(publish_time, (int, float)) else None
    started, finished = outcome.started or None, outcome.finished or None
    task_id = outcome.task_id if outcome.task_id.__class__ is str else None
    root = extra.get('root_task_id')
    parent = extra.get('parent_task_id')
    status = outcome.status
    if exc is None:
        exc_type = exc_message = trace = None
    else:
        status = 'failed' if status == 'dead_lettered' else status  # record_status, inlined
        exc_type, exc_message, trace = type(exc).__name__, _cut(str(exc), EXCEPTION_MAX_CHARS), _traceback_of(exc)
    return (
        task_id, queue, function, status,
        _json_or_text(outcome.arguments, ARGUMENTS_MAX_CHARS) if task_id else None,
        _json_or_text(outcome.result, RESULT_MAX_CHARS) if save_result else None,
        exc_type, exc_message, trace, outcome.retries, publish_time, started, finished,
        finished - started if started and finished else 0.0,
        round(started - publish_time, 6) if started and publish_time else None,
        HOST, os.getpid(), thread_id, SCRIPT,
        parent if parent.__class__ is str else None,
        root if root and root.__class__ is str else task_id,
        (finished or 0) + expire_seconds,
    )


def record_of(row: tuple[Any, ...]) -> dict[str, Any]:
    """A :func:`build_row` tuple as a dict keyed by :data:`FIELDS`."""
    return dict(zip(FIELDS, row))


def _traceback_of(exc: Optional[BaseException]) -> Optional[str]:
    if exc is None or exc.__traceback__ is None:
        return None
    return _cut(''.join(traceback.format_exception(type(exc), exc, exc.__traceback__)), TRACEBACK_MAX_CHARS)


def rollups_of(per_second: dict[tuple[str, str, int], list[float]]) -> dict[tuple[str, str, int, int], list[float]]:
    """Per-second sums ``(queue, status, second) -> [count, duration sum, duration max]`` spread over every
    granularity's bucket: ``(queue, status, granularity, bucket start) -> [...]``."""
    rollups: dict[tuple[str, str, int, int], list[float]] = {}
    for (queue, status, second), (n, total, most) in per_second.items():
        for gran, _ in GRANULARITIES:
            key = (queue, status, gran, second - second % gran)
            row = rollups.get(key)
            if row is None:
                rollups[key] = [n, total, most]
            else:
                row[0] += n
                row[1] += total
                row[2] = max(row[2], most)
    return rollups
