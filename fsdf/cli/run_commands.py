"""``fsdf runs | run | tree | stats``: the run records and statistics, read through fsdf.records.queries.

Records' ``arguments`` and ``result`` are shown as stored: JSON text, cut at the store's limits (so
``--json`` keeps them as strings; a cut value is no longer valid JSON). Pages are newest first; a
page that has more ends with the ``--after CURSOR`` that shows the next.
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Any, Callable, Iterator, Optional

from fsdf.cli.common import (
    NOT_FOUND, OK, USAGE, CliError, Column, checked_queue, parse_time, print_json, print_table, show_seconds, show_time)

TREE_DEPTH = 3
"""Levels ``fsdf tree`` expands by default (each node: one page of its children)."""
TREE_CHILDREN = 20


def add_commands(commands: Any) -> None:
    """Register this group's subcommands."""
    runs = commands.add_parser('runs', help='run records, newest first, filtered and paged')
    runs.add_argument('--queue')
    runs.add_argument('--function', help='the function, named as its records show it')
    runs.add_argument('--status', help='succeeded, failed, dead_lettered, requeued, expired, filtered, malformed...')
    runs.add_argument('--since', help='ended at or after: ISO time or a span ago (10m, 2h, 3d)')
    runs.add_argument('--until', help='ended at or before: ISO time or a span ago')
    runs.add_argument('--task-id', help='task ids starting with this')
    runs.add_argument('--host')
    runs.add_argument('--search', help='a keyword in the arguments, result or exception')
    runs.add_argument('--limit', type=int, default=50, help='records per page (default 50, at most 1000)')
    runs.add_argument('--after', metavar='CURSOR', help='the next page: the cursor the previous page printed')
    _json(runs).set_defaults(handler=cmd_runs)
    run = commands.add_parser('run', help='the whole record of one task (a unique id prefix is enough)')
    run.add_argument('task_id')
    _json(run).set_defaults(handler=cmd_run)
    tree = commands.add_parser('tree', help='a task and the tasks it published, with per-status counts')
    tree.add_argument('task_id')
    tree.add_argument('--depth', type=int, default=TREE_DEPTH, help=f'levels to expand (default {TREE_DEPTH})')
    tree.add_argument('--limit', type=int, default=TREE_CHILDREN,
                      help=f'children shown per task (default {TREE_CHILDREN}); the rest are paged')
    tree.add_argument('--after', metavar='CURSOR', help='the next page of the top task\'s children')
    _json(tree).set_defaults(handler=cmd_tree)
    stats = commands.add_parser('stats', help='runs per status per bucket over a window, from the rollups')
    stats.add_argument('queue', nargs='?', help='the queue (default: every queue together)')
    stats.add_argument('--window', default='60m',
                       help='a number and its bucket unit: 60s, 60m (default), 24h, 10d')
    _json(stats).set_defaults(handler=cmd_stats)


def _json(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument('--json', action='store_true', help='print JSON for scripts instead of a table')
    return parser


def _positive(value: int, option: str) -> int:
    if value < 1:
        raise CliError(USAGE, f'{option} must be at least 1, got {value}')
    return value


@contextlib.contextmanager
def _bad_cursor_is_usage() -> Iterator[None]:
    """A cursor not printed by a page (mistyped, or from another store) is a usage error, not a crash."""
    try:
        yield
    except ValueError as exc:
        raise CliError(USAGE, f'--after is not a cursor this store printed ({exc})') from None


RUN_COLUMNS: list[Column] = [
    ('ended', lambda r: show_time(r.get('end_time'))), ('status', lambda r: r.get('status')),
    ('queue', lambda r: r.get('queue')), ('task id', lambda r: r.get('task_id')),
    ('took', lambda r: show_seconds(r.get('duration'))), ('host', lambda r: r.get('host')),
    ('arguments', lambda r: r.get('arguments')),
    ('error', lambda r: r.get('exception_type') and f"{r['exception_type']}: {r.get('exception_message') or ''}")]


def cmd_runs(args: argparse.Namespace) -> int:
    """``fsdf runs``: one page of records."""
    from fsdf.records.queries import list_runs
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    with _bad_cursor_is_usage():
        page = list_runs(queue=checked_queue(args.queue) if args.queue else None, function=args.function,
                         status=args.status, since=since, until=until, task_id=args.task_id, host=args.host,
                         search=args.search, limit=_positive(args.limit, '--limit'), cursor=args.after)
    if args.json:
        print_json({'records': page.records, 'next_cursor': page.next_cursor})
        return OK
    print_table(page.records, RUN_COLUMNS, empty='(no records match)')
    if page.next_cursor:
        print(f'more: add --after {page.next_cursor}')
    return OK


def find_run(task_id: str) -> dict[str, Any]:
    """The record of ``task_id``, or of the one task whose id starts with it; CliError(NOT_FOUND) otherwise."""
    from fsdf.records.queries import get_run, list_runs
    record = get_run(task_id)
    if record is not None:
        return record
    matches = list_runs(task_id=task_id, limit=2).records if task_id else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CliError(NOT_FOUND, f'more than one task id starts with {task_id!r}; give more of it')
    raise CliError(NOT_FOUND, f'no record of task {task_id!r} (it has not run yet, its record expired, '
                              f'or run records are off for its queue)')


def cmd_run(args: argparse.Namespace) -> int:
    """``fsdf run TASK_ID``: every field; the traceback last, whole."""
    record = find_run(args.task_id)
    if args.json:
        print_json(record)
        return OK
    times = {'publish_time', 'start_time', 'end_time', 'expire_at'}
    width = max(len(key) for key in record)
    for key, value in record.items():
        if key == 'traceback':
            continue
        shown = show_time(value) + f' ({value})' if key in times and value else value
        print(f'{key.ljust(width)}  {"-" if shown is None or shown == "" else shown}')
    if record.get('traceback'):
        print('\n' + record['traceback'].rstrip())
    return OK


def _node(record: dict[str, Any], depth: int, limit: int, cursor: Optional[str] = None) -> dict[str, Any]:
    """A task with its children's counts and, ``depth`` levels down, one page of its children each."""
    from fsdf.records.queries import children, subtree_counts
    counts = subtree_counts(record['task_id'])
    node: dict[str, Any] = {'record': record, 'children_counts': counts.get('children', {}),
            'descendants_counts': counts.get('descendants', {}), 'children': [], 'next_cursor': None}
    if depth > 0 and node['children_counts']:
        page = children(record['task_id'], limit=limit, cursor=cursor)
        node['children'] = [_node(child, depth - 1, limit) for child in page.records]
        node['next_cursor'] = page.next_cursor
    return node


def _counts(counts: dict[str, int]) -> str:
    return ', '.join(f'{status} {n}' for status, n in sorted(counts.items())) or 'none'


def _print_node(node: dict[str, Any], indent: str, top: bool) -> None:
    record = node['record']
    line = f"{record['task_id']}  {record.get('status')}  {record.get('queue')}  {show_seconds(record.get('duration'))}"
    if record.get('exception_type'):
        line += f"  {record['exception_type']}: {record.get('exception_message') or ''}"
    print(indent + line)
    if top and node['descendants_counts']:
        print(f'{indent}  whole tree: {_counts(node["descendants_counts"])}')
    if node['children_counts']:
        print(f'{indent}  children: {_counts(node["children_counts"])}')
    for child in node['children']:
        _print_node(child, indent + '    ', False)
    if node['next_cursor']:
        more = f"--after {node['next_cursor']}" if top else f"fsdf tree {record['task_id']}"
        print(f'{indent}    … more children: {more}')


def cmd_tree(args: argparse.Namespace) -> int:
    """``fsdf tree TASK_ID``: the task, its counts, and its children down ``--depth`` levels."""
    record = find_run(args.task_id)
    depth = args.depth if args.depth >= 0 else 0
    with _bad_cursor_is_usage():
        node = _node(record, depth, _positive(args.limit, '--limit'), args.after)
    if args.json:
        print_json(node)
    else:
        _print_node(node, '', True)
    return OK


def _count_of(status: str) -> Callable[[dict[str, Any]], int]:
    """A bucket's count of one status (0 when it had none)."""
    return lambda bucket: int(bucket['counts'].get(status, 0))


def cmd_stats(args: argparse.Namespace) -> int:
    """``fsdf stats [QUEUE] --window 60m``: one row per bucket that had runs, then the totals."""
    from fsdf.records.queries import queue_stats
    queue = checked_queue(args.queue) if args.queue else None
    try:
        series = queue_stats(queue, args.window)
    except ValueError as exc:
        raise CliError(USAGE, str(exc)) from None
    totals: dict[str, int] = {}
    for bucket in series.buckets:
        for status, n in bucket['counts'].items():
            totals[status] = totals.get(status, 0) + n
    if args.json:
        print_json({'queue': queue, 'window': args.window, 'granularity': series.granularity,
                    'since': series.since, 'buckets': series.buckets, 'totals': totals})
        return OK
    statuses = sorted(totals)
    columns: list[Column] = [('bucket', lambda b: show_time(b['bucket']))]
    columns += [(status, _count_of(status)) for status in statuses]
    columns += [('avg', lambda b: show_seconds(b['duration_sum'] / max(sum(b['counts'].values()), 1))),
                ('max', lambda b: show_seconds(b['duration_max']))]
    print_table(series.buckets, columns, empty=f'(no runs of {queue or "any queue"} in the last {args.window})')
    if totals:
        print(f'total over {args.window}: {_counts(totals)}')
    return OK
