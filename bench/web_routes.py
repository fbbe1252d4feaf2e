"""The dashboard's CPU per request for each route of web_load.py's mix, in process: no server, no load generator.

The ASGI app (token and host checks, the short read path, the store, scrubbing, encoding) is called
on one event loop as uvicorn would call it, one request after another, and the process's CPU time is
read around ``--requests`` calls of each path, in a new process for each of ``--rounds`` rounds (the
median is printed, with the range). With no server and no generator sharing the cores it shows what a
change to the app saves with less noise than web_load.py, which gives throughput and latency; this
VM's speed still drifts (up to 2x within a minute), hence alternating processes and medians.
The server's own share (uvicorn, the kernel's loopback) is not in it: ~80 us a request here.

``mix`` weighs the routes as web_load.py's request_paths does (a sixth are cursor pages of runs, the
rest spread evenly over urls()). ``--compare-commit REV`` also measures fsdf as committed at REV,
alternating with this tree round by round.

Usage: python bench/web_routes.py --store runs.sqlite [--requests 200] [--rounds 9] [--compare-commit main]
(the store: web_load.py's, 1,000,000 records and a 20,000-node tree; ~20 s with a comparison.)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault('FSDF_CONFIG_FILE', '0')
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from benchlib import export_commit, load_average, short_rev  # noqa: E402

ROOT = 'benchtree'
ROUTES = {'runs of a queue': '/api/runs?queue=flat_q3', 'its failures': '/api/runs?queue=flat_q3&status=failed',
          'children (200)': f'/api/runs/{ROOT}/children', 'tree root': f'/api/tree/{ROOT}',
          'tree search': f'/api/tree/{ROOT}?task_id={ROOT}-g0042', 'newest 50': '/api/runs?limit=50'}
CURSOR_ROUTE = 'next page (cursor)'


def scope_of(path: str) -> dict[str, Any]:
    """An HTTP GET scope as uvicorn makes it, addressed to localhost."""
    route, _, query = path.partition('?')
    return {'type': 'http', 'asgi': {'version': '3.0'}, 'http_version': '1.1', 'method': 'GET', 'scheme': 'http',
            'path': route, 'raw_path': route.encode(), 'query_string': query.encode(), 'root_path': '',
            'headers': [(b'host', b'127.0.0.1:27018'), (b'user-agent', b'bench')],
            'client': ('127.0.0.1', 40000), 'server': ('127.0.0.1', 27018)}


async def call(app: Any, path: str) -> bytes:
    """One request through the app; its body (RuntimeError unless 200)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {'type': 'http.request', 'body': b'', 'more_body': False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
    await app(scope_of(path), receive, send)
    if sent[0]['status'] != 200:
        raise RuntimeError(f'{path}: {sent[0]["status"]} {sent[1].get("body", b"")[:200]!r}')
    return bytes(sent[1]['body'])


async def measure(store_path: str, requests: int, rounds: int) -> dict[str, list[float]]:
    """CPU microseconds a request of each route, one figure per round (this process's fsdf)."""
    from fsdf.records.store import open_store
    from fsdf.web.app import create_app
    app = create_app(store=open_store(f'sqlite:///{store_path}'))
    cursor = json.loads(await call(app, ROUTES['runs of a queue']))['next_cursor']
    paths = {**ROUTES, CURSOR_ROUTE: f'/api/runs?queue=flat_q3&cursor={cursor}'}
    for path in paths.values():  # warm: statements prepared, pages cached
        for _ in range(20):
            await call(app, path)
    found: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            started = time.process_time()
            for _ in range(requests):
                await call(app, path)
            found[name].append((time.process_time() - started) / requests * 1e6)
    return found


def report(label: str, found: dict[str, list[float]]) -> None:
    weights = {name: 5 / 6 / len(ROUTES) for name in ROUTES} | {CURSOR_ROUTE: 1 / 6}
    print(f'{label} (load average {load_average()})')
    for name, figures in found.items():
        print(f'  {name:20s} {statistics.median(figures):7.0f} us  ({min(figures):.0f}-{max(figures):.0f})')
    mix = sum(weights[name] * statistics.median(figures) for name, figures in found.items())
    print(f'  {"mix":20s} {mix:7.0f} us', flush=True)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument('--store', required=True, help="web_load.py's store file (it is only read)")
    cli.add_argument('--requests', type=int, default=200, help='requests of each route per round')
    cli.add_argument('--rounds', type=int, default=9)
    cli.add_argument('--compare-commit', default='', help='also measure fsdf as committed at this revision')
    cli.add_argument('--child', action='store_true', help=argparse.SUPPRESS)  # measure here, print JSON
    args = cli.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.store, args.requests, args.rounds))))
        return
    versions = [('this tree', str(REPO))]
    if args.compare_commit:
        versions.insert(0, (f'fsdf@{short_rev(args.compare_commit)}', export_commit(args.compare_commit)))
    found: dict[str, dict[str, list[float]]] = {label: {} for label, _ in versions}
    for round_index in range(args.rounds):  # a process per version and round, alternating: this VM's speed drifts
        for label, source in (versions if round_index % 2 == 0 else versions[::-1]):
            out = subprocess.run([sys.executable, __file__, '--child', '--store', args.store, '--requests',
                                  str(args.requests), '--rounds', '1'], capture_output=True, text=True,
                                 check=True, env={**os.environ, 'PYTHONPATH': source}, cwd=source)
            for name, figures in json.loads(out.stdout.splitlines()[-1]).items():
                found[label].setdefault(name, []).extend(figures)
    for label, _ in versions:
        report(label, found[label])


if __name__ == '__main__':
    main()
