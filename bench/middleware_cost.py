"""What a user middleware costs on the consume path: consume throughput with none, a no-op one, one hook.

Five configurations, each consuming N trivial tasks (default 20,000) published before the clock
starts; the rate is (N - 1) / (time of the N-th finished call - time of the first), so the consumer's
start-up (threads, connections) is outside the window and only the per-message path is measured:

  none          no user middleware (fsdf's own only, as a plain task has)
  no-op         ``class Nothing(fsdf.Middleware): pass`` -- overrides no hook, so it must cost nothing
                per message: its ratio to ``none`` should be 1.00 within noise
  after_settle  one middleware overriding only ``after_settle``, with a trivial body: the price of one hook
  records       ``run_records=True``: a run record per task in the run store (SQLite in a temp folder)
  bare          ``RUN_STATISTICS = False`` and no records: no records middleware at all (statistics are on
                by default, so ``none`` pays for them)

on three set-ups: LOCAL_PYTHON_QUEUE with THREADING (50 threads) and SINGLE_THREAD, and REDIS_ACK_ABLE
with THREADING (50 threads) on a redis-server this script starts (the tests' helper in
``tests/servers/redis_server.py``, in memory) and stops. Every measurement runs in a fresh process;
runs are interleaved and the order of the configurations rotates per run, so a burst of load or a
warm cache favours none of them. The table shows medians (msg/s) and the median of per-run ratios
to ``none``. The ``after_settle`` child checks its hook ran once per message, so a hook that is never
called cannot pass for a free one.

The fsdf measured is this tree's (or the one in ``$BENCH_FSDF_SOURCE``); it needs ``fsdf.Middleware``.

Usage: python bench/middleware_cost.py [--n 20000] [--runs 3]
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault('FSDF_CONFIG_FILE', '0')
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from benchlib import (FSDF_SOURCE_VARIABLE, Countdown, Measurements, check_fsdf_source,  # noqa: E402
                      fsdf_environment, load_average, machine_description, rate, temp_dir)

CONCURRENCY = 50
CONFIGS = ['none', 'no-op', 'after_settle', 'records', 'bare']
# (column label, broker kind name, concurrent mode name)
SETUPS = [
    ('LOCAL_PYTHON_QUEUE THREADING 50', 'LOCAL_PYTHON_QUEUE', 'THREADING'),
    ('LOCAL_PYTHON_QUEUE SINGLE_THREAD', 'LOCAL_PYTHON_QUEUE', 'SINGLE_THREAD'),
    ('REDIS_ACK_ABLE THREADING 50', 'REDIS_ACK_ABLE', 'THREADING'),
]
WAIT_SECONDS = 600
RESULT_MARK = 'BENCH_RESULT '


# == one measurement, in a fresh process ===================================================
def user_middleware(config: str) -> tuple[list[Any], Any]:
    """The ``middleware=`` list of a configuration, and the after_settle middleware (to check), if any."""
    import fsdf

    class Nothing(fsdf.Middleware):
        """Overrides no hook."""

    class CountSettled(fsdf.Middleware):
        """Overrides only after_settle, with a trivial body: count (next() on a count is atomic under the GIL)."""

        def __init__(self) -> None:
            self.settled = itertools.count()

        def after_settle(self, outcome: Any) -> None:
            next(self.settled)

    if config in ('none', 'records', 'bare'):
        return [], None
    if config == 'no-op':
        return [Nothing()], None
    counter = CountSettled()
    return [counter], counter


def child_main(kind_name: str, mode_name: str, config: str, n: int) -> None:
    """Publish n calls, consume them timed, and print the rate (and the after_settle calls seen) as JSON."""
    check_fsdf_source(os.environ[FSDF_SOURCE_VARIABLE])
    import fsdf
    if not hasattr(fsdf, 'Middleware'):
        raise SystemExit(f'the fsdf in {os.environ[FSDF_SOURCE_VARIABLE]} has no fsdf.Middleware: nothing to measure')
    from fsdf import BrokerEnum, ConcurrentModeEnum, task_deco
    countdown = Countdown(n)
    tick = countdown.tick

    def counted_add(a: int, b: int) -> int:
        tick()
        return a + b

    middleware, counter = user_middleware(config)
    options: dict[str, Any] = {'middleware': middleware} if middleware else {}
    if config == 'records':
        options['run_records'] = True
    elif config == 'bare':
        from fsdf.config import settings
        settings.RUN_STATISTICS = False
    task = task_deco(f'bench_middleware_{uuid.uuid4().hex[:8]}', broker_kind=BrokerEnum[kind_name],
                     concurrent_mode=ConcurrentModeEnum[mode_name], concurrent_num=CONCURRENCY,
                     log_level=logging.WARNING, **options)(counted_add)
    task.push_many((i, i) for i in range(n))
    task.consume()
    ended = countdown.wait(WAIT_SECONDS)  # first: first_at is set only once a call finished
    consumed = rate(n - 1, countdown.first_at, ended)
    task.stop(grace=10)
    task.clear()
    settled = next(counter.settled) if counter else None
    os.write(1, f'\n{RESULT_MARK}{json.dumps({"rate": consumed, "settled": settled})}\n'.encode())


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
        raise RuntimeError(f'{kind_name} {mode_name}: after_settle ran {found["settled"]} times for {n} messages')
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
    server = RedisServer(port=26391).start()
    try:
        import redis
        redis.Redis.from_url(server.url).config_set('appendonly', 'no')  # in memory, as field_redis.py
        env = {**os.environ, **fsdf_environment(source), 'FSDF_CONFIG_FILE': '0', 'FSDF_REDIS_URL': server.url,
               'FSDF_PERSIST_QUEUE_PATH': temp_dir('fsdf-bench-middleware-')}
        print(machine_description())
        print(f'fsdf from {source}; {n:,} trivial tasks consumed per measurement, each in a fresh process; '
              f'{runs} runs; medians in msg/s; (ratio) = median of per-run ratios to "none"\n')
        results = run_all(n, runs, env)
    finally:
        server.stop()
    columns = [setup[0] for setup in SETUPS]
    print(results.table(CONFIGS, columns, {column: 'none' for column in columns}))
    print('\nRatios to "none" (1.00 = free; < 1 = slower)\n')
    print(results.ratio_table([(config, config, 'none') for config in CONFIGS[1:]], columns))
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
