"""How exactly a distributed ``qps`` holds when several processes share it through Redis.

Each worker process consumes its own in-process queue (LOCAL_PYTHON_QUEUE, so no broker limits
the rate) under one queue name, so all of them take their starts from the one Redis schedule
``fsdf:rate:<queue>``. Reported per target rate: the combined start rate against the target
(over the run minus its first second), each process's share, the Lua script calls per second,
and the most starts seen in any 0.1 s (the local pacer allows about qps * 0.2 there too: 0.1 s of
credit plus 0.1 s of schedule).

Usage: FSDF_REDIS_URL=redis://127.0.0.1:6379/0 python bench/distributed_qps.py [--qps 4 50 500 2000]
       [--processes 2] [--seconds 10]
"""
from __future__ import annotations

import argparse
import bisect
import logging
import multiprocessing
import os
import sys
import time
import uuid

os.environ.setdefault('FSDF_CONFIG_FILE', '0')

from fsdf import BrokerEnum, task_deco  # noqa: E402  (after the environment above)
from fsdf.redis_connection import describe_redis, redis_client  # noqa: E402


def worker(queue_name: str, qps: float, start_at: float, seconds: float, results: 'multiprocessing.Queue') -> None:
    """Consume ``queue_name`` at the shared ``qps`` from ``start_at`` for ``seconds``; put the start times."""
    starts: list[float] = []

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, qps=qps,
               is_using_distributed_frequency_control=True, log_level=logging.WARNING)
    def tick(i):
        starts.append(time.time())

    tick.push_many(range(int(qps * seconds) + 100))
    time.sleep(max(0.0, start_at - time.time()))
    tick.consume()
    time.sleep(seconds)
    tick.stop(grace=1)
    results.put(starts)


def measure(qps: float, processes: int, seconds: float) -> str:
    """One run of ``processes`` workers at ``qps``; a line with what was measured."""
    queue_name = f'bench_distributed_qps_{uuid.uuid4().hex[:8]}'
    client = redis_client()
    before = client.info('commandstats').get('cmdstat_evalsha', {}).get('calls', 0)
    start_at = time.time() + 2.0  # every worker imported and connected before the first start
    results: multiprocessing.Queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=worker, args=(queue_name, qps, start_at, seconds, results))
               for _ in range(processes)]
    for process in workers:
        process.start()
    per_process = [results.get(timeout=seconds + 60) for _ in workers]
    for process in workers:
        process.join()
    calls = client.info('commandstats').get('cmdstat_evalsha', {}).get('calls', 0) - before
    starts = sorted(t for process_starts in per_process for t in process_starts)
    window = [t for t in starts if start_at + 1.0 <= t <= start_at + seconds - 0.2]
    rate = (len(window) - 1) / (window[-1] - window[0])
    most_in_tenth = max(bisect.bisect_right(window, t + 0.1) - i for i, t in enumerate(window))
    return (f'qps={qps:g} x{processes} processes: measured {rate:.3f}/s ({(rate - qps) / qps * 100:+.2f}%), '
            f'shares {[len(s) for s in per_process]}, script calls {calls / seconds:.0f}/s, '
            f'most starts in 0.1 s {most_in_tenth} (qps x 0.1 = {qps * 0.1:g})')


def main() -> None:
    """Run each target rate once and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--qps', type=float, nargs='+', default=[4, 50, 500, 2000])
    parser.add_argument('--processes', type=int, default=2)
    parser.add_argument('--seconds', type=float, default=10.0)
    args = parser.parse_args()
    print(f'python {sys.version.split()[0]}, {os.cpu_count()} cpus, Redis {describe_redis()}')
    for qps in args.qps:
        print(measure(qps, args.processes, args.seconds), flush=True)


if __name__ == '__main__':
    main()
