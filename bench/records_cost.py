"""What run records cost on the consume path: consume throughput with records off, counters only, full records.

Three configurations, each consuming N trivial tasks (default 20,000) published before the clock
starts; the rate is (N - 1) / (time of the N-th finished call - time of the first), so start-up is
outside the window:

  off        ``RUN_STATISTICS=0`` and no records: no records middleware at all (the hot path of a plain task)
  counters   the default: per-queue rollup counters, registry, pause gate, minute line
  full       ``run_records=True``: a full record per run in SQLite (the default store), plus the counters

on LOCAL_PYTHON_QUEUE and REDIS_ACK_ABLE, THREADING with 50 threads (REDIS on a redis-server this
script starts and stops). Every measurement runs in a fresh process; runs are interleaved and the
order rotates per run. The ``full`` child checks that N records reached the store after its flush,
so a recorder that records nothing cannot pass for a cheap one. Targets: counters <= 3 % slower
than off, full <= 15 % slower.

Usage: python bench/records_cost.py [--n 20000] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault('FSDF_CONFIG_FILE', '0')
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from benchlib import (FSDF_SOURCE_VARIABLE, Countdown, Measurements, check_fsdf_source,  # noqa: E402
                      fsdf_environment, load_average, machine_description, rate, temp_dir)

CONCURRENCY = 50
CONFIGS = ['off', 'counters', 'full']
# (column label, broker kind name, concurrent mode name)
SETUPS = [
    ('LOCAL_PYTHON_QUEUE THREADING 50', 'LOCAL_PYTHON_QUEUE', 'THREADING'),
    ('REDIS_ACK_ABLE THREADING 50', 'REDIS_ACK_ABLE', 'THREADING'),
]
WAIT_SECONDS = 600
RESULT_MARK = 'BENCH_RESULT '


# == one measurement, in a fresh process ===================================================
def child_main(kind_name: str, mode_name: str, config: str, n: int) -> None:
    """Publish n calls, consume them timed, and print the rate (and the records stored, for full) as JSON."""
    check_fsdf_source(os.environ[FSDF_SOURCE_VARIABLE])
    if config == 'off':
        os.environ['FSDF_RUN_STATISTICS'] = '0'
    import fsdf
    from fsdf import BrokerEnum, ConcurrentModeEnum, task_deco
    countdown = Countdown(n)
    tick = countdown.tick

    def counted_add(a: int, b: int) -> int:
        tick()
        return a + b

    queue = f'bench_records_{uuid.uuid4().hex[:8]}'
    task = task_deco(queue, broker_kind=BrokerEnum[kind_name], concurrent_mode=ConcurrentModeEnum[mode_name],
                     concurrent_num=CONCURRENCY, log_level=logging.WARNING, run_records=config == 'full')(counted_add)
    task.push_many((i, i) for i in range(n))
    task.consume()
    ended = countdown.wait(WAIT_SECONDS)
    consumed = rate(n - 1, countdown.first_at, ended)
    task.stop(grace=10)
    task.clear()
    stored = None
    if config == 'full':
        from fsdf.records import queries
        from fsdf.records.writer import flush_all
        flush_all(60)
        db = queries.default_store()._db  # type: ignore[attr-defined]  # SQLite: count once, outside the clock
        stored = db.execute('SELECT count(*) FROM runs WHERE queue = ?', (queue,)).fetchone()[0]
    assert fsdf
    os.write(1, f'\n{RESULT_MARK}{json.dumps({"rate": consumed, "settled": stored})}\n'.encode())


# == the driver ============================================================================
def measure(kind_name: str, mode_name: str, config: str, n: int, env: dict[str, str]) -> float:
    """msg/s of one configuration on one set-up, in a fresh process."""
    argv = [sys.executable, str(Path(__file__).resolve()), '--child', kind_name, mode_name, config, '--n', str(n)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=WAIT_SECONDS + 60,
                          check=False)  # its stderr goes into the error below
    if done.returncode:
        raise RuntimeError(f'{kind_name} {mode_name} {config} failed: {done.stderr[-1500:]}')
    line = next(line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK))
    found = json.loads(line.removeprefix(RESULT_MARK))
    if found['settled'] is not None and found['settled'] != n:
        raise RuntimeError(f'{kind_name} {mode_name}: {found["settled"]} records stored for {n} messages')
    return found['rate']


def rotated(items: list[str], run: int) -> list[str]:
    """``items`` starting at position ``run``: each configuration goes first in turn."""
    shift = run % len(items)
    return items[shift:] + items[:shift]


def run_all(n: int, runs: int, env: dict[str, str]) -> Measurements:
    """Every set-up and configuration ``runs`` times, interleaved."""
    results = Measurements()
    for run in range(runs):
        began = time.monotonic()
        for column, kind_name, mode_name in SETUPS:
            for config in rotated(CONFIGS, run):
                results.add(config, column, measure(kind_name, mode_name, config, n, env))
        print(f'  run {run + 1} took {time.monotonic() - began:.0f} s; load average {load_average()}',
              file=sys.stderr)
    return results


def driver_main(n: int, runs: int) -> None:
    """Start redis-server, measure, print the table and the ratios, stop redis-server."""
    sys.path.insert(0, str(REPO / 'tests'))
    from servers.redis_server import RedisServer

    source = os.environ.get(FSDF_SOURCE_VARIABLE) or str(REPO)
    server = RedisServer(port=26392).start()
    try:
        import redis
        redis.Redis.from_url(server.url).config_set('appendonly', 'no')  # in memory, as field_redis.py
        env = {**os.environ, **fsdf_environment(source), 'FSDF_CONFIG_FILE': '0', 'FSDF_REDIS_URL': server.url,
               'FSDF_PERSIST_QUEUE_PATH': temp_dir('fsdf-bench-records-')}
        print(machine_description())
        print(f'fsdf from {source}; {n:,} trivial tasks consumed per measurement, each in a fresh process; '
              f'{runs} runs; medians in msg/s; (ratio) = median of per-run ratios to "off"\n')
        results = run_all(n, runs, env)
    finally:
        server.stop()
    columns = [setup[0] for setup in SETUPS]
    print(results.table(CONFIGS, columns, {column: 'off' for column in columns}))
    print('\nRatios to "off" (1.00 = free; < 1 = slower)\n')
    print(results.ratio_table([(config, config, 'off') for config in CONFIGS[1:]], columns))
    print(f'\nload average at the end: {load_average()}')


def main() -> None:
    """Drive the comparison, or (with --child KIND MODE CONFIG) be one measurement of it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--n', type=int, default=20_000)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--child', nargs=3, metavar=('KIND', 'MODE', 'CONFIG'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        child_main(*args.child, args.n)
    else:
        driver_main(args.n, args.runs)


if __name__ == '__main__':
    main()
