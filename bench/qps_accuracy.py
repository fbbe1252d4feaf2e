"""How exactly ``qps`` holds: measured start rates against the target, and the pool's thread counts.

Scenarios (each 60 s by default, ``--seconds`` to change):
  switching  qps=7, calls take 0.01 s, then 3 s, then 0.8 s, then 0.01 s again (a quarter each):
             rate within 2% of 7/s; threads rise to about 7 x 3 = 21 and fall back after.
  slow       qps=0.2: one start every 5 s, each gap within 50 ms.
  fast       qps=1000 with trivial calls: within 3%.
  unthrottled  qps=0 throughput of trivial calls (compare with the figures before the governor).

Usage: python bench/qps_accuracy.py [switching slow fast unthrottled] [--seconds 60] [--broker LOCAL_PYTHON_QUEUE]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from typing import Callable

os.environ.setdefault('FSDF_CONFIG_FILE', '0')
os.environ.setdefault('FSDF_PERSIST_QUEUE_PATH', tempfile.mkdtemp(prefix='fsdf-bench-qps-'))

from fsdf import BrokerEnum, task_deco  # noqa: E402  (after the environment above)

SAMPLE_SECONDS = 0.05


class Run:
    """One consumer run: start times of calls and sampled thread counts, relative to its start."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.starts: list[float] = []
        self.threads: list[tuple[float, int]] = []


def run_at_rate(qps: float, seconds: float, duration_at: Callable[[float], float], kind: BrokerEnum,
                concurrent_num: int = 50) -> Run:
    """Consume for ``seconds`` at ``qps``; a call started at time t (s since start) takes ``duration_at(t)``."""
    run = Run()
    queue_name = f'bench_qps_{uuid.uuid4().hex[:8]}'

    @task_deco(queue_name, broker_kind=kind, qps=qps, concurrent_num=concurrent_num, log_level=logging.WARNING)
    def work(i):
        started = time.monotonic() - run.t0
        run.starts.append(started)
        duration = duration_at(started)
        if duration:
            time.sleep(duration)

    work.push_many(range(int(qps * seconds * 1.05) + 20))
    pool = work.consumer.pool
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            run.threads.append((time.monotonic() - run.t0, pool.thread_count))

    sampler = threading.Thread(target=sample, daemon=True)
    run.t0 = time.monotonic()
    sampler.start()
    work.consume()
    done.wait(seconds + 0.5)
    done.set()
    work.stop(grace=5)
    work.clear()
    return run


def rate_line(name: str, qps: float, starts: list[float], seconds: float, tolerance: float) -> str:
    """Measured rate over ``seconds`` from the first start, its error, and whether it is within tolerance."""
    first = starts[0]
    window = [s for s in starts if s < first + seconds]
    count = len(window)
    rate = (count - 1) / (window[-1] - first)  # intervals over their span: no edge effect
    error = (rate - qps) / qps * 100
    verdict = 'OK' if abs(error) <= tolerance else 'OUT OF TOLERANCE'
    return (f'{name}: target {qps}/s, measured {rate:.4f}/s ({count} starts in {seconds:.0f} s), '
            f'error {error:+.2f}% (tolerance ±{tolerance}%) {verdict}')


def threads_between(run: Run, start: float, end: float) -> tuple[int, int]:
    counts = [n for t, n in run.threads if start <= t < end]
    return (min(counts), max(counts)) if counts else (0, 0)


def switching(seconds: float, kind: BrokerEnum) -> None:
    quarter = seconds / 4
    phases = [(0.01, 0), (3.0, 1), (0.8, 2), (0.01, 3)]

    def duration_at(t: float) -> float:
        return phases[min(3, int(t // quarter))][0]

    run = run_at_rate(7, seconds, duration_at, kind)
    print(rate_line('switching', 7, run.starts, seconds, 2))
    for duration, index in phases:
        start, end = index * quarter, (index + 1) * quarter
        in_phase = [s for s in run.starts if start <= s < end]
        low, high = threads_between(run, start, end)
        print(f'  {start:5.1f}-{end:5.1f} s  calls {duration:>5} s: {len(in_phase) / quarter:.3f} starts/s, '
              f'threads min {low} max {high}')
    low, high = threads_between(run, 0, seconds)
    print(f'  threads over the run: min {low}, max {high}; at the end {run.threads[-1][1]}')


def slow(seconds: float, kind: BrokerEnum) -> None:
    run = run_at_rate(0.2, seconds, lambda t: 0.01, kind)
    print(rate_line('slow', 0.2, run.starts, seconds, 2))
    gaps = [b - a for a, b in zip(run.starts, run.starts[1:])]
    worst = max(abs(gap - 5) for gap in gaps)
    verdict = 'OK' if worst <= 0.05 else 'OUT OF TOLERANCE'
    print(f'  {len(gaps)} gaps: mean {statistics.mean(gaps):.4f} s, min {min(gaps):.4f} s, max {max(gaps):.4f} s, '
          f'worst deviation {worst * 1000:.1f} ms (tolerance 50 ms) {verdict}')


def fast(seconds: float, kind: BrokerEnum) -> None:
    run = run_at_rate(1000, seconds, lambda t: 0, kind)
    print(rate_line('fast', 1000, run.starts, seconds, 3))
    low, high = threads_between(run, 1, seconds)
    print(f'  threads min {low} max {high}')


def unthrottled(seconds: float, kind: BrokerEnum) -> None:
    count = 100_000 if kind == BrokerEnum.LOCAL_PYTHON_QUEUE else 10_000
    rates = []
    for _ in range(3):
        queue_name = f'bench_unthrottled_{uuid.uuid4().hex[:8]}'

        @task_deco(queue_name, broker_kind=kind, log_level=logging.WARNING)
        def work(i):
            return i

        work.push_many(range(count))
        began = time.perf_counter()
        settled = work.drain(timeout=300)
        rates.append(settled / (time.perf_counter() - began))
    print(f'unthrottled (qps=0) {kind.name}: {count} trivial calls, runs {", ".join(f"{r:.0f}" for r in rates)}/s, '
          f'best {max(rates):.0f}/s')


SCENARIOS = {'switching': switching, 'slow': slow, 'fast': fast, 'unthrottled': unthrottled}


def main() -> None:
    """Run the chosen scenarios (all by default) and print one block per scenario."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('scenarios', nargs='*', help=f'any of {", ".join(SCENARIOS)} (default: all)')
    parser.add_argument('--seconds', type=float, default=60.0)
    parser.add_argument('--broker', default='LOCAL_PYTHON_QUEUE', choices=[k.name for k in BrokerEnum])
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f'unknown scenarios {sorted(unknown)}; choose from {", ".join(SCENARIOS)}')
    kind = BrokerEnum[args.broker]
    print(f'python {sys.version.split()[0]}, {os.cpu_count()} cpus, broker {kind.name}')
    for name in args.scenarios or list(SCENARIOS):
        SCENARIOS[name](args.seconds, kind)
        sys.stdout.flush()


if __name__ == '__main__':
    main()
