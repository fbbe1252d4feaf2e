"""A worker imports only what it uses (issue 19: start time): no web, CLI, scheduler, RPC, other brokers'
clients, multiprocessing or asyncio in a process that consumes an embedded queue with THREADING; and
``import fsdf`` writes nothing but its config template."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs a task until its first call, then prints the modules the process has loaded.
WORKER = '''
import json, os, sys, threading
import fsdf
ran = threading.Event()
def first(x):
    ran.set()
task = fsdf.task_deco('start_imports', broker_kind=fsdf.BrokerEnum[sys.argv[1]], concurrent_num=4)(first)
task.push(1)
task.consume()
assert ran.wait(30), 'the task did not run'
print(json.dumps(sorted(sys.modules)))
os._exit(0)
'''

# Modules a THREADING worker of an embedded broker has no use for.
NOT_USED = ('fsdf.web', 'fsdf.cli', 'fsdf.scheduling', 'fsdf.rpc', 'fsdf.multiprocess', 'fsdf.brokers.redis_ack',
            'fsdf.brokers.kafka', 'fsdf.brokers.rabbitmq', 'fsdf.brokers.sql', 'fsdf.records.mongo_store',
            'multiprocessing', 'logging.handlers', 'difflib', 'ctypes', 'apscheduler', 'starlette', 'uvicorn',
            'sqlalchemy', 'redis', 'pika', 'amqpstorm', 'confluent_kafka', 'kafka', 'pymongo', 'nats', 'zmq', 'kombu',
            'gevent', 'eventlet',
            # the controls only an option brings (a time window, qps, task filtering)
            'fsdf.controls.window', 'fsdf.controls.rate', 'fsdf.controls.filtering',
            # nor an event loop, nor persist-queue (PERSISTQUEUE writes its schema with sqlite3: importing the
            # package cost a worker's start about 60 ms, asyncio with it)
            'asyncio', 'persistqueue')
# LOCAL_PYTHON_QUEUE needs no sockets or SQLite either.
NOT_USED_IN_PROCESS = ('socket', 'ssl', 'fsdf.brokers.persist_queue', 'base64', 'unicodedata')


def loaded_modules(kind: str, tmp_path, **settings: str) -> set[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith('FSDF_')}
    environ.update(PYTHONPATH=ROOT, FSDF_CONFIG_FILE='0', FSDF_PERSIST_QUEUE_PATH=str(tmp_path))
    environ.update({f'FSDF_{name}': value for name, value in settings.items()})
    done = subprocess.run([sys.executable, '-c', WORKER, kind], cwd=tmp_path, env=environ, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def imported(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The names in ``names`` that are loaded, or have a loaded submodule."""
    return [name for name in names if name in modules or any(m.startswith(f'{name}.') for m in modules)]


@pytest.mark.parametrize('kind', ['LOCAL_PYTHON_QUEUE', 'PERSISTQUEUE'])
def test_a_worker_imports_nothing_it_does_not_use(kind: str, tmp_path) -> None:
    modules = loaded_modules(kind, tmp_path)
    assert 'fsdf.consumer' in modules and 'fsdf.records' in modules  # it did consume, with records (the default)
    unused = NOT_USED + (NOT_USED_IN_PROCESS if kind == 'LOCAL_PYTHON_QUEUE' else ())
    assert imported(modules, unused) == []


def test_a_worker_without_records_or_statistics_imports_nothing_of_them(tmp_path) -> None:
    """fsdf.records' promise: nothing of it is imported by a consumer whose records and statistics are off."""
    modules = loaded_modules('LOCAL_PYTHON_QUEUE', tmp_path, RUN_STATISTICS='0')
    assert 'fsdf.consumer' in modules
    assert imported(modules, ('fsdf.records', 'sqlite3')) == []


def test_import_writes_only_the_config_template(tmp_path) -> None:
    """``import fsdf`` writes its config template into the working folder (the seed's behaviour, kept) and
    nothing else: no log folder, no queue files, nothing under the home folder."""
    work, home = tmp_path / 'project', tmp_path / 'home'
    work.mkdir()
    home.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith('FSDF_')}
    environ.update(PYTHONPATH=ROOT, HOME=str(home), PYTHONDONTWRITEBYTECODE='1')
    done = subprocess.run([sys.executable, '-c', 'import fsdf'], cwd=work, env=environ, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob('*') if path.is_file())
    assert written == ['project/distributed_frame_config.py']


# A REDIS_ACK_ABLE worker until its first call, then three connections of each client held at once, counting
# redis-py's lookups of its own version (each reads its installed metadata from disk, about 0.7 ms of CPU).
REDIS_WORKER = '''
import importlib.metadata, json, os, sys, threading
lookups = []
real_version = importlib.metadata.version
importlib.metadata.version = lambda name: (lookups.append(name), real_version(name))[1]
import fsdf
from fsdf.redis_connection import redis_client
ran = threading.Event()
def first(x):
    ran.set()
task = fsdf.task_deco('start_lookups', broker_kind=fsdf.BrokerEnum.REDIS_ACK_ABLE, concurrent_num=4)(first)
task.push(1)
task.consume()
assert ran.wait(30), 'the task did not run'
held = [redis_client(raw=raw).connection_pool.get_connection() for raw in (False, True) for _ in range(3)]
print(json.dumps({'lookups': lookups.count('redis'), 'connections': len(set(map(id, held)))}))
os._exit(0)
'''


def test_a_redis_worker_looks_up_the_client_version_once_per_client_not_per_connection(redis_server,
                                                                                        tmp_path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith('FSDF_')}
    environ.update(PYTHONPATH=ROOT, FSDF_CONFIG_FILE='0', FSDF_PERSIST_QUEUE_PATH=str(tmp_path),
                   FSDF_REDIS_URL=redis_server.url)
    done = subprocess.run([sys.executable, '-c', REDIS_WORKER], cwd=tmp_path, env=environ, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found['connections'] == 6
    assert found['lookups'] <= 2  # one per client (decoded and raw replies), not one per connection


# A REDIS_ACK_ABLE worker run until its first call, with one message published before it starts.
REDIS_FIRST_TASK = '''
import os, sys, threading
import fsdf
ran = threading.Event()
def first(x):
    ran.set()
task = fsdf.task_deco(sys.argv[1], broker_kind=fsdf.BrokerEnum.REDIS_ACK_ABLE, concurrent_num=4)(first)
task.consume()
assert ran.wait(30), 'the task did not run'
os._exit(0)
'''


def test_a_redis_worker_sends_no_needless_command_before_its_first_task(tmp_path) -> None:
    """No health-check PING ahead of each new connection's handshake, and no read of the new consumer's own
    bookkeeping (empty: it has taken nothing): round trips before the first task (issue 19).

    On a Redis of its own: the server counts every client's commands, and consumers other tests of this
    process left running (their lease checks send HKEYS) would be counted with the worker's."""
    import redis

    from servers._server_process import need
    from servers.redis_server import RedisServer
    server = need(lambda: RedisServer(port=16679).start())
    try:
        queue = f'start_round_trips_{os.getpid()}'
        client = redis.Redis.from_url(server.url)  # no health checks: it sends no PING itself
        client.lpush(queue, json.dumps({'x': 1}))
        environ = {k: v for k, v in os.environ.items() if not k.startswith('FSDF_')}
        environ.update(PYTHONPATH=ROOT, FSDF_CONFIG_FILE='0', FSDF_PERSIST_QUEUE_PATH=str(tmp_path),
                       FSDF_REDIS_URL=server.url)
        client.config_resetstat()  # the server's per-command counts start again from here
        done = subprocess.run([sys.executable, '-c', REDIS_FIRST_TASK, queue], cwd=tmp_path, env=environ,
                              capture_output=True, text=True, timeout=60)
        sent = client.info('commandstats')
        client.close()
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'cmdstat_evalsha' in sent  # it took its message
    assert [name for name in ('cmdstat_ping', 'cmdstat_hkeys') if name in sent] == []
