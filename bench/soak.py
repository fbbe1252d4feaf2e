"""Soak (issue 18, not in CI): steady load on REDIS_ACK_ABLE for ``--minutes`` with consumer kills.

One redis-server (the tests' helper, on a free loopback port). The driver publishes ``--rate`` calls
a second, each ``work(x)`` with a new x, for the whole run. ``--workers`` consumer processes run them
(``--concurrency`` threads each, ``--task-ms`` per call); each call adds x to a Redis set and counts
the run, so ``runs - distinct`` are duplicates and ``published - distinct`` are losses.

Every ``--kill-every`` seconds one of the *killable* workers gets ``kill -9`` and a new one starts.
Worker 0 is never killed: its RSS, threads and open files (and the driver's) are sampled every
``--sample-every`` seconds; flat means the last sample is within ``--rss-slack`` (fraction) of the
first one taken after the warm-up (a tenth of the run), threads within 4 and open files within 4.
At the end publishing stops, the queue must drain, and the verdict prints: lost (must be 0),
duplicates (what the kills' lost acks re-ran: at-least-once), and the flatness of each sample.

Usage: python bench/soak.py [--minutes 30] [--kill-every 180] [--rate 200] [--workers 3]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
QUEUE = 'soak_queue'
DONE_KEY, RUNS_KEY = 'soak:done', 'soak:runs'


def run_worker(concurrency: int, task_ms: float) -> None:
    """A consumer process: runs ``work(x)`` until killed."""
    from fsdf import BrokerEnum, task_deco
    from fsdf.redis_connection import redis_client

    @task_deco(QUEUE, broker_kind=BrokerEnum.REDIS_ACK_ABLE, concurrent_num=concurrency, max_retry_times=0)
    def work(x: int) -> None:
        time.sleep(task_ms / 1000)
        with redis_client().pipeline(transaction=False) as pipe:
            pipe.sadd(DONE_KEY, x)
            pipe.incr(RUNS_KEY)
            pipe.execute()

    work.consume()


class Workers:
    """The consumer processes: index 0 is kept for sampling, the others take turns being killed."""

    def __init__(self, count: int, concurrency: int, task_ms: float, env: dict[str, str]) -> None:
        self._command = [sys.executable, __file__, '--worker', '--concurrency', str(concurrency),
                         '--task-ms', str(task_ms)]
        self._env = env
        self.processes = [self._start() for _ in range(count)]
        self.kills = 0

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(self._command, env=self._env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_one(self) -> None:
        """kill -9 the next killable worker and start its replacement."""
        if len(self.processes) < 2:
            return
        index = 1 + self.kills % (len(self.processes) - 1)
        os.kill(self.processes[index].pid, signal.SIGKILL)
        self.processes[index].wait()
        self.processes[index] = self._start()
        self.kills += 1

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def sample(pid: int) -> tuple[float, int, int]:
    """(RSS in MB, threads, open files) of one process."""
    import psutil
    process = psutil.Process(pid)
    return process.memory_info().rss / 2**20, process.num_threads(), process.num_fds()


def publish(stop: threading.Event, rate: float, published: list[int]) -> None:
    """Push ``rate`` calls a second in batches every 0.1 s until ``stop``; ``published[0]`` counts them."""
    from fsdf import BrokerEnum, get_publisher
    publisher = get_publisher(QUEUE, broker_kind=BrokerEnum.REDIS_ACK_ABLE)
    per_tick, began = max(1, round(rate / 10)), time.monotonic()
    tick = 0
    while not stop.is_set():
        start = published[0]
        publisher.publish_many([{'x': x} for x in range(start, start + per_tick)])
        published[0] += per_tick
        tick += 1
        stop.wait(max(0.0, began + tick / 10 - time.monotonic()))


def flat(first: tuple[float, int, int], last: tuple[float, int, int], rss_slack: float) -> bool:
    return (last[0] <= first[0] * (1 + rss_slack) and abs(last[1] - first[1]) <= 4
            and abs(last[2] - first[2]) <= 4)


def drained(client, timeout: float) -> bool:
    """Wait until the queue and every consumer's unacked hash are empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not client.llen(QUEUE) and not any(client.hlen(k) for k in client.scan_iter(f'fsdf:unacked:{QUEUE}:*')):
            return True
        time.sleep(0.5)
    return False


def soak(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO / 'tests'))
    from servers.redis_server import RedisServer
    server = RedisServer(port=args.redis_port).start()
    os.environ.update(FSDF_REDIS_URL=server.url, FSDF_CONFIG_FILE='0')
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    import redis
    client = redis.Redis.from_url(server.url, decode_responses=True)
    workers: Optional[Workers] = None
    stop, published = threading.Event(), [0]
    samples: dict[str, list[tuple[float, float, int, int]]] = {'worker 0': [], 'driver': []}
    try:
        workers = Workers(args.workers, args.concurrency, args.task_ms, env)
        publisher = threading.Thread(target=publish, args=(stop, args.rate, published), daemon=True)
        publisher.start()
        began = time.monotonic()
        end, next_kill, next_sample = began + args.minutes * 60, began + args.kill_every, began
        while (now := time.monotonic()) < end:
            if now >= next_kill:
                workers.kill_one()
                next_kill += args.kill_every
                print(f'{now - began:7.0f} s  kill -9 #{workers.kills}', flush=True)
            if now >= next_sample:
                if workers.processes[0].poll() is not None or not publisher.is_alive():
                    print('FAIL: worker 0 or the publisher died (see above)')
                    return 1
                for name, pid in (('worker 0', workers.processes[0].pid), ('driver', os.getpid())):
                    samples[name].append((now - began, *sample(pid)))
                row = samples['worker 0'][-1]
                print(f'{now - began:7.0f} s  published {published[0]:>8}  done {client.scard(DONE_KEY):>8}  '
                      f'worker 0: {row[1]:.1f} MB, {row[2]} threads, {row[3]} fds', flush=True)
                next_sample += args.sample_every
            time.sleep(min(1.0, max(0.0, min(next_kill, next_sample, end) - time.monotonic())))
        stop.set()
        publisher.join(10)
        emptied = drained(client, 120)
        return report(args, client, published[0], workers.kills, samples, emptied)
    finally:
        stop.set()
        if workers is not None:
            workers.stop()
        server.stop()


def report(args: argparse.Namespace, client, published: int, kills: int,
           samples: dict[str, list[tuple[float, float, int, int]]], emptied: bool) -> int:
    distinct, runs = client.scard(DONE_KEY), int(client.get(RUNS_KEY) or 0)
    lost = published - distinct
    print(f'\nsoak: {args.minutes} min, {published} published at {args.rate}/s, {kills} kill -9, '
          f'drained: {emptied}')
    print(f'lost: {lost}   duplicates: {runs - distinct} (runs {runs}, distinct {distinct})')
    ok = lost == 0 and emptied and published > 0
    for name, rows in samples.items():
        warm = [r for r in rows if r[0] >= args.minutes * 6] or rows  # after a tenth of the run
        first, last = warm[0][1:], rows[-1][1:]
        verdict = flat(first, last, args.rss_slack)  # type: ignore[arg-type]
        ok = ok and verdict
        print(f'{name:9}: RSS {first[0]:.1f} -> {last[0]:.1f} MB, threads {first[1]} -> {last[1]}, '
              f'open files {first[2]} -> {last[2]}: {"flat" if verdict else "GROWING"}')
    print('PASS' if ok else 'FAIL')
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--minutes', type=float, default=30)
    parser.add_argument('--kill-every', type=float, default=180, help='seconds between kill -9s')
    parser.add_argument('--rate', type=float, default=200, help='calls published per second')
    parser.add_argument('--workers', type=int, default=3)
    parser.add_argument('--concurrency', type=int, default=16)
    parser.add_argument('--task-ms', type=float, default=5)
    parser.add_argument('--sample-every', type=float, default=10)
    parser.add_argument('--rss-slack', type=float, default=0.2)
    parser.add_argument('--redis-port', type=int, default=16579)
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.concurrency, args.task_ms)
        return 0
    return soak(args)


if __name__ == '__main__':
    sys.exit(main())
