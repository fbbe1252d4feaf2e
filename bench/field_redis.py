"""fsdf's Redis brokers against a hand-written redis-py loop, celery, dramatiq and funboost, on one redis-server.

Every row, every run (rows interleaved, so a burst of load from elsewhere hits them alike):

  publish   N ``add(a, b)`` calls one call each, then N in batches (the framework's batch API; the raw
            loop pipelines 1,000 LPUSHes), timed inside the publishing process.
  consume   the one-call messages consumed by ONE worker process (50 threads). Each task does one
            Redis INCR; the task that makes the count 1 and the one that makes it N write the time,
            so the rate is (N - 1) / (last - first) and the driver only polls the counter.
  start     worker process spawn -> first task done (messages were waiting).
  RSS       the worker's peak RSS (VmHWM) once all N are done.
  latency   dramatiq's latency benchmark: 1,000 tasks each sleeping its distribution (1 s -> 1 ms by
            default, ``--latency-unit-ms``), consumed at concurrency 8 and 64; elapsed / ideal, where
            ideal = sum of sleeps / concurrency and elapsed runs from the first task's start to the last's end.

The driver runs under fsdf's venv (its interpreter runs the raw and fsdf rows); the peers run under
``bench/.venv-peers`` (``--peers-python``), each worker and publisher a subprocess of this same file
with the right interpreter. The fsdf rows measure this tree's fsdf (or the one in ``$BENCH_FSDF_SOURCE``).

``--compare-commit REV`` adds a row ``fsdf@REV <kind>`` after each fsdf row: the same subprocesses with
the fsdf source of REV (exported to a temp dir) on PYTHONPATH; the pair runs in alternating order per
run, and the report ends with the ratios this tree / REV per column (median of per-run ratios).

Usage: python bench/field_redis.py [--n 20000] [--runs 3] [--rows raw,fsdf,celery,dramatiq,funboost]
                                   [--compare-commit REV]
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:  # run as a script it is sys.path[0]; nb_log writes its config into sys.path[1]
    sys.path.insert(0, str(BENCH_DIR))

from benchlib import (FSDF_SOURCE_VARIABLE, Measurements, check_fsdf_source, dispatch,  # noqa: E402  (stdlib only)
                      export_commit, fsdf_environment, load_average, machine_description, short_rev)

CONCURRENCY = 50
LATENCY_TASKS = 1000
LATENCY_CONCURRENCIES = (8, 64)
RAW_PIPELINE = 1000
RAW_RPOP_COUNT = 100
DEFAULT_PEERS_PYTHON = BENCH_DIR / '.venv-peers' / 'bin' / 'python'
FSDF_PYTHON = sys.executable  # the driver runs under fsdf's venv
PEERS = ('celery', 'dramatiq', 'funboost')
COLUMNS = ['publish, one call each', 'publish, batch', 'consume', 'start (s)', 'worker RSS (MB)']
NO_BATCH = 'no batch API'
RESULT_MARK = 'BENCH_RESULT '


# == the tasks, as every framework runs them ===============================================
class Completion:
    """The worker side of the completion signal: INCR a counter; the first and the N-th write the time."""

    def __init__(self, redis_url: str, key: str, total: int) -> None:
        import redis
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=60)
        self.key, self.total = key, total

    def done(self, ran_for: float = 0.0) -> None:
        """One task finished; ``ran_for`` (s) is subtracted from the first one's time to get its start."""
        count = self.redis.incr(self.key)
        if count == 1:
            self.redis.set(f'{self.key}:first', repr(time.time() - ran_for))
        if count == self.total:
            self.redis.set(f'{self.key}:last', repr(time.time()))


completion: Optional[Completion] = None


def add(a: int, b: int) -> int:
    """The throughput task."""
    completion.done()
    return a + b


def latency(durations: list[int]) -> None:
    """dramatiq's latency task: sleep each duration (in units of LATENCY_UNIT seconds) in turn."""
    unit = float(os.environ['BENCH_LATENCY_UNIT'])  # seconds
    for duration in durations:
        time.sleep(duration * unit)
    completion.done(sum(durations) * unit)


TASKS = {'add': add, 'latency': latency}


def latency_durations(count: int, seed: int = 1337) -> list[list[int]]:
    """dramatiq's latency distribution: 1% [3,3,3,1], 9% [2,3], 30% [1,2], 60% [1]."""
    rng = random.Random(seed)
    calls = []
    for _ in range(count):
        p = rng.randint(1, 100)
        calls.append([3, 3, 3, 1] if p == 1 else [2, 3] if p <= 10 else [1, 2] if p <= 40 else [1])
    return calls


# == one adapter per framework: publish and consume (run in the subprocess) ================
class Framework:
    """How one framework publishes calls to a queue and runs a worker on it (one instance per process)."""

    has_batch = True

    def __init__(self, variant: str, redis_url: str, queue: str, task: str, concurrency: int) -> None:
        self.variant, self.redis_url, self.queue, self.task_name = variant, redis_url, queue, task
        self.concurrency = concurrency
        self.function = TASKS[task]

    def publish_one(self, calls: list[tuple]) -> None:
        """Publish each call with its own call."""
        raise NotImplementedError

    def publish_batch(self, calls: list[tuple]) -> None:
        """Publish the calls with the framework's batch API."""
        raise NotImplementedError

    def work(self) -> None:
        """Consume the queue in this process until killed."""
        raise NotImplementedError

    @staticmethod
    def environment(redis_url: str, folder: Path, python: str) -> dict[str, str]:
        """Extra environment of this framework's subprocesses (run by ``python``)."""
        return {}


class Raw(Framework):
    """redis-py by hand: LPUSH / pipelined LPUSH; BRPOP or RPOP count=100 feeding a ThreadPoolExecutor."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        import redis
        self.redis = redis.Redis.from_url(self.redis_url, socket_timeout=60)
        self.names = ('a', 'b') if self.task_name == 'add' else ('durations',)

    def publish_one(self, calls: list[tuple]) -> None:
        lpush, queue, names, dumps = self.redis.lpush, self.queue, self.names, json.dumps
        for call in calls:
            lpush(queue, dumps(dict(zip(names, call))))

    def publish_batch(self, calls: list[tuple]) -> None:
        names, dumps = self.names, json.dumps
        for start in range(0, len(calls), RAW_PIPELINE):
            with self.redis.pipeline(transaction=False) as pipe:
                for call in calls[start:start + RAW_PIPELINE]:
                    pipe.lpush(self.queue, dumps(dict(zip(names, call))))
                pipe.execute()

    def work(self) -> None:
        function, queue, client = self.function, self.queue, self.redis

        def run(body: bytes) -> None:
            function(**json.loads(body))

        if self.variant == 'pipelined':
            def take() -> list:
                taken = client.rpop(queue, RAW_RPOP_COUNT)
                if not taken:
                    time.sleep(0.001)  # empty: poll again soon
                return taken or []
        else:
            def take() -> list:
                popped = client.brpop([queue], timeout=1)
                return [popped[1]] if popped else []
        dispatch(take, run, self.concurrency, threading.Event())


class Fsdf(Framework):
    """fsdf with one of its Redis broker kinds, THREADING."""

    @functools.cached_property
    def task(self) -> Any:
        from fsdf import BrokerEnum, task_deco
        return task_deco(self.queue, broker_kind=BrokerEnum[self.variant], concurrent_num=self.concurrency,
                         log_level=logging.WARNING)(self.function)

    def publish_one(self, calls: list[tuple]) -> None:
        push = self.task.push
        for call in calls:
            push(*call)

    def publish_batch(self, calls: list[tuple]) -> None:
        self.task.push_many(calls)

    def work(self) -> None:
        self.task.consume()

    @staticmethod
    def environment(redis_url: str, folder: Path, python: str) -> dict[str, str]:
        return {'FSDF_CONFIG_FILE': '0', 'FSDF_REDIS_URL': redis_url, 'FSDF_PERSIST_QUEUE_PATH': str(folder)}


class Celery(Framework):
    """celery 5, redis broker, threads pool, no result backend; gossip, mingle and heartbeat off."""

    has_batch = False

    @functools.cached_property
    def task(self) -> Any:
        from celery import Celery as CeleryApp
        app = CeleryApp('bench', broker=self.redis_url)
        app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, task_default_queue=self.queue,
                        broker_connection_retry_on_startup=True, worker_send_task_events=False)
        return app.task(name=f'bench.{self.task_name}')(self.function)

    def publish_one(self, calls: list[tuple]) -> None:
        delay = self.task.delay
        for call in calls:
            delay(*call)

    def work(self) -> None:
        self.task.app.worker_main(['worker', '--pool=threads', f'--concurrency={self.concurrency}',
                                   f'--queues={self.queue}', '--loglevel=WARNING', '--without-gossip',
                                   '--without-mingle', '--without-heartbeat'])


class Dramatiq(Framework):
    """dramatiq 2, RedisBroker, one Worker with threads in this process (what its CLI runs per process)."""

    has_batch = False

    @functools.cached_property
    def actor(self) -> Any:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker
        dramatiq.set_broker(RedisBroker(url=self.redis_url))
        return dramatiq.actor(self.function, queue_name=self.queue, max_retries=0)

    def publish_one(self, calls: list[tuple]) -> None:
        send = self.actor.send
        for call in calls:
            send(*call)

    def work(self) -> None:
        import dramatiq
        dramatiq.Worker(self.actor.broker, worker_threads=self.concurrency).start()


class Funboost(Framework):
    """funboost with its REDIS or REDIS_ACK_ABLE kind, threads; its config file lives in a temp dir."""

    has_batch = False

    @functools.cached_property
    def booster(self) -> Any:
        from funboost import BoosterParams, BrokerEnum, boost
        return boost(BoosterParams(queue_name=self.queue, broker_kind=getattr(BrokerEnum, self.variant),
                                   concurrent_num=self.concurrency, log_level=logging.WARNING,
                                   is_show_message_get_from_broker=False))(self.function)

    def publish_one(self, calls: list[tuple]) -> None:
        push = self.booster.push
        for call in calls:
            push(*call)
        self.booster.publisher._at_exit()  # its REDIS kind buffers pushes: flush them inside the timed window

    def work(self) -> None:
        self.booster.consume()

    @staticmethod
    def environment(redis_url: str, folder: Path, python: str) -> dict[str, str]:
        """funboost reads funboost_config.py (and nb_log nb_log_config.py) from PYTHONPATH: a temp dir."""
        config = folder / 'funboost_config.py'
        if not config.exists():
            where = subprocess.run(
                [python, '-c', 'import importlib.util; print(importlib.util.find_spec("funboost").origin)'],
                capture_output=True, text=True)
            if where.returncode:
                raise RuntimeError(f'funboost is not installed under {python}: {where.stderr[-300:]}')
            default = Path(where.stdout.strip()).parent / 'funboost_config_deafult.py'
            port, db = redis_url.rsplit(':', 1)[1].split('/')
            replacements = {'REDIS_PORT = 6379': f'REDIS_PORT = {port}', 'REDIS_DB = 7 ': f'REDIS_DB = {db} ',
                            # its start-up notes and thread-pool messages are DEBUG by default: quiet, as the others
                            'FUNBOOST_PROMPT_LOG_LEVEL = logging.DEBUG': 'FUNBOOST_PROMPT_LOG_LEVEL = logging.WARNING',
                            'KEEPALIVETIMETHREAD_LOG_LEVEL = logging.DEBUG':
                                'KEEPALIVETIMETHREAD_LOG_LEVEL = logging.WARNING'}
            text = default.read_text()
            for old, new in replacements.items():
                if old not in text:
                    raise RuntimeError(f'funboost config template changed: {old!r} not found in {default}')
                text = text.replace(old, new)
            config.write_text(text)
        return {'PYTHONPATH': str(folder), 'LOG_PATH': str(folder / 'logs')}


FRAMEWORKS: dict[str, type[Framework]] = {'raw': Raw, 'fsdf': Fsdf, 'celery': Celery, 'dramatiq': Dramatiq,
                                          'funboost': Funboost}
# (row label, framework, variant)
ROWS = [
    ('raw LPUSH / BRPOP', 'raw', 'brpop'),
    ('raw pipelined', 'raw', 'pipelined'),
    ('fsdf REDIS', 'fsdf', 'REDIS'),
    ('fsdf REDIS_ACK_ABLE', 'fsdf', 'REDIS_ACK_ABLE'),
    ('fsdf RedisBrpopLpush', 'fsdf', 'RedisBrpopLpush'),
    ('fsdf REDIS_STREAM', 'fsdf', 'REDIS_STREAM'),
    ('celery', 'celery', 'threads'),
    ('dramatiq', 'dramatiq', 'threads'),
    ('funboost REDIS', 'funboost', 'REDIS'),
    ('funboost REDIS_ACK_ABLE', 'funboost', 'REDIS_ACK_ABLE'),
]


# == subprocess entry points ===============================================================
def child_main(args: argparse.Namespace) -> None:
    """Publish (print the seconds the last total - 1 calls took) or work (until killed), as the driver asked."""
    global completion
    if args.framework == 'fsdf':
        check_fsdf_source(os.environ[FSDF_SOURCE_VARIABLE])
    framework = FRAMEWORKS[args.framework](args.variant, args.redis_url, args.queue, args.task, args.concurrency)
    if args.role == 'work':
        completion = Completion(args.redis_url, args.counter, args.total)
        framework.work()  # some return at once, consuming in background threads
        threading.Event().wait()  # until the driver kills this process
        return
    calls = [(i, i) for i in range(args.total)] if args.task == 'add' else [
        (durations,) for durations in latency_durations(args.total)]
    publish = framework.publish_one if args.role == 'publish-one' else framework.publish_batch
    publish(calls[:1])  # connects and sets up, outside the timed window
    began = time.perf_counter()
    publish(calls[1:])
    # Straight to fd 1: funboost's nb_log patches print and sys.stdout with colours.
    os.write(1, f'\n{RESULT_MARK}{json.dumps({"seconds": time.perf_counter() - began})}\n'.encode())


# == the driver ============================================================================
class Driver:
    """Runs subprocesses against one redis-server and collects the measurements."""

    def __init__(self, redis_url: str, folder: Path, peers_python: str, latency_units_ms: list[float],
                 fsdf_sources: dict[str, str]) -> None:
        """``fsdf_sources``: each fsdf row's framework name ('fsdf', 'fsdf@REV') -> the folder it imports fsdf from."""
        import redis
        self.redis_url, self.folder, self.latency_units_ms = redis_url, folder, latency_units_ms
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=60)
        self.pythons = {name: (peers_python if name in PEERS else FSDF_PYTHON) for name in FRAMEWORKS}
        self.fsdf_sources = fsdf_sources

    def command(self, framework: str, variant: str, role: str, queue: str, task: str, total: int,
                extra: tuple = (), extra_env: Optional[dict[str, str]] = None) -> tuple[list[str], dict[str, str]]:
        name = base_framework(framework)
        argv = [self.pythons[name], str(Path(__file__).resolve()), '--child', role, '--framework', name,
                '--variant', variant, '--redis-url', self.redis_url, '--queue', queue, '--task', task,
                '--total', str(total), *extra]
        source = fsdf_environment(self.fsdf_sources[framework]) if name == 'fsdf' else {}
        env = {**os.environ, **FRAMEWORKS[name].environment(self.redis_url, self.folder, self.pythons[name]),
               **source, **(extra_env or {})}
        return argv, env

    def publish(self, framework: str, variant: str, role: str, queue: str, task: str, total: int,
                extra_env: Optional[dict[str, str]] = None) -> float:
        """Seconds the publishing process took for the last ``total - 1`` calls."""
        argv, env = self.command(framework, variant, role, queue, task, total, extra_env=extra_env)
        done = subprocess.run(argv, env=env, cwd=self.folder, capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise RuntimeError(f'{framework} {variant} {role} failed: {done.stderr[-1500:]}')
        result = next(line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK))
        return json.loads(result.removeprefix(RESULT_MARK))['seconds']

    def consume(self, framework: str, variant: str, queue: str, task: str, total: int, concurrency: int,
                timeout: float, extra_env: Optional[dict[str, str]] = None) -> dict[str, float]:
        """Start one worker on a queue holding ``total`` messages; its rate, start time, peak RSS."""
        counter = f'bench:done:{uuid.uuid4().hex[:8]}'
        argv, env = self.command(framework, variant, 'work', queue, task, total,
                                 ('--counter', counter, '--concurrency', str(concurrency)), extra_env)
        log = open(self.folder / f'worker-{framework}-{variant}.log', 'ab')
        spawned = time.time()
        worker = subprocess.Popen(argv, env=env, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not self.redis.exists(f'{counter}:last'):  # written just after the count reaches total
                if worker.poll() is not None:
                    raise RuntimeError(f'{framework} {variant} worker exited with {worker.returncode}; '
                                       f'see {log.name}')
                if time.monotonic() > deadline:
                    raise TimeoutError(f'{framework} {variant}: {self.redis.get(counter)} of {total} in {timeout} s')
                time.sleep(0.05)
            rss_mb = peak_rss_mb(worker.pid)
        finally:
            worker.kill()
            worker.wait()
            log.close()
        first, last = (float(self.redis.get(f'{counter}:{end}')) for end in ('first', 'last'))
        return {'first': first, 'last': last, 'spawned': spawned, 'rss_mb': rss_mb}

    def throughput_row(self, results: Measurements, label: str, framework: str, variant: str, n: int) -> None:
        """Publish one-call and batch, then consume the one-call messages, for one row."""
        queue = f'bench_{base_framework(framework)}_{uuid.uuid4().hex[:8]}'
        publishes_alone = framework != 'raw' or variant == 'brpop'
        seconds = self.publish(framework, variant, 'publish-one', queue, 'add', n)
        if publishes_alone:
            results.add(label, 'publish, one call each', (n - 1) / seconds)
        has_batch = FRAMEWORKS[base_framework(framework)].has_batch
        if has_batch and (framework != 'raw' or variant == 'pipelined'):
            batch_queue = f'{queue}_batch'
            seconds = self.publish(framework, variant, 'publish-batch', batch_queue, 'add', n)
            results.add(label, 'publish, batch', (n - 1) / seconds)
            self.drop_queue(batch_queue)
        elif not has_batch:
            results.note(label, 'publish, batch', NO_BATCH)
        found = self.consume(framework, variant, queue, 'add', n, CONCURRENCY, timeout=max(120.0, n / 50))
        results.add(label, 'consume', (n - 1) / (found['last'] - found['first']))
        results.add(label, 'start (s)', found['first'] - found['spawned'])
        results.add(label, 'worker RSS (MB)', found['rss_mb'])
        self.drop_queue(queue)

    def latency_row(self, results: Measurements, label: str, framework: str, variant: str) -> None:
        """dramatiq's latency benchmark at each unit and concurrency: elapsed / ideal."""
        for unit_ms in self.latency_units_ms:
            for concurrency in LATENCY_CONCURRENCIES:
                queue = f'bench_latency_{base_framework(framework)}_{uuid.uuid4().hex[:8]}'
                role = 'publish-batch' if FRAMEWORKS[base_framework(framework)].has_batch else 'publish-one'
                extra_env = {'BENCH_LATENCY_UNIT': repr(unit_ms / 1000)}
                self.publish(framework, variant, role, queue, 'latency', LATENCY_TASKS, extra_env)
                found = self.consume(framework, variant, queue, 'latency', LATENCY_TASKS, concurrency,
                                     timeout=300, extra_env=extra_env)
                ideal = ideal_latency_seconds(unit_ms, concurrency)
                results.add(label, latency_column(unit_ms, concurrency), (found['last'] - found['first']) / ideal)
                self.drop_queue(queue)

    def drop_queue(self, queue: str) -> None:
        """Delete the queue's keys (and any bookkeeping keys named after it)."""
        keys = [queue, *self.redis.scan_iter(match=f'*{queue}*', count=1000)]
        self.redis.delete(*keys)


def base_framework(framework: str) -> str:
    """The adapter a row's framework name runs: 'fsdf@17bae0a' runs 'fsdf'."""
    return framework.split('@', 1)[0]


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size of a process (VmHWM), in MB."""
    with open(f'/proc/{pid}/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def peers_available(peers_python: str, wanted: set[str]) -> dict[str, str]:
    """For each wanted peer, '' if it imports under ``peers_python``, else why not."""
    problems = {}
    for name in (peer for peer in PEERS if peer in wanted):
        module = name
        if not os.path.exists(peers_python):
            problems[name] = f'no peers venv at {peers_python} (see bench/README.md)'
            continue
        check = subprocess.run([peers_python, '-c', f'import importlib.metadata as m; print(m.version("{module}"))'],
                               capture_output=True, text=True)
        problems[name] = '' if check.returncode == 0 else f'not installed: {check.stderr.strip()[-200:]}'
    return problems


def run_rows(rows: list[tuple[str, str, str]], action: Callable[[str, str, str], None],
             results: Measurements, columns: list[str]) -> None:
    """Run ``action`` on each row; a row that fails is shown as failed, not left out."""
    for label, framework, variant in rows:
        try:
            action(label, framework, variant)
        except Exception as exc:  # one peer failing must not lose the others' numbers
            print(f'  {label}: FAILED: {exc}', file=sys.stderr)
            for column in columns:
                results.note(label, column, 'failed')


Row = tuple[str, str, str]  # (label, framework, variant)


def plan_rows(args: argparse.Namespace, baseline: str) -> list[list[Row]]:
    """The rows to run, in groups: each fsdf row with its ``fsdf@baseline`` twin (if comparing), others alone."""
    wanted = set(args.rows.split(','))
    problems = peers_available(args.peers_python, wanted)
    groups = []
    for label, framework, variant in ROWS:
        if framework not in wanted:
            continue
        if problems.get(framework):
            print(f'{label}: cannot run here: {problems[framework]}', file=sys.stderr)
            continue
        group = [(label, framework, variant)]
        if framework == 'fsdf' and baseline:
            group.append((f'fsdf@{baseline} {variant}', f'fsdf@{baseline}', variant))
        groups.append(group)
    return groups


def in_run_order(groups: list[list[Row]], run: int) -> list[Row]:
    """The rows of one run: a pair (this tree, baseline) runs in alternating order, so neither always goes first."""
    return [row for group in groups for row in (group if run % 2 == 0 else group[::-1])]


def driver_main(args: argparse.Namespace) -> None:
    """Start redis-server, measure every row ``--runs`` times, print the tables, stop redis-server."""
    sys.path.insert(0, str(REPO / 'tests'))
    from servers.redis_server import RedisServer

    baseline = short_rev(args.compare_commit) if args.compare_commit else ''
    fsdf_sources = {'fsdf': os.environ.get(FSDF_SOURCE_VARIABLE) or str(REPO)}
    if baseline:
        fsdf_sources[f'fsdf@{baseline}'] = export_commit(args.compare_commit)
    groups = plan_rows(args, baseline)
    results = Measurements()
    server = RedisServer(port=args.redis_port).start()
    # The tests' helper keeps an append-only file; with fsync every second on a disk shared with
    # other work, Redis stalls writes for seconds now and then. A benchmark wants memory only.
    import redis
    redis.Redis.from_url(server.url).config_set('appendonly', 'no')
    folder = Path(tempfile.mkdtemp(prefix='fsdf-bench-field-'))
    print(machine_description())
    print(f'redis-server on 127.0.0.1:{server.port} (in memory: appendonly no, save ""); fsdf from '
          f'{fsdf_sources["fsdf"]}; peers under {args.peers_python}; {args.n:,} add(a, b) tasks; {args.runs} runs; '
          f'worker concurrency {CONCURRENCY}')
    units = [float(unit) for unit in args.latency_unit_ms.split(',')]
    latency_columns = [latency_column(unit, c) for unit in units for c in LATENCY_CONCURRENCIES]
    try:
        driver = Driver(server.url, folder, args.peers_python, units, fsdf_sources)
        for run in range(args.runs):
            began = time.monotonic()
            run_once(driver, results, in_run_order(groups, run), args, latency_columns)
            print(f'  run {run + 1} took {time.monotonic() - began:.0f} s; load average {load_average()}',
                  file=sys.stderr)
    finally:
        server.stop()
        if args.keep_logs:
            print(f'worker logs kept in {folder}', file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    labels = [row[0] for group in groups for row in group[::-1]]  # the baseline twin above this tree's row
    report(results, labels, units, latency_columns, args.no_latency, args.latency_only)
    if baseline:
        print_comparison(results, groups, baseline, (COLUMNS if not args.latency_only else []) +
                         (latency_columns if not args.no_latency else []))
    print(f'\nload average at the end: {load_average()}')


def run_once(driver: Driver, results: Measurements, rows: list[Row], args: argparse.Namespace,
             latency_columns: list[str]) -> None:
    """One run: the throughput rows, then the latency rows, as asked."""
    if not args.latency_only:
        run_rows(rows, lambda label, fw, variant: driver.throughput_row(results, label, fw, variant, args.n),
                 results, COLUMNS)
    if not args.no_latency:
        run_rows(rows, lambda label, fw, variant: driver.latency_row(results, label, fw, variant),
                 results, latency_columns)


def print_comparison(results: Measurements, groups: list[list[Row]], baseline: str, columns: list[str]) -> None:
    """This tree's fsdf rows against their ``fsdf@baseline`` twins: ratios only."""
    pairs = [(group[0][0], group[0][0], group[1][0]) for group in groups if len(group) == 2]
    print(f'\nfsdf now / fsdf@{baseline}, median of per-run ratios, same run (throughput: > 1 is faster now; '
          f'start, RSS and latency: < 1 is better now)\n')
    print(results.ratio_table(pairs, columns))


def report(results: Measurements, labels: list[str], units: list[float], latency_columns: list[str],
           no_latency: bool, latency_only: bool) -> None:
    """Print the tables and the targets, as markdown."""
    if not latency_only:
        print_throughput(results, labels)
    if not no_latency:
        ideals = ', '.join(f'{latency_column(u, c)}: {ideal_latency_seconds(u, c):.3f} s'
                           for u in units for c in LATENCY_CONCURRENCIES)
        print(f"\nLatency bench (dramatiq's distribution, {LATENCY_TASKS} tasks): elapsed / ideal, medians "
              f'(ideal = sum of sleeps / concurrency; {ideals})\n')
        print(results.table(labels, latency_columns, {}, digits=2, with_ratio=False))
    print('\nTargets (same-run ratios, medians over runs)\n')
    for line in target_lines(results, labels, units, no_latency):
        if not line.endswith('not measured'):
            print(f'- {line}')


def print_throughput(results: Measurements, labels: list[str]) -> None:
    """The throughput table and the start/RSS table."""
    print('\nThroughput, tasks/s, medians; (ratio) = median of the per-run ratios to the raw loop of the same run: '
          'one-call publish to raw LPUSH, batch publish and consume to raw pipelined\n')
    print(results.table(labels, COLUMNS[:3], {'publish, one call each': 'raw LPUSH / BRPOP',
                                              'publish, batch': 'raw pipelined', 'consume': 'raw pipelined'}))
    print('\nWorker start (spawn to first task done, s) and peak RSS (MB), medians\n')
    print(results.table(labels, COLUMNS[3:], {}, digits=2, with_ratio=False))


def target_lines(results: Measurements, labels: list[str], units: list[float], no_latency: bool) -> list[str]:
    """Each target with the measured value and whether it is met."""
    lines = []

    def check(what: str, value: Optional[float], target: float, at_least: bool = True, unit: str = 'x') -> None:
        if value is None:
            lines.append(f'{what}: not measured')
            return
        met = value >= target if at_least else value <= target
        sign = '>=' if at_least else '<='
        lines.append(f'{what}: {value:.2f}{unit} (target {sign} {target:g}{unit}) {"MET" if met else "MISSED"}')

    peers = [label for label in labels if label.split()[0] in ('celery', 'dramatiq', 'funboost')
             and results.median(label, 'consume')]
    if peers:
        fastest = max(peers, key=lambda label: results.median(label, 'consume'))
        check(f'REDIS_ACK_ABLE consume vs fastest peer ({fastest})',
              results.ratio('fsdf REDIS_ACK_ABLE', 'consume', fastest), 2)
    check('REDIS_ACK_ABLE consume vs raw pipelined', results.ratio('fsdf REDIS_ACK_ABLE', 'consume', 'raw pipelined'),
          1.3)
    check('REDIS consume vs raw pipelined', results.ratio('fsdf REDIS', 'consume', 'raw pipelined'), 1.5)
    fsdf_rows = [label for label in labels if label.startswith('fsdf ')]
    for label in fsdf_rows:
        check(f'{label} one-call publish vs raw LPUSH',
              results.ratio(label, 'publish, one call each', 'raw LPUSH / BRPOP'), 1.5)
        check(f'{label} batch publish vs raw pipeline', results.ratio(label, 'publish, batch', 'raw pipelined'), 1.2)
    if not no_latency:
        for label in fsdf_rows:
            for unit in units:
                check(f'{label} latency bench c=64 ({unit:g} ms units) vs ideal',
                      results.median(label, latency_column(unit, 64)), 1.2, at_least=False)
    for label in fsdf_rows:
        check(f'{label} worker RSS', results.median(label, 'worker RSS (MB)'), 45, at_least=False, unit=' MB')
        check(f'{label} worker start', results.median(label, 'start (s)'), 0.25, at_least=False, unit=' s')
    return lines


def latency_column(unit_ms: float, concurrency: int) -> str:
    """The latency table's column for one unit and concurrency."""
    return f'{unit_ms:g} ms units, c={concurrency}'


def ideal_latency_seconds(unit_ms: float, concurrency: int) -> float:
    """Sum of the latency tasks' sleeps divided by the concurrency."""
    return sum(sum(d) for d in latency_durations(LATENCY_TASKS)) * unit_ms / 1000 / concurrency


def main() -> None:
    """Drive the whole comparison, or (with --child) be one publisher or worker process of it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--n', type=int, default=20_000)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--rows', default=','.join(FRAMEWORKS), help='frameworks to include, comma-separated')
    parser.add_argument('--peers-python', default=str(DEFAULT_PEERS_PYTHON))
    parser.add_argument('--redis-port', type=int, default=26390)
    parser.add_argument('--latency-unit-ms', default='1', help='ms per unit of the sleep distribution; a list: 1,10')
    parser.add_argument('--no-latency', action='store_true')
    parser.add_argument('--latency-only', action='store_true')
    parser.add_argument('--keep-logs', action='store_true')
    parser.add_argument('--compare-commit', metavar='REV', help='also run the fsdf rows on the fsdf source of REV')
    child = parser.add_argument_group('subprocess roles (used by the driver)')
    child.add_argument('--child', dest='role', choices=['publish-one', 'publish-batch', 'work'])
    child.add_argument('--framework', choices=list(FRAMEWORKS))
    child.add_argument('--variant')
    child.add_argument('--redis-url')
    child.add_argument('--queue')
    child.add_argument('--task', choices=list(TASKS))
    child.add_argument('--total', type=int)
    child.add_argument('--counter')
    child.add_argument('--concurrency', type=int, default=CONCURRENCY)
    args = parser.parse_args()
    if args.role:
        child_main(args)
    else:
        driver_main(args)


if __name__ == '__main__':
    main()
