"""The run store at scale: write rate, file size and query latencies over N records (default 1,000,000).

The records are written through the store's own write path (batches of 5,000, each one
transaction with its rollups and tree counts, as the writer thread does), in end-time order over
the last 10 days: 100 queues, 2 % failures, and 20 trees of 20,000 nodes each (a root with 4,000
children, 100 of which have about 160 children each), the rest single runs. Arguments hold a
common word (in about half the records) and, in 10 records, a rare one.

Then each query runs ``--repeat`` times (default 200, varying its parameters) and the table shows
p50 and p99 in milliseconds:

  page            a queue's newest 50 (a random queue each time)
  page 2          the next 50, through the first page's cursor
  failed page     a queue's newest 50 failures
  keyword rare    50 records whose arguments hold the rare term (10 exist)
  keyword common  the newest 50 holding the common term
  hour 5d ago    a queue's newest 50 ending within one hour five days back (since and until)
  failed 24h     the newest 50 failures of the last 24 hours, every queue
  stats 60m/24h   a queue's per-minute chart over 60 min, per-hour over 24 h (from the rollups)
  children        a page of 200 children of a root with 4,000 children, and the next page
  subtree counts  per-status counts of a 20,000-node tree

Targets: a page <= 5 ms, keyword search <= 50 ms, a children page <= 10 ms, p99 within 5x p50.
SQLite only for now (``--store`` takes a sqlite:/// or mongodb:// URL; default a temp file).

Usage: python bench/records_store.py [--n 1000000] [--repeat 200] [--store URL]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault('FSDF_CONFIG_FILE', '0')
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for path in (str(BENCH_DIR), str(REPO)):
    if path not in sys.path:
        sys.path.insert(0, path)

from benchlib import load_average, machine_description, temp_dir  # noqa: E402

QUEUES = [f'queue_{i:03d}' for i in range(100)]
TREES, TREE_SIZE, ROOT_CHILDREN, INNER_PARENTS = 20, 20_000, 4_000, 100
BATCH = 5_000
DAYS = 10
RARE, COMMON = 'zanzibar', 'apple'


def tree_nodes(tree: int) -> list[tuple[str, str, str]]:
    """(task id, parent id, root id) of one tree's nodes, root first."""
    root = f'tree{tree:02d}-root'
    nodes = [(root, '', root)]
    children = [f'tree{tree:02d}-c{i:05d}' for i in range(ROOT_CHILDREN)]
    nodes += [(child, root, root) for child in children]
    for i in range(TREE_SIZE - 1 - ROOT_CHILDREN):
        nodes.append((f'tree{tree:02d}-g{i:05d}', children[i % INNER_PARENTS], root))
    return nodes


def records(n: int, seed: int = 7) -> Any:
    """n records in end-time order, trees spread through them."""
    rng = random.Random(seed)
    tree_ids = [node for tree in range(TREES) for node in tree_nodes(tree)] if n >= TREES * TREE_SIZE * 2 else []
    tree_every = n // max(len(tree_ids), 1) if tree_ids else 0
    rare_at = set(rng.sample(range(n), 10))
    start = time.time() - DAYS * 86400
    step = DAYS * 86400 / n
    tree_index = 0
    for i in range(n):
        if tree_ids and i % tree_every == 0 and tree_index < len(tree_ids):
            task_id, parent, root = tree_ids[tree_index]
            tree_index += 1
        else:
            task_id, parent, root = f'{i:032x}', '', f'{i:032x}'
        failed = rng.random() < 0.02
        end = start + i * step
        word = RARE if i in rare_at else (COMMON if i % 2 else f'w{rng.randrange(10 ** 6)}')
        yield {
            'task_id': task_id, 'queue': QUEUES[i % 100], 'function': f'fn_{i % 100}',
            'status': 'failed' if failed else 'succeeded',
            'arguments': f'{{"user": {rng.randrange(10 ** 9)}, "word": "{word}"}}', 'result': str(i),
            'exception_type': 'ValueError' if failed else None,
            'exception_message': 'timed out talking to the database' if failed else None,
            'traceback': None, 'retries': 3 if failed else 0, 'publish_time': end - 0.02, 'start_time': end - 0.01,
            'end_time': end, 'duration': 0.01, 'queue_wait': 0.01, 'host': f'host{i % 4}', 'pid': 1000 + i % 8,
            'thread_id': 1, 'script': '/srv/app/worker.py', 'parent_task_id': parent or None, 'root_task_id': root,
            'expire_at': end + 30 * 86400,
        }


def write_all(store: Any, n: int) -> float:
    """Write n records in batches as the writer does; records per second."""
    from fsdf.records.model import rollups_of
    from fsdf.records.store import Batch
    began = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for number, record in enumerate(records(n), 1):
        batch.append(record)
        if len(batch) == BATCH or number == n:
            per_second: dict[tuple[str, str, int], list[float]] = {}
            for r in batch:
                row = per_second.setdefault((r['queue'], r['status'], int(r['end_time'])), [0, 0.0, 0.0])
                row[0] += 1
                row[1] += r['duration']
                row[2] = max(row[2], r['duration'])
            store.write(Batch(records=batch, rollups=rollups_of(per_second)))
            batch = []
            if number % 100_000 == 0:
                print(f'  {number:,} written, {number / (time.perf_counter() - began):,.0f}/s', file=sys.stderr)
    return n / (time.perf_counter() - began)


def timed(query: Callable[[int], Any], repeat: int) -> tuple[float, float]:
    """p50 and p99 of ``query(i)`` in ms."""
    times = []
    for i in range(repeat):
        began = time.perf_counter()
        query(i)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def queries_of(store: Any) -> dict[str, Callable[[int], Any]]:
    """The measured queries, each a function of the repetition number."""
    from fsdf.records import queries as q
    first_pages = {queue: q.list_runs(queue=queue, store=store) for queue in QUEUES[:10]}
    root = 'tree03-root'
    first_children = q.children(root, store=store)
    five_days_ago = time.time() - 5 * 86400
    return {
        'page': lambda i: q.list_runs(queue=QUEUES[(i * 37) % 100], store=store),
        'page 2': lambda i: q.list_runs(queue=QUEUES[i % 10], cursor=first_pages[QUEUES[i % 10]].next_cursor,
                                        store=store),
        'failed page': lambda i: q.list_runs(queue=QUEUES[(i * 37) % 100], status='failed', store=store),
        'keyword rare': lambda i: q.list_runs(search=RARE, store=store),
        'keyword common': lambda i: q.list_runs(search=COMMON, store=store),
        'hour 5d ago': lambda i: q.list_runs(queue=QUEUES[(i * 37) % 100], since=five_days_ago - i * 60,
                                             until=five_days_ago - i * 60 + 3600, store=store),
        'failed 24h': lambda i: q.list_runs(status='failed', since=time.time() - 86400, store=store),
        'stats 60m': lambda i: q.queue_stats(QUEUES[i % 100], '60m', store=store),
        'stats 24h': lambda i: q.queue_stats(QUEUES[i % 100], '24h', store=store),
        'children': lambda i: q.children(f'tree{i % TREES:02d}-root', store=store),
        'children page 2': lambda i: q.children(root, cursor=first_children.next_cursor, store=store),
        'subtree counts': lambda i: q.subtree_counts(f'tree{i % TREES:02d}-root', store=store),
    }


def main() -> None:
    """Write, measure, print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--n', type=int, default=1_000_000)
    parser.add_argument('--repeat', type=int, default=200)
    parser.add_argument('--store', default='')
    args = parser.parse_args()
    from fsdf.records.store import open_store
    folder = temp_dir('fsdf-bench-store-')
    url = args.store or f'sqlite:///{folder}/runs.sqlite'
    store = open_store(url)
    print(machine_description())
    rate = write_all(store, args.n)
    size = ''
    if url.startswith('sqlite:///'):
        store._db.execute('PRAGMA wal_checkpoint(TRUNCATE)')  # type: ignore[attr-defined]  # the size at rest
        size = f'; file {Path(url[len("sqlite:///"):]).stat().st_size / 1e6:,.0f} MB'
    print(f'\n{args.n:,} records written at {rate:,.0f} records/s{size}; load average {load_average()}\n')
    print('| query | p50 ms | p99 ms |\n|---|---|---|')
    for name, query in queries_of(store).items():
        query(0)  # warm the page cache once, as a running dashboard has
        p50, p99 = timed(query, args.repeat)
        print(f'| {name} | {p50:.2f} | {p99:.2f} |')
    print(f'\nload average at the end: {load_average()}')
    store.close()


if __name__ == '__main__':
    main()
