"""Shared fixtures. Settings are fixed before fsdf is imported: no config file, SQLite in a temp dir."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

_STATE = Path(tempfile.mkdtemp(prefix='fsdf-tests-'))
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)
os.environ['FSDF_CONFIG_FILE'] = '0'
os.environ['FSDF_PERSIST_QUEUE_PATH'] = str(_STATE / 'persist_queue')
os.environ['FSDF_LOG_PATH'] = str(_STATE / 'logs')

import fsdf  # noqa: E402  (after the environment above)
from helpers import default_signals  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Seconds the slowest modules of the parallel part take, each run alone (measured 2026-11-26, servers'
# start included). scripts/test.sh runs that part with --dist loadfile --no-loadscope-reorder: xdist then
# hands whole modules to its workers in collection order, and the hook below puts the longest first,
# so the short ones fill the end and the workers finish close together. (xdist's own order, by number
# of tests, put modules of a few long tests last, such as test_partition's one test of 35 s, while the
# other worker had nothing left to do.) A module not listed counts as short: list a new one of over ~10 s.
MODULE_SECONDS = {
    'test_broker_interface.py': 108, 'test_kafka_broker.py': 120, 'test_redis_brokers.py': 77,
    'test_sql_broker.py': 56, 'test_web_api.py': 47, 'test_rabbitmq_broker.py': 44, 'test_poison.py': 41,
    'test_nats_broker.py': 39, 'test_web_browser.py': 37, 'test_partition.py': 36, 'test_cli.py': 35,
    'test_publish_group.py': 33, 'test_redis_controls.py': 30, 'test_fuzz.py': 30, 'test_runtime.py': 28,
    'test_delayed.py': 23, 'test_library_internals.py': 22, 'test_main_thread_end.py': 19,
    'test_processes.py': 16, 'test_middleware.py': 15, 'test_mongo_broker.py': 14,
    'test_kombu_amqp_interface.py': 14, 'test_publish_retry.py': 13, 'test_queue_names.py': 12,
    'test_consume.py': 12, 'test_scheduling.py': 12, 'test_zeromq_broker.py': 11, 'test_broker_policies.py': 11,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules of MODULE_SECONDS first, the longest first; a module's tests keep their order, and
    so do the modules not listed (the sort is stable)."""
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.path.name, 0.0))


@pytest.fixture
def queue_name(request: pytest.FixtureRequest) -> str:
    """A queue name no other test uses."""
    return f'{request.node.name[:40]}_{uuid.uuid4().hex[:8]}'.replace('[', '_').replace(']', '_')


@pytest.fixture
def run_script(tmp_path: Path):
    """Start a Python script (given as text) in a new process with the test environment; returns Popen.

    Whatever the test's outcome, the scripts and every process they started are killed afterwards,
    so a failed test leaves no consumer running into the next ones.
    """
    started: list[subprocess.Popen] = []

    def start(source: str, *args: str, **popen_kwargs) -> subprocess.Popen:
        path = tmp_path / f'script_{uuid.uuid4().hex[:6]}.py'
        path.write_text(textwrap.dedent(source))
        env = {**os.environ, 'PYTHONPATH': str(ROOT), 'PYTHONUNBUFFERED': '1'}
        popen_kwargs.setdefault('preexec_fn', default_signals)
        process = subprocess.Popen([sys.executable, str(path), *args], env=env, cwd=tmp_path, **popen_kwargs)
        started.append(process)
        return process

    yield start
    import psutil
    for process in started:
        try:
            tree = psutil.Process(process.pid)
            doomed = [*tree.children(recursive=True), tree]
        except psutil.NoSuchProcess:
            continue
        for member in doomed:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(doomed, timeout=10)


@pytest.fixture(params=[fsdf.BrokerEnum.LOCAL_PYTHON_QUEUE, fsdf.BrokerEnum.PERSISTQUEUE],
                ids=['local', 'persist'])
def broker_kind(request: pytest.FixtureRequest) -> fsdf.BrokerEnum:
    """Each broker that needs no server; a server broker's test module overrides it with its own kinds."""
    return request.param


@pytest.fixture
def fsdf_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog, named for what the tests read from it: fsdf's loggers propagate, so caplog sees them as it is."""
    return caplog


REDIS_KINDS = (fsdf.BrokerEnum.REDIS, fsdf.BrokerEnum.REDIS_ACK_ABLE, fsdf.BrokerEnum.RedisBrpopLpush,
               fsdf.BrokerEnum.REDIS_STREAM)


@pytest.fixture
def runtime():
    """A fresh fsdf runtime as the default for one test, closed after it: the test's consumers stop, its
    brokers and clients close, and in-process queues and results start empty."""
    from fsdf.runtime import Runtime, set_default_runtime
    fresh = Runtime()
    previous = set_default_runtime(fresh)
    try:
        yield fresh
    finally:
        fresh.close(grace=2)
        set_default_runtime(previous)


def _stop_background_brokers(*kinds: fsdf.BrokerEnum) -> None:
    """Stop the consumers of these kinds and close their brokers before their server stops, so none
    polls or logs errors after."""
    from fsdf.runtime import default_runtime
    runtime = default_runtime()
    runtime.stop_consumers(grace=2, consumers=[c for c in runtime.consumers() if c.broker_kind in kinds])
    for (kind, _), broker in runtime.brokers().items():
        if kind in kinds:
            broker.close()


def _point_fsdf_at(setting: str, value: str) -> None:
    """Set a connection setting here and for the scripts tests start (they inherit the environment)."""
    os.environ[f'FSDF_{setting}'] = value
    fsdf.patch_frame_config(**{setting: value})


@pytest.fixture(scope='session')
def redis_server():
    """A redis-server on loopback for the whole session (fails in CI, skips locally if it cannot start)."""
    from servers._server_process import need
    from servers.redis_server import RedisServer
    server = need(lambda: RedisServer().start())
    _point_fsdf_at('REDIS_URL', server.url)
    yield server
    _stop_background_brokers(*REDIS_KINDS, fsdf.BrokerEnum.KOMBU)
    server.stop()


@pytest.fixture(scope='session')
def rabbitmq_server():
    """A RabbitMQ node on loopback for the whole session (fails in CI, skips locally if it cannot start)."""
    from servers._server_process import need
    from servers.rabbitmq_server import RabbitMQServer
    server = need(lambda: RabbitMQServer().start())
    _point_fsdf_at('RABBITMQ_URL', server.url)
    yield server
    _stop_background_brokers(fsdf.BrokerEnum.RABBITMQ_AMQPSTORM, fsdf.BrokerEnum.RABBITMQ_PIKA,
                             fsdf.BrokerEnum.KOMBU)
    server.stop()


@pytest.fixture(scope='session')
def mongo_server():
    """A MongoDB-wire server (nx-27017, a compatible server) on loopback for the whole session."""
    from servers._server_process import need
    from servers.mongo_server import MongoServer
    server = need(lambda: MongoServer().start())
    _point_fsdf_at('MONGO_CONNECT_URL', server.url)
    yield server
    _stop_background_brokers(fsdf.BrokerEnum.MONGOMQ)
    server.stop()


@pytest.fixture(scope='module')
def kafka_server():
    """A Kafka-protocol broker (a compatible server) on loopback for one test module.

    Per module, not per session: Kafka consumers keep polling until closed, and a server left
    serving them costs a core for the rest of the suite.
    """
    from servers._server_process import need
    from servers.kafka_server import KafkaServer
    server = need(lambda: KafkaServer().start())
    _point_fsdf_at('KAFKA_BOOTSTRAP_SERVERS', server.bootstrap_servers)
    yield server
    _stop_background_brokers(fsdf.BrokerEnum.KAFKA, fsdf.BrokerEnum.CONFLUENT_KAFKA)
    server.stop()


def _forget_sql_engines() -> None:
    """Close the SQLACHEMY brokers and their engines, so no pooled connection outlives its server."""
    _stop_background_brokers(fsdf.BrokerEnum.SQLACHEMY)
    from fsdf.runtime import default_runtime
    default_runtime().close_shared(lambda key: isinstance(key, tuple) and key[0] == 'sql')


@pytest.fixture(scope='session')
def postgres_server():
    """A PostgreSQL server on loopback for the whole session (fails in CI, skips locally if it cannot start).

    It does not point fsdf at itself: tests that run on several databases set SQLACHEMY_ENGINE_URL.
    """
    from servers._server_process import need
    from servers.postgres_server import PostgresServer
    server = need(lambda: PostgresServer().start())
    yield server
    _forget_sql_engines()
    server.stop()


@pytest.fixture(scope='session')
def mariadb_server():
    """A MariaDB server on loopback for the whole session (fails in CI, skips locally if it cannot start)."""
    from servers._server_process import need
    from servers.mariadb_server import MariaDBServer
    server = need(lambda: MariaDBServer().start())
    yield server
    _forget_sql_engines()
    server.stop()


@pytest.fixture(scope='session')
def nats_server():
    """A nats-server with JetStream on loopback for the whole session (fails in CI, skips locally if it
    cannot start)."""
    from servers._server_process import need
    from servers.nats_server import NatsServer
    server = need(lambda: NatsServer().start())
    _point_fsdf_at('NATS_URL', server.url)
    yield server
    _stop_background_brokers(fsdf.BrokerEnum.NATS)
    from fsdf.runtime import default_runtime
    default_runtime().close_shared(lambda key: isinstance(key, tuple) and key[0] == 'nats')
    server.stop()
