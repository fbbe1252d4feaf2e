"""Worker start and latency (issue 19): fsdf against a hand-written loop on the same backend, every run a fresh process.

  import   ``python -X importtime -c "import fsdf"``: fsdf's cumulative import time (median over the runs)
           and, from the last run, the modules it imports with the most time of their own.
  start    worker process spawn -> its first task done, with one message waiting: wall clock, and the
           worker's CPU time until then (on a loaded machine the wall clock mostly measures the load).
           On PERSISTQUEUE and REDIS_ACK_ABLE a separate process published it before the spawn;
           LOCAL_PYTHON_QUEUE lives in the worker, so the worker publishes it itself (the raw loop too).
           ``python -c pass`` is the interpreter's own start, for scale. fsdf and the bench's files are
           byte-compiled first and children may write .pyc files, as an installed package has them.
  --instructions  adds ``start Ir (M)``: the start child run under valgrind's callgrind, its instructions
           (millions, all threads) from spawn to its first task's end, with PYTHONHASHSEED=0. Load on the
           machine does not change it (within about 2 %: the threads' interleaving still varies), so it
           tells apart changes of a few ms where the wall clock cannot. Needs valgrind; about 6 s per run.
  latency  dramatiq's latency benchmark in milliseconds (bench/modes.py's distribution: 1,000 tasks sleeping
           1-10 ms, seed 1337) at concurrency 8 and 64, THREADING; all tasks published before the worker
           starts; elapsed = first task's start -> last task's end (start-up is not in it).

The raw loop is a dispatcher thread feeding a ThreadPoolExecutor(concurrency) with at most that many
calls in flight (``benchlib.dispatch``), taking from a ``queue.Queue`` of JSON bodies, persist-queue's
``SQLiteAckQueue`` (ack after the call), or redis-py (start: BRPOP; latency: RPOP count=100, the
field bench's pipelined loop). fsdf is this tree's (``BENCH_FSDF_SOURCE`` names another checkout).
Redis is a redis-server the script starts on a free loopback port (in memory).

Each run measures every row once, fsdf and raw in alternating order; tables show medians and the
median of the per-run ratios fsdf / raw (< 1: fsdf is quicker).

``--compare-commit REV`` adds rows ``fsdf@REV``: fsdf's source at REV exported to a temp dir, run the
same way, in rotating order with the others; its ratios are shown in [brackets] on the fsdf rows.

Usage: python bench/start_latency.py [--runs 7] [--only import,start,latency] [--kinds LOCAL_PYTHON_QUEUE,...]
                                     [--compare-commit REV] [--instructions]
About 2 minutes with the defaults on an idle 2-core machine (3 with --compare-commit).
"""
from __future__ import annotations

# Only what every child needs: a start child is timed from its spawn, so it imports nothing of the driver's.
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from rawloop import dispatch  # noqa: E402  (stdlib only, the loop itself)

FSDF_SOURCE_VARIABLE = 'BENCH_FSDF_SOURCE'  # benchlib's, not imported by a start child

if TYPE_CHECKING:  # the driver's own imports are in its functions, for the same reason
    import argparse

    from benchlib import Measurements
KINDS = ('LOCAL_PYTHON_QUEUE', 'PERSISTQUEUE', 'REDIS_ACK_ABLE')
START_CONCURRENCY = 50
LATENCY_TASKS = 1000
LATENCY_CONCURRENCIES = (8, 64)
RAW_RPOP_COUNT = 100
RESULT_MARK = 'BENCH_RESULT '
RUN_TIMEOUT = 120


def report(result: dict[str, float]) -> None:
    """Hand a child's result to the driver and end the process at once (worker threads stay behind)."""
    os.write(1, f'\n{RESULT_MARK}{json.dumps(result)}\n'.encode())
    os._exit(0)


# == the children ===========================================================================
def fsdf_task(kind: str, queue_name: str, concurrency: int, function: Callable[..., Any]) -> Any:
    """The task as a user writes it."""
    import logging

    from fsdf import BrokerEnum, task_deco
    return task_deco(queue_name, broker_kind=BrokerEnum[kind], concurrent_num=concurrency,
                     log_level=logging.WARNING)(function)


def raw_client(kind: str, queue_name: str, folder: str) -> Any:
    """The bare backend: a queue.Queue, an SQLiteAckQueue or a redis-py client."""
    if kind == 'LOCAL_PYTHON_QUEUE':
        return queue.Queue()
    if kind == 'PERSISTQUEUE':
        import persistqueue.serializers.json as pq_json
        from persistqueue import SQLiteAckQueue
        return SQLiteAckQueue(os.path.join(folder, f'raw_{queue_name}'), multithreading=True, serializer=pq_json,
                              auto_resume=False)
    import redis
    return redis.Redis.from_url(os.environ['FSDF_REDIS_URL'], socket_timeout=60)


def raw_publish(kind: str, client: Any, queue_name: str, bodies: list[dict]) -> None:
    """Put JSON bodies on the bare backend."""
    if kind == 'LOCAL_PYTHON_QUEUE':
        for body in bodies:
            client.put(json.dumps(body))
    elif kind == 'PERSISTQUEUE':
        for body in bodies:
            client.put(body)
    else:
        with client.pipeline(transaction=False) as pipe:
            for body in bodies:
                pipe.lpush(queue_name, json.dumps(body))
            pipe.execute()


def raw_consume(kind: str, client: Any, queue_name: str, concurrency: int, function: Callable[..., Any],
                batched: bool) -> None:
    """A dispatcher thread feeding a ThreadPoolExecutor; returns at once."""
    if kind == 'LOCAL_PYTHON_QUEUE':
        def take() -> list:
            try:
                return [json.loads(client.get(timeout=0.1))]
            except queue.Empty:
                return []
        run: Callable[[Any], None] = lambda body: function(**body)  # noqa: E731
    elif kind == 'PERSISTQUEUE':
        from persistqueue.exceptions import Empty as PersistEmpty

        def take() -> list:
            try:
                return [client.get(raw=True, timeout=0.1)]
            except PersistEmpty:
                return []

        def run(item: dict) -> None:
            function(**item['data'])
            client.ack(id=item['pqid'])
    else:
        def take() -> list:
            if batched:
                taken = client.rpop(queue_name, RAW_RPOP_COUNT)
                if not taken:
                    time.sleep(0.001)  # empty: poll again soon
                return [json.loads(body) for body in taken or []]
            popped = client.brpop([queue_name], timeout=1)
            return [json.loads(popped[1])] if popped else []
        run = lambda body: function(**body)  # noqa: E731
    threading.Thread(target=dispatch, args=(take, run, concurrency, threading.Event()), daemon=True).start()


def child_publish(system: str, kind: str, queue_name: str, folder: str, bodies: list[dict]) -> None:
    """Publish before a worker starts (PERSISTQUEUE, Redis)."""
    if system == 'fsdf':
        def first(x: int) -> None:  # the worker's function: its parameter names the message's field
            pass

        fsdf_task(kind, queue_name, 1, first).push_many([tuple(body.values()) for body in bodies])
    else:
        raw_publish(kind, raw_client(kind, queue_name, folder), queue_name, bodies)
    report({})


def check_source_here(source: str) -> None:
    """``benchlib.check_fsdf_source`` without importing benchlib, whose import --instructions would count."""
    fsdf_file = Path(sys.modules['fsdf'].__file__ or '').resolve()
    if not fsdf_file.is_relative_to(Path(source).resolve()):
        raise RuntimeError(f'fsdf imported from {fsdf_file}, not from {source}')


def child_start(system: str, kind: str, queue_name: str, folder: str) -> None:
    """Consume until the first task runs; report the wall-clock time it ran at."""
    def first(x: int) -> None:
        done_at = time.time()
        cpu = time.process_time()  # CPU seconds of all threads: tells apart what load on the machine blurs
        if system == 'fsdf':  # after the time is taken
            check_source_here(os.environ[FSDF_SOURCE_VARIABLE])
        report({'first': done_at, 'cpu': cpu})

    if system == 'fsdf':
        task = fsdf_task(kind, queue_name, START_CONCURRENCY, first)
        if kind == 'LOCAL_PYTHON_QUEUE':
            task.push(0)
        task.consume()
    else:
        client = raw_client(kind, queue_name, folder)
        if kind == 'LOCAL_PYTHON_QUEUE':
            raw_publish(kind, client, queue_name, [{'x': 0}])
        raw_consume(kind, client, queue_name, START_CONCURRENCY, first, batched=False)
    threading.Event().wait(RUN_TIMEOUT)


def child_latency(system: str, kind: str, queue_name: str, folder: str, concurrency: int) -> None:
    """Publish the latency tasks, consume them; report first start -> last end (s)."""
    from benchlib import Countdown
    from modes import latency_durations
    durations = latency_durations(LATENCY_TASKS)
    countdown = Countdown(len(durations))
    first_start: list[float] = []

    def sleep(seconds: float) -> None:
        if not first_start:
            first_start.append(time.perf_counter())
        time.sleep(seconds)
        countdown.tick()

    bodies = [{'seconds': seconds} for seconds in durations]
    if system == 'fsdf':
        task = fsdf_task(kind, queue_name, concurrency, sleep)
        task.push_many([(seconds,) for seconds in durations])
        task.consume()
    else:
        client = raw_client(kind, queue_name, folder)
        raw_publish(kind, client, queue_name, bodies)
        raw_consume(kind, client, queue_name, concurrency, sleep, batched=True)
    ended = countdown.wait(RUN_TIMEOUT)
    report({'seconds': ended - first_start[0]})


def child_main(argv: list[str]) -> None:
    """``--child ROLE SYSTEM KIND QUEUE FOLDER [CONCURRENCY]``."""
    role, system, kind, queue_name, folder = argv[:5]
    if system == 'fsdf' and role != 'start':  # a start child checks once its time is taken
        from benchlib import check_fsdf_source
        check_fsdf_source(os.environ[FSDF_SOURCE_VARIABLE])
    if role == 'publish':
        child_publish(system, kind, queue_name, folder, [{'x': 0}])
    elif role == 'start':
        child_start(system, kind, queue_name, folder)
    else:
        child_latency(system, kind, queue_name, folder, int(argv[5]))


# == the driver =============================================================================
class Driver:
    """Runs the children with the right environment and collects their numbers.

    ``sources``: each system's label ('fsdf', 'fsdf@REV') -> the folder it imports fsdf from; 'raw' runs
    with the first one's environment (it imports no fsdf)."""

    def __init__(self, folder: str, redis_url: str, sources: dict[str, str]) -> None:
        import subprocess

        from benchlib import fsdf_environment
        self.folder = folder
        self.envs = {}
        for label, source in sources.items():
            env = {**os.environ, **fsdf_environment(source), 'FSDF_CONFIG_FILE': '0',
                   'FSDF_PERSIST_QUEUE_PATH': folder, 'FSDF_REDIS_URL': redis_url,
                   'PYTHONPATH': f'{source}{os.pathsep}{BENCH_DIR}'}
            # Bytecode as an installed package has it: without .pyc files every start compiles fsdf's source,
            # which doubled the import's CPU time here (PYTHONDONTWRITEBYTECODE=1 in the environment).
            env.pop('PYTHONDONTWRITEBYTECODE', None)
            subprocess.run([sys.executable, '-m', 'compileall', '-q', str(Path(source) / 'fsdf'), str(BENCH_DIR)],
                           env=env, check=True, stdout=subprocess.DEVNULL)
            self.envs[label] = env
        self.envs['raw'] = next(iter(self.envs.values()))

    def child(self, label: str, role: str, *args: Any, under: tuple[str, ...] = ()) -> tuple[dict[str, float], float]:
        """Run one child of system ``label`` to its result; (result, wall-clock time just before the spawn).

        ``under``: a command the child runs under (valgrind); its stderr lines come back as ``result['stderr']``."""
        import subprocess
        argv = [*under, sys.executable, str(Path(__file__).resolve()), '--child', role, label.split('@')[0],
                *map(str, args)]
        env = {**self.envs[label], 'PYTHONHASHSEED': '0'} if under else self.envs[label]
        spawned = time.time()
        done = subprocess.run(argv, env=env, cwd=self.folder, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT * (20 if under else 1) + 30)
        for line in done.stdout.splitlines():
            if line.startswith(RESULT_MARK):
                return {**json.loads(line.removeprefix(RESULT_MARK)), **({'stderr': done.stderr} if under else {})}, \
                    spawned
        raise RuntimeError(f'{label} {role} {args} failed (exit {done.returncode}): {done.stderr[-1500:]}')

    def start_seconds(self, label: str, kind: str) -> tuple[float, float]:
        """Spawn -> first task done: wall-clock seconds, and the worker's CPU seconds until then."""
        queue_name = f'bench_start_{os.urandom(4).hex()}'
        if kind != 'LOCAL_PYTHON_QUEUE':
            self.child(label, 'publish', kind, queue_name, self.folder)
        found, spawned = self.child(label, 'start', kind, queue_name, self.folder)
        return found['first'] - spawned, found['cpu']

    def start_instructions(self, label: str, kind: str) -> float:
        """Spawn -> first task done under callgrind: millions of instructions (all threads)."""
        import re
        queue_name = f'bench_start_{os.urandom(4).hex()}'
        if kind != 'LOCAL_PYTHON_QUEUE':
            self.child(label, 'publish', kind, queue_name, self.folder)
        found, _ = self.child(label, 'start', kind, queue_name, self.folder,
                              under=('valgrind', '--tool=callgrind', '--callgrind-out-file=/dev/null'))
        collected = re.search(r'Collected : (\d+)', str(found['stderr']))
        if collected is None:
            raise RuntimeError(f'no instruction count from valgrind: {str(found["stderr"])[-500:]}')
        return int(collected[1]) / 1e6

    def latency_ratio(self, label: str, kind: str, concurrency: int) -> float:
        """Elapsed / ideal of the latency benchmark."""
        from modes import ideal_seconds, latency_durations
        queue_name = f'bench_latency_{os.urandom(4).hex()}'
        found, _ = self.child(label, 'latency', kind, queue_name, self.folder, concurrency)
        return found['seconds'] / ideal_seconds(latency_durations(LATENCY_TASKS), concurrency)

    def interpreter_seconds(self) -> float:
        """``python -c pass``: spawn to exit."""
        import subprocess
        began = time.perf_counter()
        subprocess.run([sys.executable, '-c', 'pass'], env=self.envs['raw'], cwd=self.folder, check=True)
        return time.perf_counter() - began

    def import_profile(self, label: str) -> tuple[float, float, list[tuple[int, str]]]:
        """fsdf's cumulative import time (ms), the process's CPU seconds once imported (the interpreter's start
        included), and the modules sorted by their own time (us, name)."""
        import re
        import subprocess
        code = 'import fsdf, time; print(time.process_time())'
        done = subprocess.run([sys.executable, '-X', 'importtime', '-c', code], env=self.envs[label],
                              cwd=self.folder, capture_output=True, text=True, check=True)
        rows = []
        total = 0.0
        for line in done.stderr.splitlines():
            match = re.match(r'import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)', line)
            if match:
                rows.append((int(match[1]), match[4].strip()))
                if match[4] == 'fsdf' and len(match[3]) == 1:  # the top level: one space of indent
                    total = int(match[2]) / 1000
        return total, float(done.stdout.split()[-1]), sorted(rows, reverse=True)

    def interpreter_cpu(self) -> float:
        """CPU seconds of a bare interpreter's start (site included), for scale."""
        import subprocess
        done = subprocess.run([sys.executable, '-c', 'import time; print(time.process_time())'],
                              env=self.envs['raw'], cwd=self.folder, capture_output=True, text=True, check=True)
        return float(done.stdout.split()[-1])


def in_order(systems: list[str], run: int) -> list[str]:
    """The systems rotated by one per run, so none always goes first."""
    shift = run % len(systems)
    return systems[shift:] + systems[:shift]


def measure(driver: Driver, args: argparse.Namespace, systems: list[str],
            results: Measurements) -> list[tuple[int, str]]:
    """Every wanted row once per run; this tree's import profile from the last run."""
    from benchlib import load_average
    profile: list[tuple[int, str]] = []
    kinds = args.kinds.split(',')
    fsdf_systems = [system for system in systems if system != 'raw']
    for run in range(args.runs):
        if 'import' in args.only:
            results.add('python -c pass', 'CPU', driver.interpreter_cpu())
            for system in in_order(fsdf_systems, run):
                total, cpu, rows = driver.import_profile(system)
                results.add(f'import {system}', 'ms', total)
                results.add(f'import {system}', 'CPU', cpu)
                profile = rows if system == 'fsdf' else profile
        if 'start' in args.only:
            results.add('python -c pass', 'start (s)', driver.interpreter_seconds())
            for kind in kinds:
                for system in in_order(systems, run):
                    wall, cpu = driver.start_seconds(system, kind)
                    results.add(f'{system} {kind}', 'start (s)', wall)
                    results.add(f'{system} {kind}', 'start CPU (s)', cpu)
                    if args.instructions:
                        results.add(f'{system} {kind}', 'start Ir (M)', driver.start_instructions(system, kind))
        if 'latency' in args.only:
            for kind in kinds:
                for concurrency in LATENCY_CONCURRENCIES:
                    for system in in_order(systems, run):
                        results.add(f'{system} {kind}', f'latency c={concurrency}',
                                    driver.latency_ratio(system, kind, concurrency))
        print(f'  run {run + 1}/{args.runs} done, load average {load_average()}', file=sys.stderr)
    return profile


def print_tables(args: argparse.Namespace, systems: list[str], results: Measurements,
                 profile: list[tuple[int, str]]) -> None:
    """The import profile, then one table: medians, each fsdf row with its ratio to raw (and to fsdf@REV)."""
    kinds = args.kinds.split(',')
    fsdf_systems = [system for system in systems if system != 'raw']
    if 'import' in args.only:
        print(f'\nmedians of {args.runs}; CPU: CPU seconds once fsdf is imported, start included '
              f'(`python -c pass`: {results.median("python -c pass", "CPU"):.3f} s)')
        for system in fsdf_systems:
            print(f'`import fsdf` ({system}): {results.median(f"import {system}", "ms"):.1f} ms cumulative '
                  f'(-X importtime), CPU {results.median(f"import {system}", "CPU"):.3f} s')
        print('\nmost time of their own in `import fsdf` (this tree, last run):\n')
        print('| module | own time (ms) |\n|---|---|')
        for own, name in profile[:12]:
            print(f'| {name} | {own / 1000:.1f} |')
    columns = (['start (s)', 'start CPU (s)', *(['start Ir (M)'] if args.instructions else [])]
               if 'start' in args.only else []) + (
        [f'latency c={c}' for c in LATENCY_CONCURRENCIES] if 'latency' in args.only else [])
    if not columns:
        return
    print(f'\nmedians of {args.runs}; start in s; latency as elapsed / ideal; (ratio) = median of per-run '
          f'ratios to raw' + ('; [ratio] to ' + fsdf_systems[1] if len(fsdf_systems) > 1 else '') + '\n')
    print('| | ' + ' | '.join(columns) + ' |\n|---|' + '---|' * len(columns))
    if 'start' in args.only:
        print(f'| python -c pass | {results.median("python -c pass", "start (s)"):.3f} |' + ' |' * (len(columns) - 1))
    for kind in kinds:
        for system in systems:
            cells = []
            for column in columns:
                text = f'{results.median(f"{system} {kind}", column):.3f}'
                if system != 'raw':
                    text += f' ({results.ratio(f"{system} {kind}", column, f"raw {kind}"):.2f}x)'
                if system == 'fsdf' and len(fsdf_systems) > 1:
                    text += f' [{results.ratio(f"fsdf {kind}", column, f"{fsdf_systems[1]} {kind}"):.2f}x]'
                cells.append(text)
            print(f'| {system} {kind} | ' + ' | '.join(cells) + ' |')


def driver_main(args: argparse.Namespace) -> None:
    """Start redis-server if a Redis kind is asked for, measure, print, stop it."""
    from benchlib import Measurements, export_commit, load_average, machine_description, short_rev, temp_dir
    sys.path.insert(0, str(REPO / 'tests'))
    from servers.redis_server import RedisServer

    sources = {'fsdf': os.environ.get(FSDF_SOURCE_VARIABLE) or str(REPO)}
    if args.compare_commit:
        sources[f'fsdf@{short_rev(args.compare_commit)}'] = export_commit(args.compare_commit)
    systems = ['raw', *sources]
    server = None
    if 'REDIS' in args.kinds:
        import redis
        server = RedisServer(port=args.redis_port).start()
        redis.Redis.from_url(server.url).config_set('appendonly', 'no')
    try:
        print(machine_description())
        driver = Driver(temp_dir('fsdf-bench-start-'), server.url if server else 'redis://127.0.0.1:1/0', sources)
        results = Measurements()
        profile = measure(driver, args, systems, results)
        print_tables(args, systems, results, profile)
        print(f'\nload average at the end: {load_average()}')
    finally:
        if server is not None:
            server.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == '--child':
        child_main(sys.argv[2:])
        return
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=7)
    parser.add_argument('--only', default='import,start,latency', help='comma-separated: import, start, latency')
    parser.add_argument('--kinds', default=','.join(KINDS))
    parser.add_argument('--redis-port', type=int, default=26391, help='or the next free one')
    parser.add_argument('--compare-commit', default='', help="also run fsdf at this commit (rows 'fsdf@REV')")
    parser.add_argument('--instructions', action='store_true',
                        help='also count the start children\'s instructions under valgrind (load-independent)')
    driver_main(parser.parse_args())


if __name__ == '__main__':
    main()
