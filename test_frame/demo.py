"""The main job: publish 10,000 tasks to the SQLite broker, consume them in another process, show progress.

    bash scripts/demo.sh            # or: python -m test_frame.demo [--tasks N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# A self-contained run: its own SQLite folder, no config file written into your project.
os.environ.setdefault('FSDF_CONFIG_FILE', '0')
os.environ.setdefault('FSDF_PERSIST_QUEUE_PATH', os.path.join(tempfile.gettempdir(), 'fsdf-demo'))

from fsdf import BrokerEnum, get_publisher, task_deco  # noqa: E402

QUEUE = 'demo_multiply'


@task_deco(QUEUE, broker_kind=BrokerEnum.PERSISTQUEUE, concurrent_num=16, max_retry_times=2,
           is_print_detail_exception=False)
def multiply(x: int, y: int) -> int:
    """A trivial task that fails for one call in a thousand, so retries and dead letters show."""
    if x % 1000 == 999:
        raise ValueError(f'{x} is unlucky')
    return x * y


def consume() -> None:
    """The consumer process: drain the queue, then report its counters as JSON on stdout."""
    started = time.monotonic()
    settled = multiply.drain()
    counters = multiply.consumer.counters.snapshot()
    print(json.dumps({'settled': settled, 'seconds': time.monotonic() - started, **counters}))


def main(tasks: int) -> int:
    """Publish, start a consumer process, follow its progress, print a summary."""
    dlq = get_publisher(f'{QUEUE}_dlq', BrokerEnum.PERSISTQUEUE)
    multiply.clear()
    dlq.clear()
    started = time.monotonic()
    multiply.push_many((i, 2) for i in range(tasks))
    publish_seconds = time.monotonic() - started
    print(f'published {tasks:,} tasks to {QUEUE!r} (SQLite) in {publish_seconds:.2f} s '
          f'({tasks / publish_seconds:,.0f}/s)')

    log_path = os.path.join(os.environ['FSDF_PERSIST_QUEUE_PATH'], 'consumer.log')
    with open(log_path, 'w') as log:  # the consumer's log lines would break the progress line
        child = subprocess.Popen([sys.executable, '-m', 'test_frame.demo', 'consume'], stdout=subprocess.PIPE,
                                 stderr=log, text=True,
                                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    consume_started = time.monotonic()
    while child.poll() is None:
        _show_progress(tasks, tasks - multiply.get_message_count(), time.monotonic() - consume_started)
        time.sleep(0.25)
    _show_progress(tasks, tasks - multiply.get_message_count(), time.monotonic() - consume_started)
    print()
    if child.returncode != 0:
        print(f'consumer process failed with exit code {child.returncode}; see {log_path}')
        return 1
    report = json.loads(child.stdout.read().strip().splitlines()[-1])
    print(f"done: {report['settled']:,} settled in {report['seconds']:.2f} s "
          f"({report['settled'] / report['seconds']:,.0f} tasks/s)")
    print(f"  succeeded {report['succeeded']:,}, retried {report['retried']:,}, failed {report['failed']:,}, "
          f"dead letters {dlq.get_message_count():,} (in {QUEUE}_dlq), malformed {report['malformed']:,}")
    letters = dlq.broker.fetch(1, 1)
    if letters:
        letter = json.loads(letters[0].body)
        why = letter['extra']['dead_letter']
        print(f"  first dead letter: multiply(x={letter['x']}, y={letter['y']}) -> {why['exception_type']}: "
              f"{why['exception_message']} after {why['retries']} retries")
        dlq.broker.requeue(letters[0])
    print(f'  consumer log: {log_path}')
    return 0 if report['settled'] == tasks else 1


def _show_progress(total: int, taken: int, seconds: float) -> None:
    rate = taken / seconds if seconds > 0 else 0.0
    left = (total - taken) / rate if rate else float('inf')
    sys.stdout.write(f'\r  consuming: {taken:>7,}/{total:,} taken  {rate:>8,.0f}/s  time left {left:5.1f} s ')
    sys.stdout.flush()


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('role', nargs='?', default='main', choices=['main', 'consume'])
    parser.add_argument('--tasks', type=int, default=10_000)
    args = parser.parse_args()
    if args.role == 'consume':
        consume()
    else:
        sys.exit(main(args.tasks))
