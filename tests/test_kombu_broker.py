"""KOMBU on kombu's Redis and AMQP (RabbitMQ) transports, against the suite's real servers."""
from __future__ import annotations

import json
import time
from typing import Iterator

import pytest

from fsdf import BrokerEnum, task_deco
from fsdf.brokers import broker_class, get_broker
from fsdf.brokers.kombu_broker import KombuAmqpBroker, KombuRedisBroker, transport_class
from helpers import every_task_runs_after_a_kill_9

KOMBU = BrokerEnum.KOMBU
# kombu's Redis transport under the parallel part's load: a drain's two empty fetches came while 69 of 500
# messages were still on their way, and delays ran 1.1 s late. Run alone, after the parallel part.
pytestmark = pytest.mark.timing


def _point_kombu_at(url: str, options: str = '') -> None:
    from conftest import _point_fsdf_at
    _point_fsdf_at('KOMBU_URL', url)
    _point_fsdf_at('KOMBU_TRANSPORT_OPTIONS', options)


@pytest.fixture(params=['redis', 'amqp'])
def kombu_transport(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each transport: KOMBU_URL points at its server here and in the scripts the test starts."""
    from fsdf.config import settings
    before = settings.KOMBU_URL
    server = request.getfixturevalue('redis_server' if request.param == 'redis' else 'rabbitmq_server')
    _point_kombu_at(server.url)
    yield request.param
    _point_kombu_at(before)


@pytest.fixture
def broker_kind(kombu_transport: str) -> BrokerEnum:
    """KOMBU on each transport; named like conftest's fixture so the shared consume-path tests run on it."""
    return KOMBU


from broker_contract import *  # noqa: E402,F401,F403  (the broker contract, on both transports)
from test_delayed import test_a_raw_message_with_a_future_eta_is_delayed_by_the_consumer  # noqa: E402,F401
from test_delayed import test_delayed_calls_run_on_time, test_push_many_with_countdown  # noqa: E402,F401


def test_the_url_picks_the_transport() -> None:
    assert transport_class('redis://h:1/0') is KombuRedisBroker
    assert transport_class('amqp://u:p@h:5672//') is KombuAmqpBroker
    with pytest.raises(ValueError, match='SQLAlchemy transport is not offered.*SQLACHEMY'):
        transport_class('sqla+sqlite:///x.db')
    with pytest.raises(ValueError, match=r"u:\*\*\*@h.*offers kombu transports"):
        transport_class('zookeeper://u:secret@h/')


def test_transport_options_must_be_a_json_object(redis_server) -> None:
    _point_kombu_at(redis_server.url, '[1, 2]')
    try:
        with pytest.raises(ValueError, match='JSON object'):
            broker_class(KOMBU)('q_options')
    finally:
        _point_kombu_at(redis_server.url)


def test_the_amqp_transport_shares_queues_with_the_rabbitmq_kinds(queue_name: str, rabbitmq_server) -> None:
    """kombu on RabbitMQ declares the same queue as RABBITMQ_AMQPSTORM: one publishes, the other consumes."""
    _point_kombu_at(rabbitmq_server.url)
    get_broker(BrokerEnum.RABBITMQ_AMQPSTORM, queue_name).publish('{"from": "amqpstorm"}')
    kombu_broker = get_broker(KOMBU, queue_name)
    taken = kombu_broker.fetch(1, 5)
    assert [json.loads(d.body) for d in taken] == [{'from': 'amqpstorm'}]
    kombu_broker.ack(taken[0])


def test_a_redis_delayed_message_held_by_a_consumer_that_closes_goes_back(queue_name: str, redis_server) -> None:
    _point_kombu_at(redis_server.url)
    holder = KombuRedisBroker(queue_name)
    holder.publish_delayed('{"later": 1}', time.time() + 1.5)
    assert holder.fetch(1, 0.3) == []  # it now holds the delayed message in memory
    assert len(holder.delays.held) == 1
    holder.close()
    other = KombuRedisBroker(queue_name)
    taken = []
    deadline = time.monotonic() + 10
    while not taken and time.monotonic() < deadline:
        taken = other.fetch(1, 0.5)
    assert [d.body for d in taken] == [b'{"later": 1}']
    other.ack(taken[0])
    other.close()


def test_a_redis_take_records_each_message_unacked_until_it_is_acked(queue_name: str, redis_server) -> None:
    """Taken messages sit in kombu's ``unacked`` hash (so kombu's restore finds them after a crash) until
    acked; a text that is not kombu's JSON (another program's LPUSH) is taken as its own body."""
    import redis
    _point_kombu_at(redis_server.url)
    broker = KombuRedisBroker(queue_name)
    broker.publish('{"x": 1}')
    client = redis.Redis.from_url(redis_server.url)
    client.lpush(queue_name, 'not kombu json')
    unacked_before = client.hlen('unacked')
    taken = broker.fetch(5, 2)
    assert sorted(d.body for d in taken) == [b'not kombu json', b'{"x": 1}']
    assert client.hlen('unacked') == unacked_before + 2 and client.llen(queue_name) == 0
    for delivery in taken:
        broker.ack(delivery)
    broker.close()
    assert client.hlen('unacked') == unacked_before


def test_a_bad_message_in_the_redis_delay_queue_is_dead_lettered(queue_name: str, redis_server) -> None:
    """Another program's text in ``fsdf.delay.<queue>`` reaches the queue and then its DLQ; fetching goes on."""
    import kombu
    _point_kombu_at(redis_server.url)

    @task_deco(queue_name, broker_kind=KOMBU)
    def add(a, b):
        return a + b

    with kombu.Connection(redis_server.url) as connection:
        connection.SimpleQueue(f'fsdf.delay.{queue_name}').put('not an envelope', content_type='application/json',
                                                               content_encoding='utf-8')
    add.push(1, 2)
    assert add.drain(timeout=10) == 2
    dlq = get_broker(KOMBU, f'{queue_name}_dlq')
    taken = dlq.fetch(5, 2)
    assert len(taken) == 1 and 'not an envelope' in json.dumps(json.loads(taken[0].body))
    dlq.ack(taken[0])


def test_kill_9_of_a_consumer(queue_name: str, kombu_transport: str, run_script, tmp_path) -> None:
    """2,000 tasks, the consumer killed mid-run: every task runs; duplicates are at most what it held.

    On Redis the dead consumer's messages wait in kombu's unacked hash and come back after kombu's
    visibility timeout (5 s here). kombu's own BRPOP consumer lost, in most runs, the message it had
    popped but not yet recorded as unacked; fsdf's take records it in the same step."""
    import redis
    from fsdf.config import settings

    def held_unacked() -> bool:
        return redis.Redis.from_url(settings.KOMBU_URL).hlen('unacked') > 0

    if kombu_transport == 'redis':
        _point_kombu_at(settings.KOMBU_URL, '{"visibility_timeout": 5}')
    every_task_runs_after_a_kill_9(queue_name, KOMBU, run_script, tmp_path, f'KOMBU on {kombu_transport}',
                                   held=held_unacked if kombu_transport == 'redis' else None, within=45)
