"""Publishing (issue 19): ``push`` and ``push_many`` against a hand-written loop on the same client, every
server kind; and concurrent pushes from 50 threads against one (group commit).

For each kind, one process measures, in alternating order, repeat after repeat:
  publish one    N calls ``task.push(i)`` against the client's own one-message call per body
                 (Redis ``LPUSH`` / ``XADD``; the other clients as in bench/brokers_raw.py: amqpstorm/pika
                 confirmed publish, confluent-kafka produce + flush, pymongo insert_one, SQLAlchemy
                 INSERT + commit, nats-py awaited JetStream publish, pyzmq send).
  publish batch  ``task.push_many(range(N))`` against the client's batch (Redis pipelines of 1,000
                 commands, the rest as in bench/brokers_raw.py).
Each loop builds its JSON inside the timing. Two hand-written loops per kind: "raw" sends what fsdf
sends (the argument, a uuid4 task id and a publish time, as bench/brokers_raw.py does), "raw, bare"
sends ``json.dumps({"i": i})`` alone (the issue's "json.dumps + LPUSH" loop): the stricter of the two.
Ratios are fsdf / loop, the median of the per-repeat ratios [lowest-highest].

``THREADS`` (Redis, kind REDIS): N pushes from 1 thread and from 50 threads (N/50 each), and the same
with group commit off (each push its own LPUSH, the behaviour before it) and raw ``LPUSH`` from 1 and
50 threads; the ratio 50 threads / 1 thread is the group-commit target (>= 3x). ``THREADS_<KIND>``: the
fsdf rows of the same on another kind.

Servers are started here with tests/servers/ (Redis, RabbitMQ, Tansu for Kafka, nx-27017 for MongoDB,
nats-server, PostgreSQL) on loopback; SQLITE is SQLACHEMY on a SQLite file; ZEROMQ needs no server
(its messages stay in the publisher's memory, up to its high-water mark: no consumer runs).

``--compare-commit REV`` also runs the fsdf rows on the fsdf source of REV (exported with git archive),
in the same processes' turn order, and prints this tree / REV.

Usage: python bench/publish.py [KIND ...] [--repeat 3] [--scale 1.0] [--compare-commit REV]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'bench'))

from benchlib import (Measurements, check_fsdf_source, export_commit, fsdf_environment, load_average,  # noqa: E402
                      machine_description, put_fsdf_source_first, short_rev)

RESULT_PREFIX = 'RESULT '
REDIS_KINDS = ('REDIS', 'REDIS_ACK_ABLE', 'RedisBrpopLpush', 'REDIS_STREAM')
# Messages per measurement: (publish one, publish batch); a confirmed amqpstorm publish waits ~10 ms.
COUNTS = {'REDIS': (5000, 50000), 'REDIS_ACK_ABLE': (5000, 50000), 'RedisBrpopLpush': (5000, 50000),
          'REDIS_STREAM': (5000, 50000), 'RABBITMQ_AMQPSTORM': (300, 20000), 'RABBITMQ_PIKA': (2000, 20000),
          'KAFKA': (2000, 50000), 'MONGOMQ': (1000, 10000), 'NATS': (3000, 20000), 'SQLITE': (2000, 20000),
          'POSTGRES': (2000, 20000), 'ZEROMQ': (20000, 50000), 'THREADS': (20000, 0),
          # 50 threads against 1 on the other kinds that group publishes (and Kafka, whose producer batches)
          'THREADS_RABBITMQ_AMQPSTORM': (1000, 0), 'THREADS_RABBITMQ_PIKA': (2000, 0), 'THREADS_KAFKA': (2000, 0),
          'THREADS_MONGOMQ': (2000, 0), 'THREADS_NATS': (3000, 0), 'THREADS_SQLITE': (2000, 0),
          'THREADS_POSTGRES': (2000, 0)}
KINDS = list(COUNTS)
FSDF_KIND = {'SQLITE': 'SQLACHEMY', 'POSTGRES': 'SQLACHEMY'}  # benchmark name -> BrokerEnum name
THREADS = 50
RAW_PIPELINE = 1000  # commands per pipeline of the raw Redis batch (bench/field_redis.py's raw loop)


def body(i: int) -> str:
    """What fsdf sends: the argument, a task id and a publish time."""
    return json.dumps({'i': i, 'extra': {'task_id': uuid.uuid4().hex, 'publish_time': time.time()}})


def bare_body(i: int) -> str:
    """The argument alone."""
    return json.dumps({'i': i})


# -- hand-written loops for Redis and a SQL loop that runs on SQLite too ------------------------------
class RawRedis:
    """redis-py with its defaults: LPUSH per body; pipelines of 1,000 LPUSH for a batch."""

    def __init__(self, url: str, queue: str) -> None:
        import redis
        self.redis, self.queue = redis.Redis.from_url(url), queue

    def publish_one(self, bodies: Iterable[str]) -> None:
        lpush, queue = self.redis.lpush, self.queue
        for text in bodies:
            lpush(queue, text)

    def publish_batch(self, bodies: list[str]) -> None:
        for start in range(0, len(bodies), RAW_PIPELINE):
            with self.redis.pipeline(transaction=False) as pipe:
                for text in bodies[start:start + RAW_PIPELINE]:
                    pipe.lpush(self.queue, text)
                pipe.execute()


class RawRedisStream(RawRedis):
    """redis-py: XADD per body; pipelines of 1,000 XADD for a batch."""

    def publish_one(self, bodies: Iterable[str]) -> None:
        xadd, queue = self.redis.xadd, self.queue
        for text in bodies:
            xadd(queue, {'msg': text})

    def publish_batch(self, bodies: list[str]) -> None:
        for start in range(0, len(bodies), RAW_PIPELINE):
            with self.redis.pipeline(transaction=False) as pipe:
                for text in bodies[start:start + RAW_PIPELINE]:
                    pipe.xadd(self.queue, {'msg': text})
                pipe.execute()


class RawSql:
    """SQLAlchemy Core: INSERT + commit per body; one multi-row INSERT for a batch (bench/brokers_raw.py's
    loop, on a table of fsdf's row shape whose ``due`` default works on any database)."""

    def __init__(self, url: str, queue: str) -> None:
        import sqlalchemy as sa
        self.sa = sa
        self.engine = sa.create_engine(url)
        self.table = sa.Table(
            queue, sa.MetaData(), sa.Column('id', sa.BigInteger().with_variant(sa.Integer, 'sqlite'), primary_key=True),
            sa.Column('body', sa.Text, nullable=False), sa.Column('due', sa.Double, nullable=False, server_default='0'),
            sa.Column('lease', sa.String(32)), sa.Column('consumer', sa.String(255)), sa.Column('taken_at', sa.Double))
        self.table.create(self.engine, checkfirst=True)

    def publish_one(self, bodies: Iterable[str]) -> None:
        for text in bodies:
            with self.engine.begin() as connection:
                connection.execute(self.sa.insert(self.table).values(body=text))

    def publish_batch(self, bodies: list[str]) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.sa.insert(self.table).values([{'body': text} for text in bodies]))


def raw_loop(kind: str, queue: str) -> Any:
    """The hand-written loop of a benchmark kind on ``queue``."""
    if kind in REDIS_KINDS or kind == 'THREADS':
        return (RawRedisStream if kind == 'REDIS_STREAM' else RawRedis)(os.environ['FSDF_REDIS_URL'], queue)
    if kind in ('SQLITE', 'POSTGRES'):
        return RawSql(os.environ['FSDF_SQLACHEMY_ENGINE_URL'], queue)
    import brokers_raw
    classes = {'RABBITMQ_AMQPSTORM': brokers_raw.RawAmqpstorm, 'RABBITMQ_PIKA': brokers_raw.RawPika,
               'KAFKA': brokers_raw.RawKafka, 'MONGOMQ': brokers_raw.RawMongo, 'NATS': brokers_raw.RawNats,
               'ZEROMQ': brokers_raw.RawZeroMQ}
    return classes[kind](os.environ.get(f'FSDF_{brokers_raw.SERVER_SETTING[kind]}', ''), queue)


# -- one kind, measured in one process -----------------------------------------------------------------
def trivial(i: int) -> int:
    return i


def fsdf_task(kind: str, queue: str) -> Any:
    from fsdf import BrokerEnum, task_deco
    return task_deco(queue, broker_kind=BrokerEnum[FSDF_KIND.get(kind, kind)], log_level=logging.WARNING)(trivial)


def purge(kind: str, queue: str, raw: Any = None) -> None:
    """Empty a measured queue (untimed), so later measurements do not write into a bigger table or list;
    a raw loop's queue has fsdf's shape, so fsdf's purge empties it (a SQL loop's table is its own)."""
    if kind in ('KAFKA', 'NATS', 'ZEROMQ'):
        return  # topics and streams are cheap to leave; ZeroMQ keeps messages in the publisher's memory
    if isinstance(raw, RawSql):
        with raw.engine.begin() as connection:
            connection.execute(raw.sa.delete(raw.table))
        return
    from fsdf import BrokerEnum
    from fsdf.brokers import get_broker
    get_broker(BrokerEnum[FSDF_KIND.get(kind, kind)], queue).purge()


def timed(what: str, publish_one: Callable[[Iterable[Any]], None], publish_batch: Callable[[list[Any]], None],
          make: Callable[[int], Any], count: int) -> float:
    """Messages per second of one measurement; ``make(i)`` builds each message inside the timing."""
    began = time.perf_counter()
    if what == 'one':
        publish_one(make(i) for i in range(count))
    else:
        publish_batch([make(i) for i in range(count)])
    return count / (time.perf_counter() - began)


def measure_kind(kind: str, repeat: int, counts: tuple[int, int]) -> dict[str, list[float]]:
    """{row/operation: [msg/s per repeat]} for one kind; the rows alternate order every repeat."""
    results: dict[str, list[float]] = {}
    systems = ['fsdf', 'raw', 'raw, bare']

    def one_measurement(system: str, what: str, count: int) -> float:
        queue = f'bench_pub_{what}_{uuid.uuid4().hex[:8]}'
        raw = None
        if system == 'fsdf':
            task = fsdf_task(kind, queue)

            def push_each(calls: Iterable[int]) -> None:
                push = task.push
                for i in calls:
                    push(i)
            push_each([-1]) if what == 'one' else task.push_many([-1])  # warm up: connect, declare
            rate = timed(what, push_each, task.push_many, int, count)
        else:
            raw = raw_loop(kind, queue)
            raw.publish_one([body(-1)]) if what == 'one' else raw.publish_batch([body(-1)])
            rate = timed(what, raw.publish_one, raw.publish_batch, body if system == 'raw' else bare_body, count)
        purge(kind, queue, raw)
        return rate

    for run in range(repeat):
        order = systems if run % 2 == 0 else systems[::-1]
        for what, count in zip(('one', 'batch'), counts):
            for system in order:
                results.setdefault(f'{system}|{what}', []).append(one_measurement(system, what, count))
    return results


def measure_threads(kind: str, repeat: int, count: int) -> dict[str, list[float]]:
    """{row: [msg/s per repeat]}: ``count`` pushes from 1 and from 50 threads, grouped or not (and raw on Redis)."""
    results: dict[str, list[float]] = {}
    kind = kind.removeprefix('THREADS').removeprefix('_') or 'REDIS'
    task = fsdf_task(kind, f'bench_pub_threads_{uuid.uuid4().hex[:8]}')
    task.push(-1)
    grouped = task.publisher._send  # bench only: the private switch between group commit and one publish each

    def push_each(calls: Iterable[int]) -> None:
        for i in calls:
            task.push(i)

    def run(publish: Callable[[Iterable[int]], None], threads: int) -> float:
        share = count // threads
        workers = [threading.Thread(target=publish, args=(range(n * share, (n + 1) * share),)) for n in range(threads)]
        began = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return share * threads / (time.perf_counter() - began)

    def ungrouped(measure: Callable[[], float]) -> float:
        task.publisher._send = task.publisher.broker.publish
        try:
            return measure()
        finally:
            task.publisher._send = grouped

    rows: list[tuple[str, Callable[[], float]]] = [
        ('fsdf, 1 thread', lambda: run(push_each, 1)),
        (f'fsdf, {THREADS} threads', lambda: run(push_each, THREADS)),
        (f'fsdf, {THREADS} threads, group commit off', lambda: ungrouped(lambda: run(push_each, THREADS)))]
    raw = raw_loop(kind, f'bench_pub_threads_raw_{uuid.uuid4().hex[:8]}') if kind == 'REDIS' else None
    if raw is not None:
        def lpush_each(calls: Iterable[int]) -> None:
            raw.publish_one(bare_body(i) for i in calls)
        rows += [('raw LPUSH, 1 thread', lambda: run(lpush_each, 1)),
                 (f'raw LPUSH, {THREADS} threads', lambda: run(lpush_each, THREADS))]
    for number in range(repeat):
        for row, measure in (rows if number % 2 == 0 else rows[::-1]):
            results.setdefault(row, []).append(measure())
        purge(kind, task.queue_name)
        if raw is not None:
            raw.redis.delete(raw.queue)
    return results


def child_main(kind: str, repeat: int, counts: tuple[int, int]) -> None:
    """``--child KIND REPEAT ONE BATCH``: measure one kind, print a RESULT line, exit."""
    check_fsdf_source(put_fsdf_source_first())
    results = (measure_threads(kind, repeat, counts[0]) if kind.startswith('THREADS')
               else measure_kind(kind, repeat, counts))
    os.write(1, f'{RESULT_PREFIX}{json.dumps(results)}\n'.encode())
    os._exit(0)  # ZeroMQ would linger to hand over what it holds; nothing else to wait for


def run_child(kind: str, repeat: int, counts: tuple[int, int], source: Optional[str]) -> dict[str, list[float]]:
    argv = [sys.executable, str(Path(__file__).resolve()), '--child', kind, str(repeat), *map(str, counts)]
    env = {**os.environ, **(fsdf_environment(source) if source else {})}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, cwd=ROOT, env=env)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f'{kind} failed (exit {done.returncode}): {done.stderr[-3000:]}')


# -- servers and the report ----------------------------------------------------------------------------
def start_servers(kinds: list[str]) -> list[Any]:
    """Start what the kinds need and point fsdf (and the children) at it; the started servers."""
    sys.path.insert(0, str(ROOT / 'tests'))
    os.environ.setdefault('FSDF_TEST_SERVERS_DIR', '/tmp/fsdf-bench-servers')
    os.environ['FSDF_CONFIG_FILE'] = '0'
    os.environ.setdefault('FSDF_PERSIST_QUEUE_PATH', f'/tmp/fsdf-bench-publish-{os.getpid()}')
    import brokers_raw
    started = []
    kinds = [kind.removeprefix('THREADS_') for kind in kinds]
    if any(kind in REDIS_KINDS or kind == 'THREADS' for kind in kinds):
        import redis
        from servers.redis_server import RedisServer
        server = RedisServer().start()
        redis.Redis.from_url(server.url).config_set('appendonly', 'no')  # memory only: no fsync stalls
        started.append(server)
        os.environ['FSDF_REDIS_URL'] = server.url
    others = [kind for kind in kinds if kind in brokers_raw.SERVER_SETTING and kind not in ('SQLACHEMY', 'ZEROMQ')]
    started += brokers_raw.start_servers(others + (['SQLACHEMY'] if 'POSTGRES' in kinds else []))
    if 'POSTGRES' in kinds:
        os.environ['FSDF_POSTGRES_URL'] = os.environ.pop('FSDF_SQLACHEMY_ENGINE_URL')
    return started


def sqlite_url() -> str:
    folder = Path(os.environ['FSDF_PERSIST_QUEUE_PATH'])
    folder.mkdir(parents=True, exist_ok=True)
    return f'sqlite:///{folder}/bench-publish.db'


def report_kind(kind: str, results: dict[str, list[float]], counts: tuple[int, int]) -> str:
    """A Markdown table of one kind: msg/s medians and fsdf's ratio to each loop."""
    table = Measurements()
    for key, values in results.items():
        row, what = key.split('|')
        for value in values:
            table.add(row, f'publish {what}', value)
    columns = ['publish one', 'publish batch']
    rates = table.table(['fsdf', 'raw', 'raw, bare'], columns, {column: 'raw' for column in columns})
    ratios = table.ratio_table([('fsdf / raw', 'fsdf', 'raw'), ('fsdf / raw, bare', 'fsdf', 'raw, bare')], columns)
    return (f'{kind} (publish one {counts[0]:,}, publish batch {counts[1]:,} messages)\n\n{rates}\n\n'
            f'ratios, median of per-repeat [lowest-highest]:\n\n{ratios}')


def report_threads(kind: str, results: dict[str, list[float]], count: int) -> str:
    rows = list(results)
    lines = ['| | msg/s (median) |', '|---|---|'] + [f'| {row} | {statistics.median(results[row]):,.0f} |'
                                                   for row in rows]
    one, many = results['fsdf, 1 thread'], results[f'fsdf, {THREADS} threads']
    ratios = sorted(m / o for m, o in zip(many, one))
    off = [m / o for m, o in zip(results[f'fsdf, {THREADS} threads, group commit off'], one)]
    target = ' (target >= 3x)' if kind == 'THREADS' else ''
    where = ' to Redis (kind REDIS)' if kind == 'THREADS' else ''
    return (f'{kind}: {count:,} pushes{where}\n\n' + '\n'.join(lines) +
            f'\n\nfsdf {THREADS} threads / 1 thread: {statistics.median(ratios):.2f}x '
            f'[{ratios[0]:.2f}-{ratios[-1]:.2f}]{target}; group commit off: {statistics.median(off):.2f}x')


def compare_line(kind: str, now: dict[str, list[float]], then: dict[str, list[float]]) -> str:
    cells = []
    for key in now:
        if key.startswith('fsdf') and key in then:
            ratios = [a / b for a, b in zip(now[key], then[key])]
            cells.append(f'{key.replace("|", " ")} {statistics.median(ratios):.2f}x')
    return f'- {kind}: ' + ', '.join(cells)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == '--child':
        child_main(sys.argv[2], int(sys.argv[3]), (int(sys.argv[4]), int(sys.argv[5])))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('kinds', nargs='*', help=f'any of {", ".join(KINDS)} (default: all)')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--scale', type=float, default=1.0, help='multiply the message counts (quick trials)')
    parser.add_argument('--compare-commit', metavar='REV', help='also run the fsdf rows on the fsdf of REV')
    args = parser.parse_args()
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f'unknown kinds {sorted(unknown)}; choose from {", ".join(KINDS)}')
    kinds = args.kinds or KINDS
    began = time.monotonic()
    print(f'{machine_description()}; median of {args.repeat}', flush=True)
    before = export_commit(args.compare_commit) if args.compare_commit else None
    servers = start_servers(kinds)
    comparisons = []
    try:
        for kind in kinds:
            counts = tuple(max(1, int(count * args.scale)) for count in COUNTS[kind])
            if kind.endswith('SQLITE'):
                os.environ['FSDF_SQLACHEMY_ENGINE_URL'] = sqlite_url()
            elif kind.endswith('POSTGRES'):
                os.environ['FSDF_SQLACHEMY_ENGINE_URL'] = os.environ['FSDF_POSTGRES_URL']
            results = run_child(kind, args.repeat, counts, None)  # type: ignore[arg-type]
            print('\n' + (report_threads(kind, results, counts[0]) if kind.startswith('THREADS')
                          else report_kind(kind, results, counts)), f'\n\n(load average {load_average()})', flush=True)
            if before:
                then = run_child(kind, args.repeat, counts, before)  # type: ignore[arg-type]
                comparisons.append(compare_line(kind, results, then))
    finally:
        for server in servers:
            server.stop()
    if before:
        print(f'\nfsdf rows, this tree / {short_rev(args.compare_commit)} (median of per-repeat ratios; > 1 is faster '
              f'now; each measured in its own process after this tree\'s):\n' + '\n'.join(comparisons))
    print(f'\n{time.monotonic() - began:.0f} s in all; load average {load_average()}')


if __name__ == '__main__':
    main()
