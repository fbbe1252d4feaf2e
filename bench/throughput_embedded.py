"""Embedded brokers against hand-written loops on the same backend: publish and consume throughput.

For LOCAL_PYTHON_QUEUE and PERSISTQUEUE, N trivial ``add(a, b)`` tasks (default 20,000):

  fsdf       ``push`` one call each, ``push_many``, and ``consume()`` (THREADING, 50 threads) timed from
             the start to the N-th finished call.
  hand loop  the same on the bare backend: a ``queue.Queue`` of JSON bodies, or persist-queue's
             ``SQLiteAckQueue`` (JSON serializer, ack after the call); a dispatcher thread hands
             messages to a ``ThreadPoolExecutor(50)``, at most 50 in flight, like fsdf's bounded prefetch.
  plain objects  (LOCAL only) the hand loop without JSON: tuples on the queue, for scale.

``--compare-commit REV`` also runs the fsdf rows twice more per run, each in a fresh process: on the
fsdf source of REV (exported to a temp dir) and on this tree's, in alternating order, and ends with
the ratios this tree / REV (median of per-run ratios). The in-process fsdf rows always measure this
tree's fsdf, whatever the venv has installed.

Usage: python bench/throughput_embedded.py [--n 20000] [--runs 3] [--compare-commit 3f18a6b]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault('FSDF_CONFIG_FILE', '0')
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'bench'))

import persistqueue.serializers.json as pq_json  # noqa: E402
from persistqueue.exceptions import Empty as PersistQueueEmpty  # noqa: E402
from persistqueue import SQLiteAckQueue  # noqa: E402

from benchlib import (Countdown, Measurements, check_fsdf_source, dispatch, export_commit,  # noqa: E402
                      fsdf_environment, load_average, machine_description, put_fsdf_source_first, rate, short_rev,
                      temp_dir)

if 'FSDF_PERSIST_QUEUE_PATH' not in os.environ:  # a child is given its own by the driver
    os.environ['FSDF_PERSIST_QUEUE_PATH'] = temp_dir('fsdf-bench-embedded-')

FSDF_SOURCE = put_fsdf_source_first()
from fsdf import BrokerEnum, task_deco  # noqa: E402  (after the environment and sys.path above)

CONCURRENCY = 50
KINDS = (BrokerEnum.LOCAL_PYTHON_QUEUE, BrokerEnum.PERSISTQUEUE)
COLUMNS = ['publish, one call each', 'publish, batch', 'consume']
WAIT_SECONDS = 600


def add(a: int, b: int) -> int:
    """The trivial task."""
    return a + b


# -- fsdf ------------------------------------------------------------------------------------
def fsdf_run(kind: BrokerEnum, n: int) -> dict[str, float]:
    """Publish n calls one at a time, n in a batch, and consume n; tasks/s of each."""
    countdown = Countdown(n)
    tick = countdown.tick

    def counted_add(a, b):
        tick()
        return a + b

    task = task_deco(f'bench_embedded_{uuid.uuid4().hex[:8]}', broker_kind=kind, concurrent_num=CONCURRENCY,
                     log_level=logging.WARNING)(counted_add)
    push = task.push
    _ = task.publisher.broker  # connect before timing
    began = time.perf_counter()
    for i in range(n):
        push(i, i)
    one_call = rate(n, began, time.perf_counter())
    task.clear()
    began = time.perf_counter()
    task.push_many((i, i) for i in range(n))
    batch = rate(n, began, time.perf_counter())
    began = time.perf_counter()
    task.consume()
    consume = rate(n, began, countdown.wait(WAIT_SECONDS))
    task.stop(grace=5)
    return {'publish, one call each': one_call, 'publish, batch': batch, 'consume': consume}


# -- hand-written loops ----------------------------------------------------------------------
def consume_with(get: Callable[[], Any], run: Callable[[Any], None], countdown: Countdown) -> float:
    """Tasks/s of a dispatcher thread feeding a ThreadPoolExecutor from ``get``, timed to the last finished task."""
    def take() -> list:
        try:
            return [get()]
        except (queue.Empty, PersistQueueEmpty):
            return []

    began = time.perf_counter()
    dispatcher = threading.Thread(target=dispatch, args=(take, run, CONCURRENCY, countdown.done), daemon=True)
    dispatcher.start()
    ended = countdown.wait(WAIT_SECONDS)
    dispatcher.join()
    return rate(countdown.total, began, ended)


def local_loop_run(n: int, as_json: bool = True) -> dict[str, float]:
    """queue.Queue + ThreadPoolExecutor; JSON bodies like fsdf's, or plain tuples."""
    countdown = Countdown(n)
    tick = countdown.tick
    q: queue.Queue = queue.Queue()
    put = q.put
    dumps, loads = json.dumps, json.loads
    began = time.perf_counter()
    if as_json:
        for i in range(n):
            put(dumps({'a': i, 'b': i}))
    else:
        for i in range(n):
            put((i, i))
    publish = rate(n, began, time.perf_counter())

    def run_json(body: str) -> None:
        add(**loads(body))
        tick()

    def run_tuple(args: tuple) -> None:
        add(*args)
        tick()

    consume = consume_with(lambda: q.get(timeout=0.1), run_json if as_json else run_tuple, countdown)
    return {'publish, one call each': publish, 'consume': consume}


def persist_loop_run(n: int, folder: str) -> dict[str, float]:
    """persist-queue's SQLiteAckQueue (its defaults, JSON serializer) + ThreadPoolExecutor, ack after the call."""
    countdown = Countdown(n)
    tick = countdown.tick
    q = SQLiteAckQueue(os.path.join(folder, uuid.uuid4().hex[:8]), multithreading=True, serializer=pq_json,
                       auto_resume=False)
    began = time.perf_counter()
    for i in range(n):
        q.put({'a': i, 'b': i})
    publish = rate(n, began, time.perf_counter())

    def run(item: dict) -> None:
        add(**item['data'])
        q.ack(id=item['pqid'])
        tick()

    consume = consume_with(lambda: q.get(raw=True, timeout=0.1), run, countdown)
    q.close()
    return {'publish, one call each': publish, 'consume': consume}


# -- the comparison with another commit ------------------------------------------------------
def fsdf_in_subprocess(source: str, n: int) -> dict[str, dict[str, float]]:
    """One run of the fsdf rows on the fsdf package found in ``source``, in a fresh process.

    Returns {kind: {column: tasks/s}}."""
    env = {**os.environ, **fsdf_environment(source), 'FSDF_PERSIST_QUEUE_PATH': temp_dir('fsdf-bench-')}
    out = subprocess.run([sys.executable, __file__, '--fsdf-only', '--n', str(n)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fsdf_only(n: int) -> None:
    """Print one run of the fsdf rows as one JSON line (what ``fsdf_in_subprocess`` reads)."""
    check_fsdf_source(FSDF_SOURCE)
    print(json.dumps({kind.name: fsdf_run(kind, n) for kind in KINDS}))


def measure_run(results: Measurements, n: int, folder: str, old_source: str, old_label: str, run: int) -> None:
    """One run of every row, interleaved, so a burst of load hits them alike."""
    for kind in KINDS:
        loop = local_loop_run(n) if kind is BrokerEnum.LOCAL_PYTHON_QUEUE else persist_loop_run(n, folder)
        for column, value in loop.items():
            results.add(f'{kind.name} hand loop', column, value)
            if column == 'publish, one call each':  # the hand loop has no batch publish: its loop is its best
                results.add(f'{kind.name} hand loop', 'publish, batch', value)
        for column, value in fsdf_run(kind, n).items():
            results.add(f'{kind.name} fsdf', column, value)
    for column, value in local_loop_run(n, as_json=False).items():
        results.add('LOCAL_PYTHON_QUEUE hand loop, plain tuples', column, value)
    if old_source:  # both in fresh processes; which goes first alternates, so neither always has the warmer cache
        versions = [(old_label, old_source), ('fsdf now', FSDF_SOURCE)]
        for label, source in versions if run % 2 == 0 else versions[::-1]:
            for kind_name, columns in fsdf_in_subprocess(source, n).items():
                for column, value in columns.items():
                    results.add(f'{kind_name} {label}', column, value)


def print_tables(results: Measurements, old_label: str) -> None:
    """One table per backend against its hand loop, then (with an old commit) the now/then comparison."""
    for kind in KINDS:
        rows = [f'{kind.name} hand loop', f'{kind.name} fsdf']
        if kind is BrokerEnum.LOCAL_PYTHON_QUEUE:
            rows.append('LOCAL_PYTHON_QUEUE hand loop, plain tuples')
        print(results.table(rows, COLUMNS, {c: f'{kind.name} hand loop' for c in COLUMNS}))
        print()
    if not old_label:
        return
    print(f'fsdf now ({FSDF_SOURCE}) against {old_label}, each in a fresh process; (ratio) = now / then, same run\n')
    for kind in KINDS:
        rows = [f'{kind.name} {old_label}', f'{kind.name} fsdf now']
        print(results.table(rows, COLUMNS, {c: rows[0] for c in COLUMNS}))
        print()
    print(f'Ratios now / {old_label.removeprefix("fsdf at ")} (median of per-run ratios; > 1 is faster now)\n')
    print(results.ratio_table([(kind.name, f'{kind.name} fsdf now', f'{kind.name} {old_label}') for kind in KINDS],
                              COLUMNS))
    print()


def main() -> None:
    """Measure every row ``--runs`` times, interleaved, and print one table per backend."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--n', type=int, default=20_000)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--compare-commit', help='also run the fsdf rows on the fsdf source of this commit')
    parser.add_argument('--fsdf-only', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.fsdf_only:
        fsdf_only(args.n)
        return
    check_fsdf_source(FSDF_SOURCE)
    print(machine_description())
    print(f'fsdf from {FSDF_SOURCE}; {args.n:,} trivial tasks, {args.runs} runs, medians in tasks/s; '
          f'(ratio) = median of per-run ratios to the hand loop on the same backend\n')
    folder = temp_dir('fsdf-bench-handloop-')
    old_source = export_commit(args.compare_commit) if args.compare_commit else ''
    old_label = f'fsdf at {short_rev(args.compare_commit)}' if args.compare_commit else ''
    results = Measurements()
    for run in range(args.runs):
        measure_run(results, args.n, folder, old_source, old_label, run)
    print_tables(results, old_label)
    print(f'load average at the end: {load_average()}')


if __name__ == '__main__':
    main()
