"""Why latency at c=64 on REDIS_ACK_ABLE is what it is (issue 19 part 4): start_latency.py's latency row, instrumented.

Each run is a fresh process per system (fsdf, raw, and fsdf@REV with ``--compare-commit``), in rotating
order, on one redis-server this script starts. The workload is start_latency's: 1,000 tasks sleeping 1-10 ms
(seed 1337), all published before the worker starts; elapsed = first task's start -> last task's end.
What each child records, relative to the first task's start:

  ratio        elapsed / ideal, as start_latency.py prints it
  cpu_ms       the process's CPU time in the window (all threads): near elapsed means CPU/GIL-bound
  thread CPU   per thread group, from /proc/self/task/*/schedstat (ns): workers, fetch/dispatch, fsdf's others
  t64_ms       when the last of the pool's threads ran its first task (the ramp-up of thread creation)
  overshoot    time.sleep's mean overshoot (us): how long a woken thread waits for the GIL
  idle_ms      fsdf only: thread-ms workers spent blocked on an empty pool queue after t64, while
               messages still waited in Redis (starved by the fetch loop)
  fetch phases fsdf only: the fetch loop's mean wait for free slots, take send, take reply, hand-over (us)

Usage: python bench/latency_probe.py [--runs 8] [--concurrency 64] [--compare-commit REV]
About 1 s per run of 2 systems on an idle 2-core machine (20 runs: ~20 s). Ratios to raw are per run, then the median.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
RESULT_MARK = 'PROBE_RESULT '


# == the child ==============================================================================
def thread_cpu_ms() -> dict[str, float]:
    """CPU ms of this process's threads so far, summed per group (pool workers together)."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    groups: dict[str, float] = {}
    for tid in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{tid}/schedstat') as stat:
                nanoseconds = int(stat.read().split()[0])
        except OSError:
            continue
        name = names.get(int(tid), 'other')
        name = 'workers' if re.match(r'(ThreadPoolExecutor|fsdf-probe_\w+-\d+$)', name) else name
        name = re.sub(r'probe_[0-9a-f]+', 'Q', name)
        groups[name] = groups.get(name, 0.0) + nanoseconds / 1e6
    return groups


def timed(owner: Any, name: str, log: list, label: str) -> None:
    """Wrap ``owner.name`` to log (label, start, end) in perf_counter seconds."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            log.append((label, began, time.perf_counter()))
    setattr(owner, name, wrapper)


def instrument_fsdf(phases: list, blocked: list) -> None:
    """Log the fetch loop's phases, and every pool thread's wait on an empty queue."""
    import fsdf.consumer as consumer
    from fsdf.brokers.redis_ack import RedisAckBroker
    from fsdf.concurrency.thread_pool import ShrinkableThreadPool
    timed(consumer.Consumer, '_wait_for_free_slots', phases, 'wait')
    timed(consumer.Consumer, '_hand_over', phases, 'hand-over')
    timed(RedisAckBroker, '_send_take', phases, 'send')
    timed(RedisAckBroker, '_receive_take', phases, 'reply')

    class LoggedQueue:
        """The pool's SimpleQueue, logging each get that found it empty."""

        def __init__(self, work: Any) -> None:
            self.work, self.put = work, work.put

        def get(self, timeout: Any = None) -> Any:
            if not self.work.empty():
                return self.work.get_nowait()
            began = time.perf_counter()
            try:
                return self.work.get(timeout=timeout)
            finally:
                blocked.append((began, time.perf_counter()))

    original_init = ShrinkableThreadPool.__init__

    def init(self: ShrinkableThreadPool, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._work = LoggedQueue(self._work)  # type: ignore[assignment]
    ShrinkableThreadPool.__init__ = init  # type: ignore[method-assign]


def child(system: str, concurrency: int) -> None:
    """Run the latency workload once; print what it recorded."""
    import start_latency
    from benchlib import Countdown
    from modes import ideal_seconds, latency_durations
    durations = latency_durations(start_latency.LATENCY_TASKS)
    countdown, runs, first = Countdown(len(durations)), [], []
    phases: list = []
    blocked: list = []

    def sleep(seconds: float) -> None:
        began = time.perf_counter()
        if not first:  # two threads may both get here: the first entry counts
            first.append((began, time.process_time(), thread_cpu_ms()))
        time.sleep(seconds)
        runs.append((began, time.perf_counter(), threading.get_ident(), seconds))
        countdown.tick()

    queue_name = f'probe_{os.urandom(4).hex()}'
    if system == 'fsdf':
        instrument_fsdf(phases, blocked)
        task = start_latency.fsdf_task('REDIS_ACK_ABLE', queue_name, concurrency, sleep)
        task.push_many([(seconds,) for seconds in durations])
        task.consume()
    else:
        client = start_latency.raw_client('REDIS_ACK_ABLE', queue_name, '')
        start_latency.raw_publish('REDIS_ACK_ABLE', client, queue_name, [{'seconds': s} for s in durations])
        start_latency.raw_consume('REDIS_ACK_ABLE', client, queue_name, concurrency, sleep, batched=True)
    ended = countdown.wait(start_latency.RUN_TIMEOUT)
    zero, cpu_before, threads_before = first[0]
    threads_cpu = {name: ms - threads_before.get(name, 0.0) for name, ms in thread_cpu_ms().items()}
    result = {'elapsed': ended - zero, 'ideal': ideal_seconds(durations, concurrency),
              'cpu': time.process_time() - cpu_before, 'threads_cpu': threads_cpu,
              'runs': [(s - zero, e - zero, thread, seconds) for s, e, thread, seconds in runs],
              'phases': [(label, s - zero, e - zero) for label, s, e in phases],
              'blocked': [(s - zero, e - zero) for s, e in blocked]}
    os.write(1, f'\n{RESULT_MARK}{json.dumps(result)}\n'.encode())
    os._exit(0)


# == the driver =============================================================================
def summary(found: dict) -> dict[str, float]:
    """One run's figures (see the module docstring)."""
    runs = sorted(found['runs'])
    firsts: dict[int, float] = {}
    for began, _, thread, _ in runs:
        firsts.setdefault(thread, began)
    t64, last_start = max(firsts.values()), runs[-1][0]
    idle = sum(end - max(began, t64) for began, end in found['blocked'] if end > t64 and began < last_start)
    row = {'ratio': found['elapsed'] / found['ideal'], 'elapsed_ms': found['elapsed'] * 1e3,
           'cpu_ms': found['cpu'] * 1e3, 't64_ms': t64 * 1e3,
           'overshoot_us': statistics.mean(end - began - seconds for began, end, _, seconds in runs) * 1e6}
    if found['phases']:
        row['idle_ms'] = idle * 1e3
        row['fetches'] = sum(1 for label, _, _ in found['phases'] if label == 'hand-over')
        for label in ('wait', 'send', 'reply', 'hand-over'):
            spans = [end - began for name, began, end in found['phases'] if name == label and t64 < began < last_start]
            row[f'{label}_us'] = statistics.mean(spans) * 1e6 if spans else 0.0
    row.update({f'cpu {name}': ms for name, ms in found['threads_cpu'].items() if ms >= 0.05})
    return row


def run_child(system: str, source: str, concurrency: int, redis_url: str) -> dict[str, float]:
    """One child of ``system`` (fsdf from ``source``) to its summary."""
    env = {**os.environ, 'FSDF_CONFIG_FILE': '0', 'FSDF_REDIS_URL': redis_url,
           'PYTHONPATH': f'{source}{os.pathsep}{BENCH_DIR}'}
    done = subprocess.run([sys.executable, __file__, '--child', system.split('@')[0], str(concurrency)], env=env,
                          capture_output=True, text=True, timeout=180, cwd=BENCH_DIR)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return summary(json.loads(line.removeprefix(RESULT_MARK)))
    raise RuntimeError(f'{system} failed (exit {done.returncode}): {done.stderr[-1500:]}')


def print_results(results: dict[str, list[dict[str, float]]], load: Callable[[], str]) -> None:
    """Medians per system, then each system's per-run ratios to raw."""
    for system, rows in results.items():
        names = sorted({name for row in rows for name in row})
        medians = {name: round(statistics.median([row.get(name, 0.0) for row in rows]), 3) for name in names}
        print(f'{system}: {medians}')
    for system, rows in results.items():
        if system != 'raw':
            ratios = [row['ratio'] / raw['ratio'] for row, raw in zip(rows, results['raw'])]
            print(f'{system} / raw per run: {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}')
    print(f'load average at the end: {load()}')


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == '--child':
        try:
            child(sys.argv[2], int(sys.argv[3]))
        finally:  # an error: end now, the worker threads would keep the process alive
            import traceback
            traceback.print_exc()
            os._exit(1)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=8)
    parser.add_argument('--concurrency', type=int, default=64)
    parser.add_argument('--compare-commit', default='', help="also run fsdf at this commit (rows 'fsdf@REV')")
    args = parser.parse_args()
    from benchlib import export_commit, load_average, short_rev
    sys.path.insert(0, str(BENCH_DIR.parent / 'tests'))
    import redis
    from servers.redis_server import RedisServer
    sources = {'raw': str(BENCH_DIR.parent), 'fsdf': str(BENCH_DIR.parent)}
    if args.compare_commit:
        sources[f'fsdf@{short_rev(args.compare_commit)}'] = export_commit(args.compare_commit)
    server = RedisServer(port=26591).start()
    try:
        redis.Redis.from_url(server.url).config_set('appendonly', 'no')
        print(f'load average at the start: {load_average()}')
        results: dict[str, list[dict[str, float]]] = {system: [] for system in sources}
        systems = list(sources)
        for run in range(args.runs):
            for system in systems[run % len(systems):] + systems[:run % len(systems)]:
                results[system].append(run_child(system, sources[system], args.concurrency, server.url))
        print_results(results, load_average)
    finally:
        server.stop()


if __name__ == '__main__':
    main()
