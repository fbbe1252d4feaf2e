"""Processes that add up (issue 19, part 1): ``multi_process_consume(1)`` against ``(2)`` on PERSISTQUEUE and
REDIS_ACK_ABLE, trivial tasks, THREADING with ``--threads`` (default 50, fsdf's default) threads a process
(``--mode SINGLE_THREAD``: another concurrency mode).

Each run starts ``python -c "...multi_process_consume(n)"`` (bench/modes_trivial_task.py) on an empty queue
and waits until its n processes have registered as consumers, so start-up is not timed. Then the whole load
appears at once: PERSISTQUEUE rows inserted in one transaction (the clock starts when it commits; idle
consumers poll, so the first take comes within 50 ms); REDIS_ACK_ABLE messages pushed to a side key and
RENAMEd onto the queue (the clock starts just before; blocked consumers wake at once). The clock stops when
every message is acked and deleted (PERSISTQUEUE: no row left; Redis: the queue, every consumer's unacked
hash and inbox empty), polled every 10 ms.

Besides msg/s, each run records CPU time over the timed window, as a share of one core: the consumer
processes together, the ``multi_process_consume`` parent, and redis-server (from /proc/<pid>/stat);
and the consumers' CPU per message, which other work on the machine does not change as it does msg/s.
``--compare-commit REV`` adds rows for each broker, 1 and 2 processes, running fsdf as it was at REV (``--compare-one``:
the one-process rows only), so the 2/1 ratio of REV is measured in the same run as this tree's. Cases run in
alternating order from run to run; tables show medians and per-run ratios (spread in brackets).

``--probe`` (bench/consumer_probe.py) adds, per message, the consumers' CPU by thread kind (fetch thread, pool
workers, ack flusher, run records, other) and, for PERSISTQUEUE, the time its threads waited for the
processes' write lock (the ``flock``) and held it, and the share of the timed window the lock was held.

Usage: python bench/processes.py [--tasks 20000,200000] [--repeat 3] [--threads 50] [--mode THREADING]
                                 [--brokers PERSISTQUEUE,REDIS_ACK_ABLE] [--compare-commit 71138ab] [--probe]
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import psutil
import consumer_probe
from benchlib import (REPO, Measurements, export_commit, fsdf_environment, load_average, machine_description,
                      short_rev, temp_dir)

BENCH_DIR = Path(__file__).resolve().parent
RUN_TIMEOUT = 600
POLL_SECONDS = 0.01


@dataclass(frozen=True)
class Case:
    """One measured configuration: a broker kind, a number of processes, and the fsdf source it runs."""

    broker: str
    processes: int
    label: str = 'this tree'
    source: str = str(REPO)

    @property
    def row(self) -> str:
        return f'{self.broker} {self.processes} proc ({self.label})'


@dataclass
class RunResult:
    """One run: elapsed seconds, and CPU seconds of the consumers, their parent and redis-server."""

    seconds: float
    consumers_cpu: float
    parent_cpu: float
    redis_cpu: float
    probe: dict[str, float]


class Target:
    """Where the messages go and how the bench knows they are all acked, for one broker kind."""

    def __init__(self, broker: str, folder: Path, redis_url: str) -> None:
        self.broker, self.folder, self.redis_url = broker, folder, redis_url
        self._redis: Any = None
        if broker == 'REDIS_ACK_ABLE':
            import redis
            self._redis = redis.Redis.from_url(redis_url, socket_timeout=60)

    def registered(self, queue: str) -> int:
        """How many consumers of ``queue`` have registered (-1: not even the queue's file exists yet)."""
        if self._redis is not None:
            return int(self._redis.zcard(f'fsdf:consumers:{queue}'))
        return self._sqlite(queue, 'SELECT COUNT(*) FROM fsdf_consumers')

    def publish_at_once(self, queue: str, bodies: list[str]) -> float:
        """Make every message appear in the queue at once; the perf_counter time from which it is there."""
        if self._redis is not None:
            side = f'{queue}:loading'
            for start in range(0, len(bodies), 10_000):
                self._redis.lpush(side, *bodies[start:start + 10_000])  # LPUSH: fsdf's publishing end
            began = time.perf_counter()
            self._redis.rename(side, queue)
            return began
        table = '"' + queue + '"'
        with sqlite3.connect(self.folder / f'{queue}.sqlite', timeout=60) as db:  # what another program may do
            now = time.time()
            db.executemany(f'INSERT INTO {table} (data, timestamp, status) VALUES (?, ?, 0)',
                           [(body, now) for body in bodies])
        return time.perf_counter()

    def all_acked(self, queue: str) -> bool:
        """No message left: waiting, taken or acked and not yet deleted."""
        if self._redis is not None:
            consumers = [c.decode() for c in self._redis.zrange(f'fsdf:consumers:{queue}', 0, -1)]
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.llen(queue)
                for consumer in consumers:
                    pipe.hlen(f'fsdf:unacked:{queue}:{consumer}')
                    pipe.llen(f'fsdf:inbox:{queue}:{consumer}')
                return not any(pipe.execute())
        return self._sqlite(queue, f'SELECT EXISTS (SELECT 1 FROM "{queue}")') == 0

    def _sqlite(self, queue: str, sql: str) -> int:
        try:
            with sqlite3.connect(self.folder / f'{queue}.sqlite', timeout=30) as db:
                return int(db.execute(sql).fetchone()[0])
        except sqlite3.OperationalError:  # the consumers have not created the file's tables yet
            return -1


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        times = process.cpu_times()
        return times.user + times.system
    except psutil.Error:
        return 0.0


def start_consumers(case: Case, queue: str, threads: int, folder: Path, redis_url: str,
                    probe_folder: str = '', mode: str = 'THREADING') -> subprocess.Popen:
    """``multi_process_consume(case.processes)`` of the trivial task, in a new process."""
    env = {'FSDF_BENCH_PROBE': probe_folder, **os.environ, **fsdf_environment(case.source), 'FSDF_CONFIG_FILE': '0',
           'FSDF_PERSIST_QUEUE_PATH': str(folder), 'FSDF_REDIS_URL': redis_url, 'FSDF_BENCH_QUEUE': queue,
           'FSDF_BENCH_CONCURRENCY': str(threads), 'FSDF_BENCH_BROKER': case.broker, 'FSDF_BENCH_MODE': mode}
    env['PYTHONPATH'] = f'{case.source}{os.pathsep}{BENCH_DIR}'
    return subprocess.Popen([sys.executable, '-c', 'import modes_trivial_task as m; '
                             f'm.trivial.multi_process_consume({case.processes})'],
                            env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_registered(target: Target, queue: str, parent: subprocess.Popen, count: int) -> None:
    deadline = time.monotonic() + 60
    while target.registered(queue) < count:
        if time.monotonic() > deadline or parent.poll() is not None:
            parent.kill()
            raise RuntimeError(f'{count} consumer processes did not start; their first errors: '
                               f'{parent.communicate()[1][:2500]}')
        time.sleep(0.05)


def probe_figures(probe_folder: str, consumers: list[psutil.Process]) -> dict[str, float]:
    """The consumers' probe figures, summed over processes: lock seconds and count, CPU seconds per thread kind."""
    total: dict[str, float] = {}
    for process in consumers:
        found = consumer_probe.read(probe_folder, process.pid)
        for key in ('lock_taken', 'lock_waited', 'lock_held', 'lock_held_cpu'):
            total[key] = total.get(key, 0.0) + found.get(key, 0.0)
        for kind, seconds in found.get('threads', {}).items():
            total[f'cpu {kind}'] = total.get(f'cpu {kind}', 0.0) + seconds
    return total


def run_once(case: Case, tasks: int, threads: int, target: Target, redis_pid: Optional[int],
             probe: bool = False, mode: str = 'THREADING') -> RunResult:
    """One timed run of ``case`` on ``tasks`` messages."""
    queue = f'bench_procs_{uuid.uuid4().hex[:8]}'
    probe_folder = str(target.folder / f'probe-{queue}') if probe else ''
    if probe:
        os.mkdir(probe_folder)
    parent = start_consumers(case, queue, threads, target.folder, target.redis_url, probe_folder, mode)
    try:
        wait_registered(target, queue, parent, case.processes)
        top = psutil.Process(parent.pid)
        consumers = [p for p in top.children() if 'resource_tracker' not in ' '.join(p.cmdline())]
        redis_process = psutil.Process(redis_pid) if redis_pid else None
        bodies = [json.dumps({'i': i}) for i in range(tasks)]
        cpu_before = [cpu_seconds(p) for p in (top, *consumers)] + [cpu_seconds(redis_process) if redis_process else 0]
        probe_before = probe_figures(probe_folder, consumers) if probe else {}
        began = target.publish_at_once(queue, bodies)
        while not target.all_acked(queue):
            if time.perf_counter() - began > RUN_TIMEOUT:
                raise RuntimeError(f'{case.row} did not finish {tasks} tasks in {RUN_TIMEOUT} s')
            time.sleep(POLL_SECONDS)
        elapsed = time.perf_counter() - began
        cpu_after = [cpu_seconds(p) for p in (top, *consumers)] + [cpu_seconds(redis_process) if redis_process else 0]
        used = [after - before for before, after in zip(cpu_before, cpu_after)]
        probed: dict[str, float] = {}
        if probe:
            time.sleep(consumer_probe.WRITE_EVERY_SECONDS * 3)  # the figures of the window's end
            probed = {key: value - probe_before.get(key, 0.0)
                      for key, value in probe_figures(probe_folder, consumers).items()}
        return RunResult(elapsed, sum(used[1:-1]), used[0], used[-1], probed)
    finally:
        parent.terminate()
        parent.wait(60)
        if target.broker == 'REDIS_ACK_ABLE':
            target._redis.delete(queue)


PROBE_KINDS = ('fetch', 'workers', 'acks', 'records', 'other')


def add_probe_figures(results: Measurements, case: Case, tasks: int, found: RunResult) -> None:
    """Per message µs of each thread kind's CPU and of lock waiting and holding; the share of time the lock was held."""
    if not found.probe:
        return
    for kind in PROBE_KINDS:
        results.add(case.row, f'{tasks:,} {kind} µs', found.probe.get(f'cpu {kind}', 0.0) / tasks * 1e6)
    if found.probe.get('lock_taken'):
        results.add(case.row, f'{tasks:,} lock wait µs', found.probe['lock_waited'] / tasks * 1e6)
        results.add(case.row, f'{tasks:,} lock held µs', found.probe['lock_held'] / tasks * 1e6)
        results.add(case.row, f'{tasks:,} held CPU µs', found.probe['lock_held_cpu'] / tasks * 1e6)
        results.add(case.row, f'{tasks:,} lock held share', found.probe['lock_held'] / found.seconds)
        results.add(case.row, f'{tasks:,} msgs a lock', tasks / found.probe['lock_taken'])


def plan(args: argparse.Namespace) -> list[Case]:
    """The cases of one run, in their first run's order."""
    cases = [Case(broker, n) for broker in args.brokers for n in (1, 2)]
    if args.compare_commit:
        rev = short_rev(args.compare_commit)
        source = export_commit(args.compare_commit)
        cases += [Case(broker, n, f'at {rev}', source) for broker in args.brokers
                  for n in ((1,) if args.compare_one else (1, 2))]
    return cases


def measure(args: argparse.Namespace, cases: list[Case], folder: Path, redis_url: str,
            redis_pid: Optional[int]) -> Measurements:
    """Every case ``--repeat`` times for each task count, in alternating order; msg/s and CPU shares."""
    results = Measurements()
    targets = {broker: Target(broker, folder, redis_url) for broker in args.brokers}
    for run in range(args.repeat):
        began = time.monotonic()
        for tasks in args.tasks:
            for case in (cases if run % 2 == 0 else cases[::-1]):
                found = run_once(case, tasks, args.threads, targets[case.broker], redis_pid, args.probe, args.mode)
                add_probe_figures(results, case, tasks, found)
                results.add(case.row, f'{tasks:,} msg/s', tasks / found.seconds)
                for what, seconds in (('consumers', found.consumers_cpu), ('parent', found.parent_cpu),
                                      ('redis-server', found.redis_cpu)):
                    results.add(case.row, f'{tasks:,} {what} CPU', seconds / found.seconds)
                results.add(case.row, f'{tasks:,} µs/msg', found.consumers_cpu / tasks * 1e6)
                if case.broker == 'REDIS_ACK_ABLE':
                    results.add(case.row, f'{tasks:,} redis µs/msg', found.redis_cpu / tasks * 1e6)
                print(f'  {case.row}, {tasks:,} tasks: {found.seconds:.2f} s', file=sys.stderr, flush=True)
        print(f'run {run + 1} of {args.repeat} took {time.monotonic() - began:.0f} s; load average {load_average()}',
              file=sys.stderr, flush=True)
    return results


def report(args: argparse.Namespace, cases: list[Case], results: Measurements) -> None:
    rows = [case.row for case in cases]
    rates = [f'{tasks:,} msg/s' for tasks in args.tasks]
    print(f'\nmsg/s, median of {args.repeat}\n')
    print(results.table(rows, rates, {}, with_ratio=False))
    pairs = []
    for broker in args.brokers:
        one, two = Case(broker, 1).row, Case(broker, 2).row
        pairs.append((f'{broker}: 2 processes / 1', two, one))
    compared = [case for case in cases if case.label != 'this tree']
    for case in compared:
        pairs.append((f'{case.broker} {case.processes} proc: this tree / {case.label}',
                      Case(case.broker, case.processes).row, case.row))
        if case.processes == 2:
            pairs.append((f'{case.broker} {case.label}: 2 processes / 1', case.row,
                          Case(case.broker, 1, case.label, case.source).row))
    print('\nratios, median of per-run ratios [lowest-highest]\n')
    print(results.ratio_table(pairs, rates))
    cpu_columns = [f'{tasks:,} {what} CPU' for tasks in args.tasks for what in ('consumers', 'parent', 'redis-server')]
    print('\nCPU over the timed window, in cores (1.00 = one core busy all the time), median\n')
    print(results.table(rows, cpu_columns, {}, digits=2, with_ratio=False))
    print('\nconsumer processes\' CPU per message, µs, median (the same in 1 and 2 processes: none spent waiting '
          'busily; a machine busy with other work lowers msg/s but not this)\n')
    print(results.table(rows, [f'{tasks:,} µs/msg' for tasks in args.tasks], {}, digits=1, with_ratio=False))
    redis_rows = [row for row in rows if row.startswith('REDIS_ACK_ABLE')]
    if redis_rows:
        print('\nredis-server\'s CPU per message, µs, median\n')
        print(results.table(redis_rows, [f'{tasks:,} redis µs/msg' for tasks in args.tasks], {}, digits=2,
                            with_ratio=False))
    if args.probe:
        report_probe(args, rows, results)


def report_probe(args: argparse.Namespace, rows: list[str], results: Measurements) -> None:
    """The --probe tables: CPU per message by thread kind; the process lock per message (PERSISTQUEUE)."""
    for tasks in args.tasks:
        print(f'\n{tasks:,} tasks: consumers\' CPU per message by thread, µs, median (summed over processes)\n')
        print(results.table(rows, [f'{tasks:,} {kind} µs' for kind in PROBE_KINDS], {}, digits=2, with_ratio=False))
    lock_rows = [row for row in rows if row.startswith('PERSISTQUEUE')]
    columns = [f'{tasks:,} {what}' for tasks in args.tasks
               for what in ('lock wait µs', 'lock held µs', 'held CPU µs', 'lock held share', 'msgs a lock')]
    print('\nthe processes\' write lock (flock): µs per message waited, held, and the holder\'s CPU while holding '
          '(summed over threads and processes), share of the window it was held, messages per hold; median\n')
    print(results.table(lock_rows, columns, {}, digits=2, with_ratio=False))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tasks', default='20000,200000', help='comma-separated task counts')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--threads', type=int, default=50, help='THREADING threads per process')
    parser.add_argument('--mode', default='THREADING', choices=['THREADING', 'SINGLE_THREAD'],
                        help='the consumers\' concurrency mode (the task is a plain function)')
    parser.add_argument('--brokers', default='PERSISTQUEUE,REDIS_ACK_ABLE')
    parser.add_argument('--compare-commit', default='', help='also run each broker, 1 and 2 processes, at this commit')
    parser.add_argument('--compare-one', action='store_true', help='at --compare-commit, the one-process row only')
    parser.add_argument('--probe', action='store_true', help='CPU per thread kind and the write lock\'s times')
    args = parser.parse_args()
    args.tasks = [int(n) for n in args.tasks.split(',')]
    args.brokers = args.brokers.split(',')
    unknown = set(args.brokers) - {'PERSISTQUEUE', 'REDIS_ACK_ABLE'}
    if unknown:
        parser.error(f'--brokers: unknown {sorted(unknown)}')
    return args


def main() -> None:
    args = parse_args()
    folder = Path(temp_dir('fsdf-bench-processes-'))
    server: Any = None
    redis_url, redis_pid = '', None
    if 'REDIS_ACK_ABLE' in args.brokers:
        sys.path.insert(0, str(REPO / 'tests'))
        from servers.redis_server import RedisServer
        import redis
        server = RedisServer(port=16479).start()
        redis.Redis.from_url(server.url).config_set('appendonly', 'no')  # memory only: no fsync stalls
        redis_url, redis_pid = server.url, server._process.pid
    print(machine_description())
    print(f'{args.threads} threads a process ({args.mode}); tasks {args.tasks}; {args.repeat} runs; '
          f'command: {" ".join(sys.argv)}')
    began = time.monotonic()
    cases = plan(args)
    try:
        results = measure(args, cases, folder, redis_url, redis_pid)
    finally:
        if server is not None:
            server.stop()
    report(args, cases, results)
    print(f'\ntook {time.monotonic() - began:.0f} s; load average at the end {load_average()}')


if __name__ == '__main__':
    main()
