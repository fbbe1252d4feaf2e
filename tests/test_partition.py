"""A network partition on REDIS_ACK_ABLE (issue 18): a consumer in its own network namespace loses its
path to Redis for 30 s while it holds messages. Another consumer recovers them within 20 s; when the
partition heals the first neither crashes nor acks what it no longer owns (it consumes again);
duplicates are counted and nothing is lost.

The namespace reaches Redis over a veth pair whose two ends get addresses from the documentation
range 192.0.2.0/24 that exist only inside this test; no packet leaves the machine. Needs root and
``ip`` (iproute2); skipped with the reason where namespaces cannot be created.
"""
from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import pytest
import redis

from fsdf import message

from helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
PARTITION_SECONDS = 30
RECOVERY_LIMIT_SECONDS = 20
TASK_SECONDS = 2.0

CONSUMER = '''
import os, sys, time
from fsdf import BrokerEnum, task_deco
queue, record, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])

def note(event, x):
    with open(record, 'a') as f:  # one short O_APPEND write per line: lines of two processes never mix
        f.write(f'{os.getpid()} {event} {x}\\n')

@task_deco(queue, broker_kind=BrokerEnum.REDIS_ACK_ABLE, concurrent_num=workers, max_retry_times=0)
def work(x, seconds):
    note('start', x)
    time.sleep(seconds)
    note('done', x)

work.consume()
'''


def _why_no_namespaces() -> Optional[str]:
    """None if this process can create network namespaces, else why not."""
    if not shutil.which('ip'):
        return '`ip` (iproute2) is not installed: run tests/servers/install.sh'
    if os.geteuid() != 0:
        return 'creating network namespaces needs root'
    probe = f'fsdf-probe-{os.getpid()}'
    made = subprocess.run(['ip', 'netns', 'add', probe], capture_output=True, text=True)
    if made.returncode:
        return f'cannot create a network namespace: {made.stderr.strip()}'
    subprocess.run(['ip', 'netns', 'delete', probe], capture_output=True)
    return None


class Veth(NamedTuple):
    """A namespace joined to the host by a veth pair: ``host_ip`` on the host end, ``inside_ip`` in it."""

    namespace: str
    host_link: str
    host_ip: str
    inside_ip: str


def _ip(*args: str) -> None:
    subprocess.run(['ip', *args], check=True, capture_output=True)


@pytest.fixture
def test_net() -> Iterator[Veth]:
    reason = _why_no_namespaces()
    if reason:
        pytest.skip(reason)
    tag = f'{os.getpid() % 100000}'
    # A /30 of the documentation range per test process, so two runs on one machine do not clash.
    base = 4 * (os.getpid() % 63)
    net = Veth(f'fsdf-part-{tag}', f'fsdfh{tag}', f'192.0.2.{base + 1}', f'192.0.2.{base + 2}')
    inside_link = f'fsdfn{tag}'
    try:
        _ip('netns', 'add', net.namespace)
        _ip('link', 'add', net.host_link, 'type', 'veth', 'peer', 'name', inside_link)
        _ip('link', 'set', inside_link, 'netns', net.namespace)
        _ip('addr', 'add', f'{net.host_ip}/30', 'dev', net.host_link)
        _ip('link', 'set', net.host_link, 'up')
        for command in (('addr', 'add', f'{net.inside_ip}/30', 'dev', inside_link),
                        ('link', 'set', inside_link, 'up'), ('link', 'set', 'lo', 'up')):
            _ip('netns', 'exec', net.namespace, 'ip', *command)
        yield net
    finally:
        subprocess.run(['ip', 'link', 'delete', net.host_link], capture_output=True)  # takes its peer along
        subprocess.run(['ip', 'netns', 'delete', net.namespace], capture_output=True)


def _records(path: Path) -> list[tuple[int, str, int]]:
    if not path.exists():
        return []
    return [(int(pid), event, int(x)) for pid, event, x in (line.split() for line in path.read_text().splitlines())]


def test_partitioned_consumer_loses_its_messages_to_another_and_comes_back_clean(
        test_net: Veth, tmp_path: Path) -> None:
    from servers._server_process import need
    from servers.redis_server import RedisServer
    server = need(lambda: RedisServer(port=16479, also_bind=(test_net.host_ip,)).start())
    processes: list[subprocess.Popen] = []
    client = redis.Redis(port=server.port, decode_responses=True)
    queue = f'partition_{uuid.uuid4().hex[:8]}'
    record = tmp_path / 'record.txt'
    script = tmp_path / 'consumer.py'
    script.write_text(CONSUMER)

    def start_consumer(workers: int, url: str, *prefix: str) -> subprocess.Popen:
        env = {**os.environ, 'PYTHONPATH': f'{ROOT}:{ROOT / "tests"}', 'PYTHONUNBUFFERED': '1',
               'FSDF_CONFIG_FILE': '0', 'FSDF_REDIS_URL': url}
        process = subprocess.Popen([*prefix, sys.executable, str(script), queue, str(record), str(workers)],
                                   env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=open(tmp_path / f'consumer{len(processes)}.log', 'w'))
        processes.append(process)
        return process

    def push(xs: range) -> None:
        client.lpush(queue, *(message.encode({'x': x, 'seconds': TASK_SECONDS}, {'task_id': f't{x}'}) for x in xs))

    try:
        first = start_consumer(4, f'redis://{test_net.host_ip}:{server.port}/0',
                               'ip', 'netns', 'exec', test_net.namespace)
        push(range(16))
        assert wait_until(lambda: sum(e == 'start' for _, e, _ in _records(record)) >= 4, timeout=15)
        held = {x for _, e, x in _records(record) if e == 'start'}
        _ip('link', 'set', test_net.host_link, 'down')  # the partition: the first consumer's path to Redis is gone
        cut_at = time.monotonic()
        second = start_consumer(8, f'redis://127.0.0.1:{server.port}/0')
        ran_by_second = lambda: {x for pid, e, x in _records(record) if pid == second.pid and e == 'done'}  # noqa: E731
        assert wait_until(lambda: held <= ran_by_second(), timeout=RECOVERY_LIMIT_SECONDS + TASK_SECONDS + 2)
        recovered_after = time.monotonic() - cut_at
        assert wait_until(lambda: len({x for _, e, x in _records(record) if e == 'done'}) == 16, timeout=10)
        time.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - cut_at)))  # the partition lasts 30 s
        _ip('link', 'set', test_net.host_link, 'up')
        second.terminate()  # now only the first can run what comes next: it must be consuming again
        assert second.wait(15) == 0
        push(range(100, 104))
        assert wait_until(lambda: {100, 101, 102, 103} <= {x for pid, e, x in _records(record)
                                                           if pid == first.pid and e == 'done'}, timeout=40)
        assert first.poll() is None, 'the partitioned consumer crashed'
        assert wait_until(lambda: client.llen(queue) == 0 and not any(
            client.hlen(key) for key in client.scan_iter(f'fsdf:unacked:{queue}:*')), timeout=10)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        server.stop()
    done = collections.Counter(x for _, e, x in _records(record) if e == 'done')
    assert set(done) == set(range(16)) | set(range(100, 104))  # nothing lost
    duplicates = {x: n for x, n in done.items() if n > 1}
    print(f'partition: recovered in {recovered_after:.1f} s; duplicates {len(duplicates)} {sorted(duplicates)}')
    assert recovered_after < RECOVERY_LIMIT_SECONDS + TASK_SECONDS
    assert set(duplicates) <= held  # only what the partitioned consumer held ran twice
    assert all(n == 2 for n in duplicates.values())
