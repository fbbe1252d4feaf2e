"""The dashboard under load: N records in SQLite plus a 20,000-node tree, 30 clients on the tree and runs APIs.

One dashboard process (uvicorn, started here) serves; the load generator is this process's threads,
each with one keep-alive ``http.client`` connection, cycling over: a runs page (a random queue),
the next runs page (its cursor), a failures page, a page of 200 children of the tree's root, the
tree's root with its counts, and an in-tree search by id prefix. Reports throughput, p50/p99 (ms),
the dashboard's CPU time per request (what bounds throughput on a loaded machine: 1000 / that
is the most one core serves) and its resident memory every 1/20 of the run (flat: no per-task state).
The load generator shares the machine's cores with the dashboard.

Targets (issue 16): >= 1,000 q/s, p50 <= 20 ms, p99 <= 100 ms at 30 clients on 2 cores; memory +-10 MB.
Usage: python bench/web_load.py [--records 1000000] [--requests 100000] [--clients 30] [--store PATH]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
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

from benchlib import machine_description, temp_dir  # noqa: E402

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


def client(port: int, count: int, latencies: list[float], done: list[int], seed: int) -> None:
    rng = random.Random(seed)
    conn = http.client.HTTPConnection('127.0.0.1', port)
    cursor = None
    for i in range(count):
        path = rng.choice(urls(rng))
        if cursor and i % 6 == 0:
            path = f'/api/runs?queue=flat_q1&cursor={cursor}'
        started = time.perf_counter()
        conn.request('GET', path)
        response = conn.getresponse()
        body = response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f'{path}: {response.status} {body[:200]!r}')
        if path == '/api/runs?queue=flat_q1':
            cursor = json.loads(body)['next_cursor']
        done[0] += 1


def rss_mb(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument('--records', type=int, default=1_000_000)
    cli.add_argument('--requests', type=int, default=100_000)
    cli.add_argument('--clients', type=int, default=30)
    cli.add_argument('--store', default='', help='an existing store file to reuse (built if missing)')
    args = cli.parse_args()
    store_path = Path(args.store) if args.store else Path(temp_dir('fsdf-web-bench-')) / 'runs.sqlite'
    if not store_path.exists():
        build(store_path, args.records)
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    env = {**os.environ, 'FSDF_RESULT_STORE_URL': f'sqlite:///{store_path}', 'PYTHONPATH': str(REPO)}
    server = subprocess.Popen([sys.executable, '-m', 'fsdf.web', '--port', str(port)], env=env)
    try:
        run_load(server.pid, port, args)
    finally:
        server.terminate()
        server.wait(10)


def run_load(pid: int, port: int, args: argparse.Namespace) -> None:
    for _ in range(100):
        try:
            http.client.HTTPConnection('127.0.0.1', port, timeout=1).request('GET', '/healthz')
            break
        except OSError:
            time.sleep(0.1)
    warm: list[float] = []
    client(port, 300, warm, [0], 0)
    latencies: list[float] = []
    done = [0]
    memory = [rss_mb(pid)]
    cpu_before = cpu_seconds(pid)
    each = args.requests // args.clients
    threads = [threading.Thread(target=client, args=(port, each, latencies, done, seed))
               for seed in range(1, args.clients + 1)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(max(0.5, (time.monotonic() - started) / 20))
        memory.append(rss_mb(pid))
    elapsed = time.monotonic() - started
    cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / max(len(latencies), 1)
    latencies.sort()
    print(machine_description())
    p50, p99 = statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99)] * 1000
    print(f'{len(latencies):,} requests, {args.clients} clients, {elapsed:.1f} s: '
          f'{len(latencies) / elapsed:,.0f} q/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms')
    print(f'dashboard CPU {cpu_ms:.2f} ms a request (at most {1000 / cpu_ms:,.0f} q/s on one core)')
    print(f'dashboard RSS MB: start {memory[0]:.1f}, during {min(memory):.1f}..{max(memory):.1f}, '
          f'end {memory[-1]:.1f}; samples {" ".join(f"{m:.0f}" for m in memory)}')


if __name__ == '__main__':
    main()
