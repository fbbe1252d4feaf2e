"""Concurrency modes: how close each fsdf mode comes to the ideal time, next to dramatiq, funboost and taskiq.

Benchmarks (every run in a fresh subprocess; GEVENT/EVENTLET runs monkey-patch before any import):
  latency  dramatiq's latency benchmark scaled to milliseconds: 1,000 tasks sleeping 10 ms (1%), 5 ms (29%),
           3 ms (20%) or 1 ms (50%), drawn with a fixed seed (1337, as dramatiq's); each fsdf mode at concurrency 8
           and 64 (SINGLE_THREAD at 1). Ideal = max(total sleep / concurrency, longest sleep).
  io       10,000 tasks each sleeping (ASYNC: awaiting) 50 ms at concurrency 1,000; ideal 0.5 s. fsdf ASYNC,
           GEVENT, THREADING next to dramatiq (threads and gevent), funboost's GEVENT mode and taskiq's receiver.
  processes  20,000 trivial tasks on PERSISTQUEUE (SQLite: the embedded broker many processes share),
           ``multi_process_consume(1)`` against ``(2)``, with 50 (the default) and 8 threads each: the
           processes start on an empty queue, the messages are published in one transaction once all
           have registered, and the time runs until the last one is acked (start-up not timed).
Time = from starting the consumer to the last task's end (tasks are published before). Peers run in the
peers virtualenv (``--peers-python``, default bench/.venv-peers; see bench/requirements.txt): dramatiq on
its StubBroker with its own Worker, funboost on MEMORY_QUEUE, taskiq's Receiver (what ``taskiq worker``
runs) on an in-memory queue broker. All brokers are in process, so only the pools are compared.

Usage: python bench/modes.py [latency io processes] [--repeat 3] [--peers-python PATH]
"""
from __future__ import annotations

import sys

# A green child must patch before anything else imports threading or socket.
if len(sys.argv) > 3 and sys.argv[1] == '--child' and sys.argv[3] in ('GEVENT', 'gevent'):
    from gevent import monkey
    monkey.patch_all()
elif len(sys.argv) > 3 and sys.argv[1] == '--child' and sys.argv[3] == 'EVENTLET':
    import eventlet
    eventlet.monkey_patch()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

from benchlib import Countdown, machine_description  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_PEERS_PYTHON = BENCH_DIR / '.venv-peers' / 'bin' / 'python'
RESULT_PREFIX = 'RESULT '
IO_TASKS, IO_SECONDS, IO_CONCURRENCY = 10_000, 0.05, 1000
LATENCY_TASKS = 1000
TRIVIAL_TASKS = 20_000
RUN_TIMEOUT = 300


def latency_durations(count: int) -> list[float]:
    """dramatiq's latency-benchmark sleeps (seed 1337), in seconds, scaled from seconds to milliseconds."""
    rng = random.Random(1337)
    durations = []
    for _ in range(count):
        p = rng.randint(1, 100)
        ms = 10 if p == 1 else 5 if p <= 30 else 3 if p <= 50 else 1
        durations.append(ms / 1000)
    return durations


def workload(bench: str, count: int) -> list[float]:
    """The sleep of each task of a benchmark."""
    return latency_durations(count) if bench == 'latency' else [IO_SECONDS] * count


def ideal_seconds(durations: list[float], concurrency: int) -> float:
    """The shortest possible time: all slots busy all the time, and never less than the longest task."""
    return max(sum(durations) / concurrency, max(durations))


def finished_after(countdown: Countdown, began: float) -> float:
    """Seconds from ``began`` until the last task finished."""
    return countdown.wait(RUN_TIMEOUT) - began


# -- one run per subprocess: each system's runner returns the elapsed seconds ------------------------
def run_fsdf(mode: str, concurrency: int, durations: list[float]) -> float:
    """fsdf on LOCAL_PYTHON_QUEUE in the given mode."""
    os.environ.setdefault('FSDF_CONFIG_FILE', '0')
    import asyncio
    import logging

    from fsdf import BrokerEnum, ConcurrentModeEnum, task_deco

    finish = Countdown(len(durations))
    options = dict(broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, concurrent_mode=ConcurrentModeEnum[mode],
                   concurrent_num=concurrency, log_level=logging.WARNING)
    if mode == 'ASYNC':
        async def work(seconds):
            await asyncio.sleep(seconds)
            finish.tick()
    else:
        def work(seconds):
            time.sleep(seconds)
            finish.tick()
    task = task_deco(f'bench_modes_{uuid.uuid4().hex[:8]}', **options)(work)
    task.push_many(durations)
    began = time.perf_counter()
    task.consume()
    elapsed = finished_after(finish, began)
    task.stop(grace=5)
    return elapsed


def run_dramatiq(mode: str, concurrency: int, durations: list[float]) -> float:
    """dramatiq's Worker on its StubBroker; mode 'gevent' is what ``dramatiq-gevent`` does (patched threads)."""
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    finish = Countdown(len(durations))
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(max_retries=0, broker=broker)
    def work(seconds):
        time.sleep(seconds)
        finish.tick()

    for seconds in durations:
        work.send(seconds)
    began = time.perf_counter()
    worker = dramatiq.Worker(broker, worker_threads=concurrency)
    worker.start()
    elapsed = finished_after(finish, began)
    worker.stop()
    return elapsed


def run_funboost(mode: str, concurrency: int, durations: list[float]) -> float:
    """funboost on its MEMORY_QUEUE broker in its GEVENT mode (the seed framework fsdf replaces)."""
    from funboost import BoosterParams, BrokerEnum, ConcurrentModeEnum, boost

    finish = Countdown(len(durations))

    @boost(BoosterParams(queue_name=f'bench_modes_{uuid.uuid4().hex[:8]}', broker_kind=BrokerEnum.MEMORY_QUEUE,
                         concurrent_mode=getattr(ConcurrentModeEnum, mode.upper()), concurrent_num=concurrency,
                         log_level=30, create_logger_file=False))
    def work(seconds):
        time.sleep(seconds)
        finish.tick()

    for seconds in durations:
        work.push(seconds)
    began = time.perf_counter()
    work.consume()
    return finished_after(finish, began)


def run_taskiq(mode: str, concurrency: int, durations: list[float]) -> float:
    """taskiq's Receiver (the loop ``taskiq worker`` runs) with max_async_tasks, on an in-memory queue broker."""
    import asyncio
    from typing import AsyncGenerator

    from taskiq import AsyncBroker
    from taskiq.receiver import Receiver

    class MemoryQueueBroker(AsyncBroker):
        """A taskiq broker over an asyncio.Queue, so tasks go through the real receive path."""

        def __init__(self) -> None:
            super().__init__()
            self.queue: asyncio.Queue = asyncio.Queue()

        async def kick(self, message) -> None:
            await self.queue.put(message.message)

        async def listen(self) -> AsyncGenerator[bytes, None]:
            while True:
                yield await self.queue.get()

    async def main() -> float:
        finish = Countdown(len(durations))
        broker = MemoryQueueBroker()

        @broker.task
        async def work(seconds: float) -> None:
            await asyncio.sleep(seconds)
            finish.tick()

        for seconds in durations:
            await work.kiq(seconds)
        stop = asyncio.Event()
        receiver = Receiver(broker, max_async_tasks=concurrency)
        began = time.perf_counter()
        listening = asyncio.create_task(receiver.listen(stop))
        while not finish.done.is_set():
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - began
        stop.set()
        listening.cancel()
        return elapsed

    return asyncio.run(main())


RUNNERS: dict[str, Callable[[str, int, list[float]], float]] = {
    'fsdf': run_fsdf, 'dramatiq': run_dramatiq, 'funboost': run_funboost, 'taskiq': run_taskiq}
PEERS = {'dramatiq', 'funboost', 'taskiq'}


def child_main(argv: list[str]) -> None:
    """``--child SYSTEM MODE BENCH CONCURRENCY COUNT``: one run; prints a RESULT line with the seconds."""
    system, mode, bench, concurrency, count = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    elapsed = RUNNERS[system](mode, concurrency, workload(bench, count))
    # funboost replaces print, so write the result line to the descriptor itself.
    os.write(1, f'{RESULT_PREFIX}{json.dumps({"seconds": elapsed})}\n'.encode())
    sys.stdout.flush()
    os._exit(0)  # peers leave worker threads behind; the run is over


# -- the parent: runs children, takes medians -------------------------------------------------------
class Runner:
    """Starts child runs with the right interpreter and working folder, and collects medians."""

    def __init__(self, repeat: int, peers_python: Path) -> None:
        self.repeat = repeat
        self.peers_python = peers_python
        self.workdir = Path(tempfile.mkdtemp(prefix='fsdf-bench-modes-'))  # funboost writes its config files here

    def once(self, system: str, mode: str, bench: str, concurrency: int, count: int) -> float:
        python = str(self.peers_python) if system in PEERS else sys.executable
        env = {**os.environ, 'PYTHONPATH': str(self.workdir), 'FSDF_CONFIG_FILE': '0',
               'FSDF_PERSIST_QUEUE_PATH': str(self.workdir / 'sqlite')}
        argv = [python, str(Path(__file__).resolve()), '--child', system, mode, bench, str(concurrency), str(count)]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.workdir, env=env, timeout=RUN_TIMEOUT + 30)
        for line in done.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX):])['seconds']
        raise RuntimeError(f'{system} {mode} failed (exit {done.returncode}): {done.stderr[-1500:]}')

    def median(self, system: str, mode: str, bench: str, concurrency: int, count: int) -> tuple[float, list[float]]:
        runs = [self.once(system, mode, bench, concurrency, count) for _ in range(self.repeat)]
        return statistics.median(runs), runs

    def peers_available(self) -> bool:
        return self.peers_python.exists()


def row(label: str, concurrency: int, ideal: float, median: float, runs: list[float]) -> str:
    each = ', '.join(f'{r:.3f}' for r in runs)
    return f'| {label} | {concurrency} | {median:.3f} | {ideal:.3f} | {median / ideal:.2f}x | {each} |'


def latency(runner: Runner) -> None:
    durations = latency_durations(LATENCY_TASKS)
    print(f'\nlatency: {LATENCY_TASKS} tasks, total sleep {sum(durations):.3f} s, LOCAL_PYTHON_QUEUE')
    print('| system / mode | concurrency | median s | ideal s | ratio to ideal | runs (s) |')
    print('|---|---|---|---|---|---|')
    cases = [('fsdf', mode, c) for c in (8, 64) for mode in ('THREADING', 'GEVENT', 'EVENTLET', 'ASYNC')]
    cases.append(('fsdf', 'SINGLE_THREAD', 1))
    if runner.peers_available():
        cases += [('dramatiq', 'threads', c) for c in (8, 64)]
    for system, mode, concurrency in cases:
        median, runs = runner.median(system, mode, 'latency', concurrency, LATENCY_TASKS)
        print(row(f'{system} {mode}', concurrency, ideal_seconds(durations, concurrency), median, runs), flush=True)


def io(runner: Runner) -> None:
    ideal = ideal_seconds(workload('io', IO_TASKS), IO_CONCURRENCY)
    print(f'\nio: {IO_TASKS} tasks x {IO_SECONDS * 1000:.0f} ms at concurrency {IO_CONCURRENCY}')
    print('| system / mode | concurrency | median s | ideal s | ratio to ideal | runs (s) |')
    print('|---|---|---|---|---|---|')
    cases = [('fsdf', 'ASYNC'), ('fsdf', 'GEVENT'), ('fsdf', 'THREADING')]
    if runner.peers_available():
        cases += [('dramatiq', 'threads'), ('dramatiq', 'gevent'), ('funboost', 'gevent'), ('taskiq', 'async')]
    else:
        print(f'(peers skipped: no {runner.peers_python}; pip install -r bench/requirements.txt into it)')
    for system, mode in cases:
        try:
            median, runs = runner.median(system, mode, 'io', IO_CONCURRENCY, IO_TASKS)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f'| {system} {mode} | {IO_CONCURRENCY} | could not run: {str(exc)[-300:]!r} | | | |')
            continue
        print(row(f'{system} {mode}', IO_CONCURRENCY, ideal, median, runs), flush=True)


# -- processes: multi_process_consume(1) against (2) on PERSISTQUEUE --------------------------------
def _rows(database: Path, sql: str) -> int:
    try:
        with sqlite3.connect(database, timeout=30) as db:
            return db.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # the consumers have not created the file's tables yet
        return -1


def processes_seconds(runner: Runner, process_num: int, concurrency: int) -> float:
    """Seconds to settle TRIVIAL_TASKS messages published at once to ``process_num`` consuming processes.

    The processes start on an empty queue; the messages are published in one transaction once every
    process has registered as a consumer, so start-up is not timed. Done = no row left (all acked).
    """
    queue_name = f'bench_processes_{uuid.uuid4().hex[:8]}'
    folder = runner.workdir / 'sqlite'
    env = {**os.environ, 'FSDF_CONFIG_FILE': '0', 'FSDF_PERSIST_QUEUE_PATH': str(folder),
           'FSDF_BENCH_QUEUE': queue_name, 'FSDF_BENCH_CONCURRENCY': str(concurrency), 'PYTHONPATH': str(BENCH_DIR)}
    os.environ.update(FSDF_CONFIG_FILE='0', FSDF_PERSIST_QUEUE_PATH=str(folder))
    from fsdf import BrokerEnum
    from fsdf.brokers import get_broker

    database = folder / f'{queue_name}.sqlite'
    child = subprocess.Popen([sys.executable, '-c', 'import modes_trivial_task as m; '
                              f'm.trivial.multi_process_consume({process_num})'],
                             env=env, cwd=runner.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _rows(database, 'SELECT COUNT(*) FROM fsdf_consumers') < process_num:
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError(f'{process_num} consumer processes did not start: {child.stderr.read()[-1500:]}')
            time.sleep(0.05)
        bodies = [json.dumps({'i': i}) for i in range(TRIVIAL_TASKS)]  # 'extra' is optional in a message
        broker = get_broker(BrokerEnum.PERSISTQUEUE, queue_name)
        began = time.perf_counter()
        broker.publish_many(bodies)
        table = '"' + queue_name + '"'
        while _rows(database, f'SELECT COUNT(*) FROM {table}') > 0:
            if time.perf_counter() - began > RUN_TIMEOUT:
                raise RuntimeError(f'{process_num} processes did not finish in {RUN_TIMEOUT} s')
            time.sleep(0.01)
        elapsed = time.perf_counter() - began
        broker.close()
        return elapsed
    finally:
        child.terminate()
        child.wait(60)


def processes(runner: Runner) -> None:
    print(f'\nprocesses: {TRIVIAL_TASKS} trivial tasks on PERSISTQUEUE, multi_process_consume(n), THREADING')
    print('| threads per process | processes | median s | median msg/s | runs (s) | 2 processes / 1 |')
    print('|---|---|---|---|---|---|')
    for concurrency in (50, 8):  # 50 is fsdf's default
        rates = {}
        for process_num in (1, 2):
            runs = [processes_seconds(runner, process_num, concurrency) for _ in range(runner.repeat)]
            rates[process_num] = TRIVIAL_TASKS / statistics.median(runs)
            ratio = f'{rates[2] / rates[1]:.2f}x' if process_num == 2 else ''
            print(f'| {concurrency} | {process_num} | {statistics.median(runs):.3f} | {rates[process_num]:,.0f} | '
                  f'{", ".join(f"{r:.3f}" for r in runs)} | {ratio} |', flush=True)


BENCHES = {'latency': latency, 'io': io, 'processes': processes}


def main() -> None:
    """Run the chosen benchmarks (all by default) and print Markdown tables."""
    if len(sys.argv) > 1 and sys.argv[1] == '--child':
        child_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('benches', nargs='*', help=f'any of {", ".join(BENCHES)} (default: all)')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--peers-python', type=Path, default=DEFAULT_PEERS_PYTHON)
    args = parser.parse_args()
    unknown = set(args.benches) - set(BENCHES)
    if unknown:
        parser.error(f'unknown benchmarks {sorted(unknown)}; choose from {", ".join(BENCHES)}')
    runner = Runner(args.repeat, args.peers_python)
    print(f'{machine_description()}; median of {args.repeat}')
    for name in args.benches or list(BENCHES):
        BENCHES[name](runner)


if __name__ == '__main__':
    main()
