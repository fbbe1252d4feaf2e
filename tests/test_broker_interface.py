"""The broker contract at the interface: each method of ``fsdf.brokers.base.Broker`` called directly, on every
built broker kind (huey's ``StorageTests`` shape).

Each test asserts what ``base.py`` promises; where a kind declares a difference (a ClassVar such as
``requeue_to_front``), the test reads it and asserts that kind's side. The end-to-end contract
(``broker_contract.py``) runs consumers; this one calls ``publish``, ``fetch``, ``ack``, ``requeue``,
``requeue_many``, ``count``, ``purge``, ``publish_delayed*``, ``dead_letter`` and ``close`` itself.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, Optional

import pytest

from fsdf import BrokerEnum
from fsdf.brokers import Broker, BrokerClosedError, Delivery, broker_class

# kind -> the session fixture that starts its server (None: it needs none)
SERVERS: dict[BrokerEnum, Optional[str]] = {
    BrokerEnum.LOCAL_PYTHON_QUEUE: None,
    BrokerEnum.PERSISTQUEUE: None,
    BrokerEnum.REDIS: 'redis_server',
    BrokerEnum.REDIS_ACK_ABLE: 'redis_server',
    BrokerEnum.RedisBrpopLpush: 'redis_server',
    BrokerEnum.REDIS_STREAM: 'redis_server',
    BrokerEnum.RABBITMQ_AMQPSTORM: 'rabbitmq_server',
    BrokerEnum.RABBITMQ_PIKA: 'rabbitmq_server',
    BrokerEnum.KAFKA: 'kafka_server',  # CONFLUENT_KAFKA is the same class
    BrokerEnum.MONGOMQ: 'mongo_server',
    BrokerEnum.SQLACHEMY: 'sql_database',  # PostgreSQL here; test_sql_broker.py runs SQLite and MariaDB as well
    BrokerEnum.NATS: 'nats_server',
    BrokerEnum.KOMBU: 'kombu_on_redis',  # test_kombu_broker.py runs these on kombu's AMQP transport as well
}
OpenBroker = Callable[[], Broker]


@pytest.fixture
def sql_database(postgres_server) -> Iterator[object]:
    """SQLACHEMY pointed at the suite's PostgreSQL for one test, then back to what it was."""
    from conftest import _point_fsdf_at
    from fsdf.config import settings
    before = settings.SQLACHEMY_ENGINE_URL
    _point_fsdf_at('SQLACHEMY_ENGINE_URL', postgres_server.url)
    yield postgres_server
    _point_fsdf_at('SQLACHEMY_ENGINE_URL', before or '')


@pytest.fixture
def kombu_on_redis(redis_server) -> Iterator[object]:
    """KOMBU pointed at the suite's Redis for one test, then back to what it was."""
    from conftest import _point_fsdf_at
    from fsdf.config import settings
    before = settings.KOMBU_URL
    _point_fsdf_at('KOMBU_URL', redis_server.url)
    yield redis_server
    _point_fsdf_at('KOMBU_URL', before)


@pytest.fixture(params=list(SERVERS), ids=[kind.name.lower() for kind in SERVERS])
def broker_kind(request: pytest.FixtureRequest) -> BrokerEnum:
    """Each built broker kind, with its server started."""
    if SERVERS[request.param]:
        request.getfixturevalue(SERVERS[request.param])
    return request.param


@pytest.fixture
def open_broker(broker_kind: BrokerEnum, queue_name: str) -> Iterator[OpenBroker]:
    """Opens a new broker instance of the test's queue (as another process would have); all closed after."""
    opened: list[Broker] = []

    def open_one() -> Broker:
        opened.append(broker_class(broker_kind)(queue_name))
        return opened[-1]

    yield open_one
    for broker in opened:
        broker.close()


@pytest.fixture
def broker(open_broker: OpenBroker) -> Broker:
    """A broker of a queue no other test uses."""
    return open_broker()


def text(delivery: Delivery) -> str:
    body = delivery.body
    return body.decode() if isinstance(body, bytes) else body


def take(broker: Broker, count: int, timeout: float = 20.0) -> list[Delivery]:
    """Fetch until ``count`` messages came or ``timeout`` s passed (Kafka hands a batch over in parts)."""
    taken: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(taken) < count and (remaining := deadline - time.monotonic()) > 0:
        taken += broker.fetch(count - len(taken), min(remaining, 2.0))
    return taken


def bodies(deliveries: list[Delivery]) -> list[str]:
    return [text(delivery) for delivery in deliveries]


def in_fetch_order(broker: Broker, fetched: list[str], expected: list[str]) -> None:
    """``fetched`` is ``expected``, in that order where the kind promises order (``fifo``)."""
    assert (fetched if broker.fifo else sorted(fetched)) == (expected if broker.fifo else sorted(expected))


def joined(broker: Broker) -> None:
    """Make the first fetch, which on Kafka joins the consumer group: a wait no later fetch has (and
    asks for 10, as RabbitMQ sizes its prefetch by the first fetch: see the growth test below)."""
    broker.fetch(10, 0.2)


def test_publish_and_publish_many_are_fetched_in_their_order(broker: Broker) -> None:
    broker.publish('{"n": 1}')
    broker.publish_many(['{"n": 2}', '{"n": 3}', '{"n": 4}'])
    taken = take(broker, 4)
    in_fetch_order(broker, bodies(taken), ['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}'])
    for delivery in taken:
        broker.ack(delivery)


def test_fetch_takes_at_most_max_count_and_leaves_the_rest(open_broker: OpenBroker) -> None:
    first = open_broker()
    first.publish_many([f'{{"n": {n}}}' for n in range(5)])
    taken = take(first, 3)
    assert len(taken) == 3
    for delivery in taken:
        first.ack(delivery)
    first.close()  # on Kafka, so the next one need not wait for this member to leave the group
    rest = take(open_broker(), 2)
    assert sorted(bodies(taken + rest)) == sorted(f'{{"n": {n}}}' for n in range(5))  # none twice, none lost


def test_a_fetch_for_more_than_before_gets_the_waiting_messages(broker: Broker) -> None:
    # RabbitMQ sizes its prefetch by the first fetch; a later, bigger one must grow it (qos is channel-wide).
    broker.publish_many(['{"n": 1}', '{"n": 2}', '{"n": 3}'])
    first = take(broker, 1)
    more = take(broker, 2, timeout=2)  # the first is not settled yet
    assert sorted(bodies(first + more)) == ['{"n": 1}', '{"n": 2}', '{"n": 3}']


def test_an_empty_fetch_waits_its_timeout_then_returns_nothing(broker: Broker) -> None:
    joined(broker)
    began = time.monotonic()
    assert broker.fetch(5, 0.3) == []
    assert 0.27 <= time.monotonic() - began < 0.3 + 6  # Kafka looks for unread messages for up to 5 s more


def test_a_fetch_returns_as_soon_as_a_message_arrives(open_broker: OpenBroker) -> None:
    consumer, publisher = open_broker(), open_broker()
    joined(consumer)
    timer = threading.Timer(0.2, publisher.publish, args=('{"late": 1}',))
    timer.start()
    began = time.monotonic()
    taken = consumer.fetch(5, 20)
    timer.join()
    assert bodies(taken) == ['{"late": 1}'] and time.monotonic() - began < 3


def test_settled_messages_never_come_back(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish_many(['{"acked": 1}', '{"dead": 1}'])
    acked, dead = sorted(take(broker, 2), key=text)
    broker.ack(acked)
    broker.dead_letter(dead, '{"dead": 1, "why": "test"}')
    assert bodies(take(broker.dlq, 1)) == ['{"dead": 1, "why": "test"}']
    broker.close()  # sends batched acks
    other = open_broker()
    other.recover_abandoned()  # would return the closed consumer's unsettled messages
    assert other.fetch(5, 0.5) == [] and other.count() == 0


def test_ack_many_settles_every_message_it_is_given(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish_many(['{"n": 1}', '{"n": 2}', '{"n": 3}'])
    broker.ack_many(take(broker, 3))  # the runner acks a batch of successes at once
    broker.close()  # sends batched acks
    other = open_broker()
    other.recover_abandoned()  # would return the closed consumer's unsettled messages
    assert other.fetch(5, 0.5) == [] and other.count() == 0


def test_a_message_taken_and_not_settled_comes_back_after_close(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish('{"held": 1}')
    assert len(take(broker, 1)) == 1
    broker.close()
    other = open_broker()
    other.recover_abandoned()
    expected = ['{"held": 1}'] if other.at_least_once else []
    assert bodies(take(other, 1, timeout=20 if other.at_least_once else 0.5)) == expected


# The order after a requeue is read by another consumer: one that fetched ahead (RabbitMQ's prefetch)
# holds the later messages already, wherever the requeued one goes.
def test_requeue_gives_the_message_back_at_the_declared_end(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish('{"n": 1}')
    broker.publish('{"n": 2}')
    first = take(broker, 1)
    assert len(first) == 1
    broker.requeue(first[0])
    broker.close()
    requeued, other = text(first[0]), {'{"n": 1}', '{"n": 2}'} - {text(first[0])}
    expected = [requeued, *other] if broker.requeue_to_front else [*other, requeued]
    in_fetch_order(broker, bodies(take(open_broker(), 2)), expected)


def test_requeue_many_gives_messages_back_in_their_order_at_the_declared_end(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish_many(['{"n": 1}', '{"n": 2}', '{"n": 3}'])
    given_back = take(broker, 2)
    broker.requeue_many(given_back)
    broker.close()
    rest = sorted({'{"n": 1}', '{"n": 2}', '{"n": 3}'} - set(bodies(given_back)))
    expected = bodies(given_back) + rest if broker.requeue_many_to_front else rest + bodies(given_back)
    in_fetch_order(broker, bodies(take(open_broker(), 3)), expected)


def test_count_is_waiting_messages_not_delayed_ones(broker: Broker) -> None:
    broker.publish_many(['{"n": 1}', '{"n": 2}', '{"n": 3}'])
    broker.publish_delayed('{"later": 1}', time.time() + 60)
    assert broker.count() == 3
    [taken] = take(broker, 1)
    assert broker.count() == (3 if broker.count_includes_taken else 2)
    broker.ack(taken)


CANNOT_COUNT_DELAYED = {BrokerEnum.RABBITMQ_AMQPSTORM, BrokerEnum.RABBITMQ_PIKA, BrokerEnum.KAFKA, BrokerEnum.NATS,
                        BrokerEnum.KOMBU}
"""Kinds whose delayed messages sit where fsdf cannot count them (``count_delayed`` is None), as base.py says."""


def test_count_delayed_counts_held_messages_until_they_wait(broker: Broker, broker_kind: BrokerEnum) -> None:
    broker.publish('{"n": 1}')
    due = time.time() + 2.0
    broker.publish_delayed_many(['{"d": 1}', '{"d": 2}'], due)
    delayed = broker.count_delayed()
    assert (delayed is None) == (broker_kind in CANNOT_COUNT_DELAYED)
    if delayed is None:
        return
    assert (delayed, broker.count()) == (2, 1) or time.time() >= due  # (a loaded machine may get here late)
    time.sleep(max(0.0, due - time.time()))  # the due time itself is what is awaited
    taken = take(broker, 1)  # some kinds move due messages to the waiting ones when a consumer fetches
    assert (broker.count_delayed(), broker.count()) == (0, 2)
    broker.ack(taken[0])


def test_purge_removes_waiting_messages_and_the_declared_delayed_ones(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish_many(['{"n": 1}', '{"n": 2}'])
    taken: list[Delivery] = []
    if broker.purge_while_consuming:
        taken = take(broker, 1)
        assert len(taken) == 1
    due = time.time() + 0.5
    broker.publish_delayed('{"delayed": 1}', due)  # no fetch before the purge: it cannot be taken early
    broker.purge()
    assert broker.count() == 0
    for delivery in taken:
        broker.ack(delivery)  # a taken message stays with its consumer
    consumer = broker if broker.purge_while_consuming else open_broker()
    # Kinds that move due messages themselves do so within 0.1 s; Kafka's delay topics need a hop or two.
    arrived = bodies(take(consumer, 1, timeout=due - time.time() + (0.5 if broker.purge_includes_delayed else 10)))
    assert arrived == ([] if broker.purge_includes_delayed else ['{"delayed": 1}'])


def test_a_delayed_message_comes_when_due_and_never_before(broker: Broker) -> None:
    joined(broker)
    due = time.time() + 0.8
    broker.publish_delayed_many(['{"d": 1}', '{"d": 2}'], due)
    assert broker.count() == 0 or time.time() >= due
    early = broker.fetch(2, 0.3)
    assert not early or time.time() >= due  # (a loaded machine may reach here after the due time)
    # What that fetch took counts: on Kafka a fetch outlives its timeout while the group is still being joined,
    # so on a loaded machine it may return the messages once due (it did, 1 run in 20 with two busy loops).
    taken = early + take(broker, 2 - len(early), timeout=due - time.time() + 10)
    assert time.time() >= due and sorted(bodies(taken)) == ['{"d": 1}', '{"d": 2}']


def test_a_delayed_message_already_due_is_queued_at_once(broker: Broker) -> None:
    broker.publish_delayed_many(['{"d": 1}'], time.time() - 1)
    assert bodies(take(broker, 1, timeout=5)) == ['{"d": 1}']


def test_after_close_fetch_takes_nothing_and_publishing_works_as_declared(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish('{"n": 1}')
    broker.close()
    began = time.monotonic()
    assert broker.fetch(5, 5) == [] and time.monotonic() - began < 1
    if broker.publishes_after_close:
        broker.publish('{"n": 2}')
        assert broker.count() >= 1
    else:
        with pytest.raises(BrokerClosedError):
            broker.publish('{"n": 2}')
        with pytest.raises(BrokerClosedError):
            broker.count()
    broker.close()  # again: harmless
    other = open_broker()
    expected = 2 if broker.publishes_after_close else 1
    assert len(take(other, expected)) == expected  # the closed one took nothing
