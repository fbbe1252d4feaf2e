"""Queue names: one rule (fsdf/names.py) plus each broker's own, checked before a name reaches a path or a key."""
from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from fsdf import BrokerEnum, get_consumer, get_publisher, task_deco
from fsdf.brokers import get_broker
from fsdf.config import settings
from fsdf.names import MAX_QUEUE_NAME_BYTES, check_queue_name
from helpers import wait_until

BAD_NAMES = {
    'traversal': '../../etc/passwd',
    'separator': 'a/b',
    'backslash': 'a\\b',
    'dotdot': '..',
    'empty': '',
    'too_long': 'q' * 300,
    'nul': 'a\x00b',
    'newline': 'a\nb',
    'reserved_leases': 'fsdf_leases',
    'reserved_upper': 'FSDF_CONSUMERS',
    'reserved_schedule': 'fsdf_schedule',
    'reserved_key': 'fsdf:unacked:x',
}
ENTRY_POINTS = {
    'task_deco': lambda name, kind: task_deco(name, broker_kind=kind)(lambda x: x),
    'get_consumer': lambda name, kind: get_consumer(name, consuming_function=lambda x: x, broker_kind=kind,
                                                    create_logger_file=True),
    'get_publisher': lambda name, kind: get_publisher(name, broker_kind=kind),
    'get_broker': lambda name, kind: get_broker(kind, name),
}


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (ValueError, OSError):  # a NUL or an over-long name cannot even be asked about
        return False


@pytest.mark.parametrize('entry', ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
@pytest.mark.parametrize('name', BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_bad_name_is_refused_before_anything_is_written(name: str, entry, broker_kind) -> None:
    # Where the name would have put the queue's SQLite file and its log file ('../..' leaves the folders).
    would_write = [settings.path('PERSIST_QUEUE_PATH') / f'{name}.sqlite', settings.path('LOG_PATH') / f'{name}.log']
    existed = [_exists(path) for path in would_write]  # fsdf's own fsdf_schedule.sqlite may, legitimately
    with pytest.raises(ValueError, match='queue name .* a queue name is 1 to 200 bytes'):
        entry(name, broker_kind)
    assert [_exists(path) for path in would_write] == existed


# Names users have today that are safe on these brokers, and the longest name, whose _dlq must work too.
GOOD_NAMES = {
    'spaces': 'a queue with spaces',
    'quotes': 'it\'s "quoted"',
    'unicode': 'ünïcødé_队列',
    'dlq_suffix': 'q_dlq',
    'longest': 'é' * (MAX_QUEUE_NAME_BYTES // 2),
    'fsdf_inside': 'my_fsdf_queue',
}


@pytest.fixture(params=[BrokerEnum.LOCAL_PYTHON_QUEUE, BrokerEnum.PERSISTQUEUE, BrokerEnum.REDIS,
                        BrokerEnum.REDIS_ACK_ABLE, BrokerEnum.REDIS_STREAM],
                ids=['local', 'persist', 'redis', 'redis_ack', 'redis_stream'])
def name_kind(request: pytest.FixtureRequest) -> BrokerEnum:
    """Embedded brokers and Redis kinds; the Redis ones start the session's Redis."""
    if request.param in (BrokerEnum.REDIS, BrokerEnum.REDIS_ACK_ABLE, BrokerEnum.REDIS_STREAM):
        request.getfixturevalue('redis_server')
    return request.param


@pytest.mark.parametrize('base', GOOD_NAMES.values(), ids=GOOD_NAMES.keys())
def test_a_good_name_runs_its_calls_and_dead_letters(base: str, name_kind) -> None:
    # A unique tail keeps runs apart; the longest name keeps its exact length.
    name = base if len(base.encode()) >= MAX_QUEUE_NAME_BYTES else f'{base} {uuid.uuid4().hex[:6]}'
    if base.endswith('_dlq'):
        name = f'{uuid.uuid4().hex[:6]}_{base}'
    seen, lock = [], threading.Lock()

    @task_deco(name, broker_kind=name_kind, max_retry_times=0, concurrent_num=2)
    def work(x):
        if x == 'fail':
            raise ValueError('goes to the dead-letter queue')
        with lock:
            seen.append(x)

    work.clear()
    work.consumer.broker.dlq.purge()
    work.push(1)
    work.push(2)
    work.push('fail')
    assert work.drain(timeout=30) == 3
    assert sorted(seen) == [1, 2]
    dlq = get_publisher(f'{name}_dlq', broker_kind=name_kind)
    assert wait_until(lambda: dlq.get_message_count() == 1, 10)
    dlq.clear()


@pytest.mark.parametrize('kind, name', [
    (BrokerEnum.KAFKA, 'a queue with spaces'),
    (BrokerEnum.KAFKA, 'ünïcødé'),
    (BrokerEnum.MONGOMQ, 'price$'),
    (BrokerEnum.MONGOMQ, 'system.users'),
    (BrokerEnum.RABBITMQ_AMQPSTORM, 'amq.direct'),
    (BrokerEnum.RABBITMQ_PIKA, 'amq.gen-x'),
    (BrokerEnum.PERSISTQUEUE, 'sqlite_master'),
], ids=['kafka_space', 'kafka_unicode', 'mongo_dollar', 'mongo_system', 'amqpstorm_amq', 'pika_amq', 'sqlite'])
def test_each_broker_adds_its_own_rule(kind: BrokerEnum, name: str) -> None:
    """Refused before any connection, so no server is needed; the same name is fine on Redis."""
    for entry in ENTRY_POINTS.values():
        with pytest.raises(ValueError, match='is not a|reserved by SQLite'):
            entry(name, kind)
    assert check_queue_name(name, BrokerEnum.REDIS) == name
