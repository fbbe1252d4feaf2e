"""The framework's own cost per task (issue 19 part 2): a no-op task, one process, a queue filled beforehand.

For each broker kind, every run (rows interleaved, each measurement its own process):

  fsdf THREADING x50   ``task.consume()`` with the default pool, the task returns its argument
  fsdf SINGLE_THREAD   the same, calls run in the fetch thread
  hand-written loop    the same client used directly: take a batch, ``json.loads`` each body, call the
                       function, settle (the loop's own way, named in the table); one thread

The queue is filled with fsdf's ``push_many`` before the clock starts (the same bodies for every row);
the time runs from the first task's start to the last message settled (fsdf: its settled counter,
polled every millisecond). ``µs/task`` is 1e6 / median rate: the whole cost of one task in one process,
broker client and server round trips included (the server runs on the same cores).

Kinds: REDIS_ACK_ABLE, LOCAL_PYTHON_QUEUE, PERSISTQUEUE, REDIS_STREAM, RABBITMQ_AMQPSTORM (the default
RabbitMQ kind), KAFKA; their servers start here from tests/servers/ (Kafka: Tansu, see brokers_raw.py).

``--profile KIND:MODE`` (MODE threading or single) runs one fsdf measurement under cProfile instead and
prints the top functions by own time.

``--compare-commit REV`` adds the two fsdf rows on the fsdf source of REV (rows in alternating order per run)
and ends with the ratios this tree / REV.

Usage: python bench/cost_per_task.py [KIND ...] [--repeat 3] [--scale 1.0] [--compare-commit REV]
                                     [--profile REDIS_ACK_ABLE:single]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from benchlib import (Measurements, check_fsdf_source, export_commit, fsdf_environment,  # noqa: E402
                      machine_description, put_fsdf_source_first, short_rev)
from brokers_raw import RawAmqpstorm, RawKafka, start_servers  # noqa: E402

ROOT = BENCH_DIR.parent
RESULT_PREFIX = 'RESULT '
CONCURRENCY = 50
RUN_TIMEOUT = 300
COUNTS = {'REDIS_ACK_ABLE': 200_000, 'LOCAL_PYTHON_QUEUE': 200_000, 'PERSISTQUEUE': 10_000,
          'REDIS_STREAM': 100_000, 'RABBITMQ_AMQPSTORM': 20_000, 'KAFKA': 100_000}
RAW_BATCH = 100  # messages a hand-written loop takes per round trip
RAW_HOW = {'REDIS_ACK_ABLE': 'RPOP 100, no ack (nothing held)', 'LOCAL_PYTHON_QUEUE': 'deque popleft under a Condition',
           'PERSISTQUEUE': 'persistqueue SQLiteAckQueue get + ack', 'REDIS_STREAM': 'XREADGROUP 100 + one XACK',
           'RABBITMQ_AMQPSTORM': 'basic.consume + ThreadPoolExecutor(50), prefetch 50',
           'KAFKA': 'consume 500 + async commit per batch'}
CPU_SECONDS = [0.0]  # this process's CPU time while consuming (fsdf rows): steadier than the rate under load
ROWS = {'threading': f'fsdf THREADING x{CONCURRENCY}', 'single': 'fsdf SINGLE_THREAD', 'raw': 'hand-written loop'}


class Done:
    """Counts settled tasks from any thread; the perf_counter time of the first start and of the last settle."""

    def __init__(self, total: int) -> None:
        self.total, self.count, self.first, self.last = total, 0, 0.0, 0.0
        self.lock = threading.Lock()
        self.done = threading.Event()

    def started(self) -> None:
        if not self.first:
            self.first = time.perf_counter()

    def tick(self, settled: int = 1) -> None:
        with self.lock:
            self.count += settled
            if self.count >= self.total and not self.done.is_set():
                self.last = time.perf_counter()
                self.done.set()

    def seconds(self) -> float:
        if not self.done.wait(RUN_TIMEOUT):
            raise TimeoutError(f'only {self.count} of {self.total} settled')
        return self.last - self.first


# -- hand-written loops (one thread; those of brokers_raw.py for RabbitMQ and Kafka) ---------------------
def raw_redis_list(queue: str, done: Done, work: Callable[[dict], Any]) -> float:
    import redis
    client = redis.Redis.from_url(os.environ['FSDF_REDIS_URL'])
    while not done.done.is_set():
        bodies = client.rpop(queue, RAW_BATCH) or []
        for body in bodies:
            done.started()
            work(json.loads(body))
        done.tick(len(bodies))
    return done.last - done.first


def raw_redis_stream(queue: str, done: Done, work: Callable[[dict], Any]) -> float:
    import redis
    client = redis.Redis.from_url(os.environ['FSDF_REDIS_URL'])
    group = f'raw-{uuid.uuid4().hex[:6]}'
    client.xgroup_create(queue, group, id='0', mkstream=True)
    while not done.done.is_set():
        reply = client.xreadgroup(group, 'c1', {queue: '>'}, count=RAW_BATCH, block=100) or []
        ids = []
        for _, entries in reply:
            for entry_id, fields in entries:
                done.started()
                work(json.loads(next(iter(fields.values()))))
                ids.append(entry_id)
        if ids:
            client.xack(queue, group, *ids)
            done.tick(len(ids))
    return done.last - done.first


def raw_local(bodies: list[str], done: Done, work: Callable[[dict], Any]) -> float:
    from collections import deque
    items, ready = deque(bodies), threading.Condition(threading.Lock())
    while not done.done.is_set():
        with ready:
            batch = [items.popleft() for _ in range(min(RAW_BATCH, len(items)))]
        for body in batch:
            done.started()
            work(json.loads(body))
        done.tick(len(batch))
    return done.last - done.first


def raw_persist(queue: str, done: Done, work: Callable[[dict], Any]) -> float:
    ackq = persist_queue(queue)
    while not done.done.is_set():
        item = ackq.get(raw=True, block=True, timeout=1)
        done.started()
        work(json.loads(item['data']))  # the body as fsdf stores it: JSON text (a JSON string in the table)
        ackq.ack(id=item['pqid'])
        done.tick()
    return done.last - done.first


# -- one measurement per process -----------------------------------------------------------------------
def noop_task(kind: str, queue: str, mode: str, done: Done):
    from fsdf import BrokerEnum, ConcurrentModeEnum, task_deco

    def work(i):
        done.started()
        return i

    concurrent_mode = ConcurrentModeEnum.SINGLE_THREAD if mode == 'single' else ConcurrentModeEnum.THREADING
    return task_deco(queue, broker_kind=BrokerEnum[kind], concurrent_mode=concurrent_mode,
                     concurrent_num=CONCURRENCY, log_level=logging.WARNING)(work)


def fill(kind: str, queue: str, count: int) -> Any:
    """Publish ``count`` calls with fsdf (untimed); the task object (whose consumer a fsdf row runs)."""
    task = noop_task(kind, queue, 'threading', Done(count))
    for start in range(0, count, 10_000):
        task.push_many(range(start, min(count, start + 10_000)))
    return task


def run_fsdf(kind: str, queue: str, mode: str, count: int) -> float:
    done = Done(count)
    task = noop_task(kind, queue, mode, done)
    counters = task.consumer.counters
    cpu = time.process_time()
    task.consume()
    deadline = time.monotonic() + RUN_TIMEOUT
    while counters.settled < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f'only {counters.settled} of {count} settled')
        time.sleep(0.001)
    seconds = time.perf_counter() - done.first
    CPU_SECONDS[0] = time.process_time() - cpu
    task.stop(grace=5)
    return seconds


def run_raw(kind: str, queue: str, count: int, bodies: list[str]) -> float:
    done = Done(count)
    work = lambda message: message['i']  # noqa: E731  (the no-op task)
    if kind == 'REDIS_ACK_ABLE':
        return raw_redis_list(queue, done, work)
    if kind == 'REDIS_STREAM':
        return raw_redis_stream(queue, done, work)
    if kind == 'LOCAL_PYTHON_QUEUE':
        return raw_local(bodies, done, work)
    if kind == 'PERSISTQUEUE':
        return raw_persist(queue, done, work)
    from brokers_raw import Done as RawDone
    raw_done = RawDone(count)
    if kind == 'KAFKA':
        return RawKafka(os.environ['FSDF_KAFKA_BOOTSTRAP_SERVERS'], queue).consume(raw_done, work)
    return RawAmqpstorm(os.environ['FSDF_RABBITMQ_URL'], queue).consume(raw_done, work)


def raw_fill(kind: str, queue: str, count: int) -> list[str]:
    """Fill the queue the raw loop reads with fsdf's own bodies; the bodies (LOCAL_PYTHON_QUEUE keeps them)."""
    from fsdf import message
    bodies = [message.encode({'i': i}, {'task_id': uuid.uuid4().hex, 'publish_time': time.time(),
                                        'publish_time_format': ''}) for i in range(count)]
    if kind in ('REDIS_ACK_ABLE', 'LOCAL_PYTHON_QUEUE', 'RABBITMQ_AMQPSTORM', 'KAFKA'):
        if kind != 'LOCAL_PYTHON_QUEUE':
            fill(kind, queue, count)  # fsdf declares the queue / topic as the raw loop expects
        return bodies
    if kind == 'REDIS_STREAM':
        import redis
        client = redis.Redis.from_url(os.environ['FSDF_REDIS_URL'])
        with client.pipeline(transaction=False) as pipe:
            for body in bodies:
                pipe.xadd(queue, {'body': body})
            pipe.execute()
        return bodies
    ackq = persist_queue(queue)
    for body in bodies:
        ackq.put(body)
    return bodies


def persist_queue(queue: str) -> Any:
    """persist-queue's SQLiteAckQueue with its JSON serializer (its defaults otherwise), for the hand-written loop."""
    from persistqueue import SQLiteAckQueue
    from persistqueue.serializers import json as pq_json
    return SQLiteAckQueue(os.path.join(os.environ['FSDF_PERSIST_QUEUE_PATH'], f'raw-{queue}'), multithreading=True,
                          serializer=pq_json, auto_resume=False)


def child(system: str, kind: str, queue: str, count: int, profile: bool = False) -> float:
    """One measurement (system: threading, single or raw); seconds."""
    check_fsdf_source(os.environ.get('BENCH_FSDF_SOURCE') or str(ROOT))
    if system == 'raw':
        bodies = raw_fill(kind, queue, count)
        return run_raw(kind, queue, count, bodies)
    fill(kind, queue, count)
    if not profile:
        return run_fsdf(kind, queue, system, count)
    import cProfile
    import pstats
    profiler = cProfile.Profile()
    profiler.enable()  # threads started from here on are not profiled: SINGLE_THREAD's fetch thread is
    threading.setprofile(lambda *a: None)
    try:
        import fsdf.consumer
        original = fsdf.consumer.Consumer._fetch_loop

        def profiled(self: Any) -> None:
            inner = cProfile.Profile()
            inner.runcall(original, self)
            pstats.Stats(inner).sort_stats('tottime').print_stats(30)
        fsdf.consumer.Consumer._fetch_loop = profiled  # type: ignore[method-assign]
        return run_fsdf(kind, queue, system, count)
    finally:
        profiler.disable()


def run_child(system: str, kind: str, queue: str, count: int, source: str = str(ROOT)) -> float:
    argv = [sys.executable, str(Path(__file__).resolve()), '--child', system, kind, queue, str(count)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT + 120, cwd=ROOT,
                          env={**os.environ, **fsdf_environment(source)})
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])['seconds']
    raise RuntimeError(f'{system} {kind} failed (exit {done.returncode}): {done.stderr[-2000:]}')


def measure(kinds: list[str], repeat: int, scale: float, compare: Optional[str]) -> str:
    """Run every row ``repeat`` times (interleaved); the Markdown table, and the ratios to ``compare`` if given."""
    results = Measurements()
    systems = [(system, ROWS[system], str(ROOT)) for system in ROWS]
    if compare:
        source, label = export_commit(compare), short_rev(compare)
        systems[2:2] = [(system, f'fsdf@{label} {ROWS[system][5:]}', source) for system in ('threading', 'single')]
    for round_number in range(repeat):
        for kind in kinds:
            count = max(1000, int(COUNTS[kind] * scale))
            order = systems if round_number % 2 == 0 else systems[::-1]  # alternating: a drift hits both alike
            for system, row, source in order:
                queue = f'cost_{system}_{uuid.uuid4().hex[:8]}'
                try:
                    results.add(row, kind, count / run_child(system, kind, queue, count, source))
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    print(f'{kind} {row}: {exc}', file=sys.stderr)
    table = rate_table(results, kinds, scale)
    if compare:
        pairs = [(f'{ROWS[system]} / {row}', ROWS[system], row) for system, row, source in systems
                 if source != str(ROOT)]
        table += f'\n\nThis tree / {compare} (median of per-run ratios, [lowest–highest]):\n\n'
        table += results.ratio_table(pairs, kinds)
    return table


def rate_table(results: Measurements, kinds: list[str], scale: float) -> str:
    """msg/s of each row (ratio to the hand-written loop) and µs per task, one line per kind."""
    lines = ['| broker (messages) | ' + ' | '.join(f'{row} msg/s' for row in ROWS.values())
             + ' | µs/task THREADING | µs/task SINGLE | µs/task raw | hand-written loop |', '|---' * 8 + '|']
    for kind in kinds:
        medians = [results.median(row, kind) for row in ROWS.values()]
        cells = []
        for row, value in zip(ROWS.values(), medians):
            ratio = results.ratio(row, kind, ROWS['raw']) if row != ROWS['raw'] else None
            cells.append('–' if value is None else f'{value:,.0f}' + (f' ({ratio:.2f}x)' if ratio else ''))
        cells += ['–' if value is None else f'{1e6 / value:.1f}' for value in medians]
        count = max(1000, int(COUNTS[kind] * scale))
        lines.append(f'| {kind} ({count:,}) | ' + ' | '.join(cells) + f' | {RAW_HOW[kind]} |')
    return '\n'.join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == '--child':
        put_fsdf_source_first()
        argv = sys.argv[2:]
        seconds = child(argv[0], argv[1], argv[2], int(argv[3]), profile=len(argv) > 4)
        cpu = CPU_SECONDS[0]
        os.write(1, f'{RESULT_PREFIX}{json.dumps({"seconds": seconds, "cpu": cpu})}\n'.encode())
        os._exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('kinds', nargs='*', help=f'any of {", ".join(COUNTS)} (default: all)')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--scale', type=float, default=1.0, help='multiply the message counts (quick trials)')
    parser.add_argument('--compare-commit', help='also run the fsdf rows on this commit (ratios at the end)')
    parser.add_argument('--profile', help='KIND:MODE (threading or single): one cProfiled fsdf run instead')
    args = parser.parse_args()
    kinds = args.kinds or list(COUNTS)
    unknown = set(kinds) - set(COUNTS)
    if unknown:
        parser.error(f'unknown kinds {sorted(unknown)}; choose from {", ".join(COUNTS)}')
    os.environ['FSDF_CONFIG_FILE'] = '0'
    os.environ.setdefault('FSDF_PERSIST_QUEUE_PATH', f'/tmp/fsdf-bench-cost-{os.getpid()}')
    server_kinds = ['KOMBU_REDIS' if k.startswith('REDIS') else k for k in kinds]
    servers = start_servers(sorted(set(server_kinds)))
    try:
        if args.profile:
            kind, mode = args.profile.split(':')
            count = max(1000, int(COUNTS[kind] * args.scale))
            argv = [sys.executable, str(Path(__file__).resolve()), '--child', mode, kind,
                    f'cost_prof_{uuid.uuid4().hex[:8]}', str(count), 'profile']
            subprocess.run(argv, cwd=ROOT, timeout=RUN_TIMEOUT)
            return
        print(f'{machine_description()}; median of {args.repeat}; one process; no-op task')
        began = time.monotonic()
        print('\n' + measure(kinds, args.repeat, args.scale, args.compare_commit), flush=True)
        print(f'\n(took {time.monotonic() - began:.0f} s; load average after: {os.getloadavg()[0]:.1f})')
    finally:
        for server in servers:
            server.stop()


if __name__ == '__main__':
    main()
