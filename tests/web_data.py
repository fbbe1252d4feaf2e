"""Records for the dashboard's tests and benchmark, written straight through a store's write path.

``tree_records`` builds one tree: a root, ``width`` children, and the rest spread as grandchildren
under the first ``inner`` children (so a node has more than one page of 200 children), with every
``fail_every``-th node failed. ``flat_records`` builds single runs over several queues.
"""
from __future__ import annotations

import time
from typing import Any, Iterator, Optional

from fsdf.records.model import rollups_of
from fsdf.records.store import Batch, RunStore


def record(task_id: str, queue: str, status: str, end: float, parent: Optional[str] = None,
           root: Optional[str] = None, arguments: str = '{"x": 1}', host: str = 'web-host') -> dict[str, Any]:
    failed = status == 'failed'
    return {'task_id': task_id, 'queue': queue, 'function': f'{queue}_fn', 'status': status, 'arguments': arguments,
            'result': None if failed else '2', 'exception_type': 'ValueError' if failed else None,
            'exception_message': f'bad value in {task_id}' if failed else None,
            'traceback': (f'Traceback (most recent call last):\n  File "job.py", line 3, in work\n'
                          f'ValueError: bad value in {task_id}\n') if failed else None,
            'retries': 0, 'publish_time': end - 0.02, 'start_time': end - 0.01, 'end_time': end, 'duration': 0.01,
            'queue_wait': 0.01, 'host': host, 'pid': 4242, 'thread_id': 7, 'script': '/srv/job.py',
            'parent_task_id': parent, 'root_task_id': root or task_id, 'expire_at': end + 86400 * 30}


def tree_records(root: str, size: int, queue: str = 'tree_q', width: int = 400, inner: int = 50,
                 fail_every: int = 97, now: Optional[float] = None) -> Iterator[dict[str, Any]]:
    now = time.time() if now is None else now
    children = [f'{root}-c{i:05d}' for i in range(width)]
    yield record(root, queue, 'succeeded', now - 100, None, root)
    for i, child in enumerate(children):
        yield record(child, queue, 'failed' if i % fail_every == 5 else 'succeeded', now - 90 + i * 1e-3, root, root)
    for i in range(size - 1 - width):
        status = 'failed' if i % fail_every == 11 else 'succeeded'
        yield record(f'{root}-g{i:06d}', queue, status, now - 50 + i * 1e-4, children[i % inner], root)


def flat_records(n: int, queues: int = 10, now: Optional[float] = None, span: float = 3600.0,
                 ) -> Iterator[dict[str, Any]]:
    now = time.time() if now is None else now
    for i in range(n):
        status = 'failed' if i % 50 == 7 else 'succeeded'
        word = 'apple' if i % 2 else 'pear'
        yield record(f'{i:032x}', f'flat_q{i % queues}', status, now - span + i * span / max(n, 1),
                     arguments=f'{{"n": {i}, "fruit": "{word}"}}', host=f'host{i % 3}')


def write_all(store: RunStore, records: Iterator[dict[str, Any]], batch: int = 5000,
              queues: Optional[dict[str, str]] = None) -> int:
    """Write records in batches with their rollups and tree counts; how many were written."""
    written, chunk = 0, []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= batch:
            written += _flush(store, chunk)
            chunk = []
    written += _flush(store, chunk)
    if queues:
        store.write(Batch(queues=queues))
    return written


def _flush(store: RunStore, chunk: list[dict[str, Any]]) -> int:
    if not chunk:
        return 0
    per_second: dict[tuple[str, str, int], list[float]] = {}
    for rec in chunk:
        row = per_second.setdefault((rec['queue'], rec['status'], int(rec['end_time'])), [0, 0.0, 0.0])
        row[0] += 1
        row[1] += rec['duration']
        row[2] = max(row[2], rec['duration'])
    store.write(Batch(records=chunk, rollups=rollups_of(per_second)))
    return len(chunk)
