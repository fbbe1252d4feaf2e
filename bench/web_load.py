"""The dashboard under load: N records in SQLite plus a 20,000-node tree, 30 clients on the tree and runs APIs.

One dashboard process (``python -m fsdf.web``, started here) serves; the load generator is ``wrk``
(Debian's package: C, epoll, 2 threads holding the 30 keep-alive connections; it shares the
machine's cores with the dashboard, so its own CPU time is measured and printed), cycling over a
fixed, shuffled list of paths: a queue's runs page, its failures, the next runs page (a cursor
read before the run), a page of 200 children of the tree's root, the tree's root with its counts,
an in-tree search by id prefix, the newest 50 runs. Without wrk, ``--generator threads`` uses 30
threads of ``http.client`` in this process (about 3x the generator's CPU of wrk).

Reports per dashboard: throughput, p50/p99 (ms), the dashboard's CPU time per request (1000 / that
is the most one core serves), the generator's CPU, and the dashboard's resident memory every 1/20
of the run (flat: no per-task state). ``--compare-commit main`` also measures fsdf as committed at
``main`` on the same store, alternating (old, new, new, old with ``--rounds 2``).

Targets (issue 16): >= 1,000 q/s, p50 <= 20 ms, p99 <= 100 ms at 30 clients on 2 cores; memory +-10 MB.
Usage: python bench/web_load.py [--records 1000000] [--requests 100000] [--clients 30] [--store PATH]
       [--compare-commit REV] [--rounds N] [--generator wrk|threads] [--workers N]
(``--workers 2``: the dashboard's CPU and memory are summed over its processes.)
"""
from __future__ import annotations

import argparse
import http.client
import json
import resource
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault('FSDF_CONFIG_FILE', '0')
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for path in (str(BENCH_DIR), str(REPO), str(REPO / 'tests')):
    if path not in sys.path:
        sys.path.insert(0, path)

from benchlib import export_commit, load_average, machine_description, short_rev, temp_dir  # noqa: E402

ROOT = 'benchtree'


def build(store_path: Path, records: int) -> None:
    from fsdf.records.store import open_store
    from web_data import flat_records, tree_records, write_all
    store = open_store(f'sqlite:///{store_path}')
    started = time.monotonic()
    write_all(store, flat_records(records, queues=100, span=10 * 86400))
    write_all(store, tree_records(ROOT, 20_000, width=4000, inner=100))
    store.close()
    print(f'wrote {records:,} records + a 20,000-node tree in {time.monotonic() - started:.0f} s')


def urls(rng: random.Random) -> list[str]:
    queue = f'flat_q{rng.randrange(100)}'
    return [f'/api/runs?queue={queue}', f'/api/runs?queue={queue}&status=failed',
            f'/api/runs/{ROOT}/children', f'/api/tree/{ROOT}',
            f'/api/tree/{ROOT}?task_id={ROOT}-g0{rng.randrange(156):03d}',  # about 100 nodes each
            '/api/runs?limit=50']


def request_paths(port: int, count: int, seed: int) -> list[str]:
    """``count`` paths in the mix the module's docstring gives; every sixth a next page read by a cursor."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
    cursors = []
    for queue in range(10):
        conn.request('GET', f'/api/runs?queue=flat_q{queue}')
        cursors.append((queue, json.loads(conn.getresponse().read())['next_cursor']))
    conn.close()
    found = []
    for i in range(count):
        queue, cursor = cursors[i % len(cursors)]
        found.append(f'/api/runs?queue=flat_q{queue}&cursor={cursor}' if i % 6 == 0 else rng.choice(urls(rng)))
    return found


class Result:
    """One load run: requests done, wall seconds, p50/p99 latency (ms), the generator's CPU seconds."""

    def __init__(self, requests: int, seconds: float, p50: float, p99: float, generator_cpu: float) -> None:
        self.requests, self.seconds, self.p50, self.p99, self.generator_cpu = requests, seconds, p50, p99, generator_cpu


WRK_SCRIPT = '''
local paths = {%s}
local count = #paths
local started = 0
function setup(thread) thread:set("offset", started * 997); started = started + 1 end
function init(args) i = offset or 0 end
function request() i = i %% count + 1; return wrk.format("GET", paths[i]) end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("FSDF %%d %%d %%d %%f %%f %%f\\n", summary.requests, e.status,
      e.connect + e.read + e.write + e.timeout, summary.duration, latency:percentile(50), latency:percentile(99)))
end
'''


def run_wrk(port: int, paths: list[str], clients: int, seconds: float, folder: Path) -> Result:
    """Drive the dashboard with wrk for ``seconds``; RuntimeError when any answer was not 2xx."""
    script = folder / 'paths.lua'
    script.write_text(WRK_SCRIPT % ', '.join(json.dumps(p) for p in paths))
    cpu_before = _children_cpu()
    out = subprocess.run(['wrk', '-t2', f'-c{clients}', f'-d{max(1, round(seconds))}s', '--timeout', '10s',
                          '-s', str(script), f'http://127.0.0.1:{port}'], capture_output=True, text=True, check=True)
    generator_cpu = _children_cpu() - cpu_before
    line = next((x for x in out.stdout.splitlines() if x.startswith('FSDF ')), None)
    if line is None:
        raise RuntimeError(f'wrk printed no summary: {out.stdout} {out.stderr}')
    requests, bad_status, socket_errors, micros, p50, p99 = (float(x) for x in line.split()[1:])
    if bad_status or socket_errors > requests / 1000:
        raise RuntimeError(f'{bad_status:.0f} answers were not 2xx, {socket_errors:.0f} socket errors')
    if socket_errors:  # a few connections cut at the run's end or timed out on a crowded machine: said, not fatal
        print(f'    wrk: {socket_errors:.0f} socket errors in {requests:,.0f} requests', flush=True)
    return Result(int(requests), micros / 1e6, p50 / 1000, p99 / 1000, generator_cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_threads(port: int, paths: list[str], clients: int, requests: int) -> Result:
    """Drive the dashboard with ``clients`` threads of keep-alive http.client, ``requests`` in all."""
    latencies: list[float] = []
    each = requests // clients
    usage = resource.getrusage(resource.RUSAGE_SELF)
    threads = [threading.Thread(target=client, args=(port, paths[seed * 997 % len(paths):] + paths, each, latencies))
               for seed in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    return Result(len(latencies), elapsed, statistics.median(latencies) * 1000,
                  latencies[int(len(latencies) * 0.99)] * 1000,
                  after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime)


def client(port: int, paths: list[str], count: int, latencies: list[float]) -> None:
    conn = http.client.HTTPConnection('127.0.0.1', port)
    for i in range(count):
        path = paths[i % len(paths)]
        started = time.perf_counter()
        conn.request('GET', path)
        response = conn.getresponse()
        body = response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f'{path}: {response.status} {body[:200]!r}')


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (``--workers``), MB."""
    total = 0.0
    for one in tree_pids(pid):
        for line in Path(f'/proc/{one}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                total += int(line.split()[1]) / 1024
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its living children (``--workers``)."""
    total = 0.0
    for one in tree_pids(pid):
        fields = Path(f'/proc/{one}/stat').read_text().rsplit(')', 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    return total


def tree_pids(pid: int) -> list[int]:
    """A process and its descendants (Linux's /proc/PID/task/TID/children)."""
    found = [pid]
    for task in Path(f'/proc/{pid}/task').iterdir():
        try:
            found += [one for child in (task / 'children').read_text().split() for one in tree_pids(int(child))]
        except OSError:  # a thread or child that just ended
            pass
    return found


def start_dashboard(source: str, store_path: Path, workers: int = 1) -> tuple[subprocess.Popen[bytes], int]:
    """A dashboard process running the fsdf in ``source`` on a free port, answering /healthz."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    env = {**os.environ, 'FSDF_RESULT_STORE_URL': f'sqlite:///{store_path}', 'PYTHONPATH': source}
    # cwd: `python -m` puts it first on sys.path, before PYTHONPATH
    more = ['--workers', str(workers)] if workers > 1 else []  # (an fsdf from before --workers takes no option)
    server = subprocess.Popen([sys.executable, '-m', 'fsdf.web', '--port', str(port), *more], env=env, cwd=source)
    deadline = time.monotonic() + 120  # a store older than its indexes gets them on first open
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection('127.0.0.1', port, timeout=1)
            conn.request('GET', '/healthz')
            if conn.getresponse().status == 200:
                return server, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f'the dashboard from {source} did not answer within 120 s')


def measure(label: str, source: str, store_path: Path, args: argparse.Namespace) -> None:
    """Start a dashboard from ``source``, warm it (5 s), load it with ``args.requests`` requests, print a line."""
    server, port = start_dashboard(source, store_path, args.workers)
    try:
        paths = request_paths(port, 3000, seed=1)
        wrk = args.generator == 'wrk'
        warm = run_wrk(port, paths, args.clients, 5, Path(args.folder)) if wrk else run_threads(port, paths, 30, 600)
        memory = [rss_mb(server.pid)]
        seconds = 1.2 * args.requests / (warm.requests / warm.seconds)  # a warm-up's pace: 1.2 to reach requests
        sampler = threading.Thread(target=_sample_rss, args=(server.pid, seconds / 20, memory), daemon=True)
        cpu_before, load_before = cpu_seconds(server.pid), load_average()
        sampler.start()
        result = (run_wrk(port, paths, args.clients, seconds, Path(args.folder)) if wrk
                  else run_threads(port, paths, args.clients, args.requests))
        cpu_ms = (cpu_seconds(server.pid) - cpu_before) * 1000 / result.requests
        memory.append(rss_mb(server.pid))
    finally:
        server.terminate()
        server.wait(10)
    print(f'| {label} | {result.requests:,} | {load_before} | {result.requests / result.seconds:,.0f} | '
          f'{result.p50:.1f} | {result.p99:.1f} | {cpu_ms:.2f} | '
          f'{result.generator_cpu * 1000 / result.requests:.3f} | {memory[0]:.0f} → {memory[-1]:.0f} '
          f'(min {min(memory):.0f}, max {max(memory):.0f}) |', flush=True)
    print(f'    RSS samples MB: {" ".join(f"{m:.0f}" for m in memory)}', flush=True)


def _sample_rss(pid: int, every: float, memory: list[float]) -> None:
    for _ in range(19):
        time.sleep(every)
        try:
            memory.append(rss_mb(pid))
        except OSError:
            return


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument('--records', type=int, default=1_000_000)
    cli.add_argument('--requests', type=int, default=100_000, help='requests per measured run (after a 5 s warm-up)')
    cli.add_argument('--clients', type=int, default=30)
    cli.add_argument('--store', default='', help='an existing store file to reuse (built if missing)')
    cli.add_argument('--compare-commit', default='', help='also measure fsdf as committed at this revision')
    cli.add_argument('--rounds', type=int, default=1, help='runs of each version, alternating')
    cli.add_argument('--workers', type=int, default=1, help='dashboard processes (fsdf web --workers; target: 1)')
    cli.add_argument('--generator', choices=('wrk', 'threads'), default='wrk' if shutil.which('wrk') else 'threads')
    args = cli.parse_args()
    args.folder = temp_dir('fsdf-web-bench-')
    store_path = Path(args.store) if args.store else Path(args.folder) / 'runs.sqlite'
    if not store_path.exists():
        build(store_path, args.records)
    versions = [('this tree', str(REPO))]
    if args.compare_commit:
        versions.insert(0, (f'fsdf@{short_rev(args.compare_commit)}', export_commit(args.compare_commit)))
    print(machine_description())
    print(f'{args.clients} clients, generator {args.generator}, {args.workers} dashboard process(es); '
          f'store {store_path}')
    print('| version | requests | load average | q/s | p50 ms | p99 ms | dashboard CPU ms/request | '
          'generator CPU ms/request | RSS MB start → end |\n|---|---|---|---|---|---|---|---|---|')
    for round_index in range(args.rounds):
        for label, source in (versions if round_index % 2 == 0 else versions[::-1]):
            measure(label, source, store_path, args)


if __name__ == '__main__':
    main()
