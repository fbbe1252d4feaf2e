"""``/metrics`` in the Prometheus text format, read from the store on each scrape (nothing kept between).

Labels are only ``queue`` and ``status``, never a task id or arguments, so the series stay few.

- ``fsdf_tasks_completed_total{queue,status}``: runs settled per status over the store's daily
  rollups (kept 400 days, so a counter resets only when its oldest day is pruned).
- ``fsdf_task_duration_seconds{queue}``: a histogram of those runs' durations with the one bucket the
  rollups allow (``+Inf``): its ``_sum`` and ``_count`` give the mean over any range.
- ``fsdf_consumers_alive{queue}``, ``fsdf_queue_messages{queue}`` (waiting, where the broker counts),
  ``fsdf_queue_delayed{queue}`` (held until due, where the broker can tell),
  ``fsdf_queue_dead_letters{queue}``, ``fsdf_queue_oldest_age_seconds{queue}`` (where the broker can tell),
  ``fsdf_queue_paused{queue}``, ``fsdf_queue_rate{queue}`` (runs per second over live consumers): gauges.
"""
from __future__ import annotations

from typing import Any, Optional

from fsdf.records import queries
from fsdf.records.store import RunStore

HISTORY_WINDOW = '400d'


def _label(value: str) -> str:
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def _totals(queue: str, store: Optional[RunStore]) -> tuple[dict[str, int], float]:
    """(runs per status, duration sum) of a queue over its daily rollups."""
    counts: dict[str, int] = {}
    duration = 0.0
    for bucket in queries.queue_stats(queue, HISTORY_WINDOW, store=store).buckets:
        for status, n in bucket['counts'].items():
            counts[status] = counts.get(status, 0) + n
        duration += bucket['duration_sum']
    return counts, duration


def render(store: Optional[RunStore]) -> str:
    """The whole exposition text."""
    lines: list[str] = []
    rows = queries.list_queues(store=store)

    def family(name: str, kind: str, help_text: str) -> None:
        lines.extend([f'# HELP {name} {help_text}', f'# TYPE {name} {kind}'])

    totals = {row['name']: _totals(row['name'], store) for row in rows}
    family('fsdf_tasks_completed_total', 'counter', 'Runs settled, by queue and status.')
    for name, (counts, _) in totals.items():
        for status, n in sorted(counts.items()):
            lines.append(f'fsdf_tasks_completed_total{{queue="{_label(name)}",status="{_label(status)}"}} {n}')
    family('fsdf_task_duration_seconds', 'histogram', 'Run durations in seconds, by queue.')
    for name, (counts, duration) in totals.items():
        label = f'queue="{_label(name)}"'
        total = sum(counts.values())
        lines += [f'fsdf_task_duration_seconds_bucket{{{label},le="+Inf"}} {total}',
                  f'fsdf_task_duration_seconds_sum{{{label}}} {duration:.6f}',
                  f'fsdf_task_duration_seconds_count{{{label}}} {total}']
    _gauges(rows, family, lines)
    return '\n'.join(lines) + '\n'


def _gauges(rows: list[dict[str, Any]], family: Any, lines: list[str]) -> None:
    for metric, field, help_text in (
            ('fsdf_consumers_alive', 'consumers_alive', 'Consumers whose heartbeat is fresh.'),
            ('fsdf_queue_messages', 'waiting', 'Messages waiting, where the broker can count them.'),
            ('fsdf_queue_delayed', 'delayed', 'Delayed messages not yet waiting, where the broker can tell.'),
            ('fsdf_queue_dead_letters', 'dead_letters', 'Messages in the dead-letter queue, where the broker counts.'),
            ('fsdf_queue_oldest_age_seconds', 'oldest_age',
             'Seconds the oldest waiting message has waited, where the broker can tell.'),
            ('fsdf_queue_paused', 'paused', '1 while the queue is paused.'),
            ('fsdf_queue_rate', 'rate', 'Runs per second over the live consumers.')):
        family(metric, 'gauge', help_text)
        for row in rows:
            value = row.get(field)
            if value is not None:
                lines.append(f'{metric}{{queue="{_label(row["name"])}"}} {float(value):g}')
