"""Delayed messages on the server brokers: they wait on the broker, run no earlier than due and
within 1 s after, and a consumer holds none of them before then."""
from __future__ import annotations

import datetime as dt
import json
import os
import time

import psutil
import pytest

import test_delayed
from fsdf import BrokerEnum, get_publisher, task_deco
from fsdf.brokers import get_broker
from helpers import wait_until

pytestmark = pytest.mark.timing  # delays measured against the clock: run alone by scripts/test.sh

SERVER_OF = {
    BrokerEnum.RABBITMQ_AMQPSTORM: 'rabbitmq_server',
    BrokerEnum.RABBITMQ_PIKA: 'rabbitmq_server',
    BrokerEnum.MONGOMQ: 'mongo_server',
    BrokerEnum.KAFKA: 'kafka_server',
}


@pytest.fixture(params=list(SERVER_OF), ids=['amqpstorm', 'pika', 'mongo', 'kafka'])
def broker_kind(request: pytest.FixtureRequest) -> BrokerEnum:
    """Each server broker, with its server started; named like conftest's fixture so the delayed tests run on them."""
    request.getfixturevalue(SERVER_OF[request.param])
    return request.param


# The embedded brokers' test of batched delays, run unchanged on the server brokers. The timing
# tests below start consuming first and wait for an undelayed call, so what they time is the
# broker's delay, not how long a consumer takes to connect (seconds on a loaded 2-core machine).
test_push_many_with_countdown = test_delayed.test_push_many_with_countdown


def timed_task(queue_name: str, kind: BrokerEnum, ran: dict[str, float]):
    """A task that records when each named call ran, already consuming (a first call has run)."""
    @task_deco(queue_name, broker_kind=kind)
    def later(name):
        ran[name] = time.time()

    later.consume()
    later.pub({'name': 'warm'})
    assert wait_until(lambda: 'warm' in ran, 30)
    return later


def test_delayed_calls_run_on_time(queue_name: str, broker_kind: BrokerEnum) -> None:
    ran: dict[str, float] = {}
    later = timed_task(queue_name, broker_kind, ran)
    try:
        published = time.time()
        later.pub({'name': 'countdown'}, countdown=1.0)
        due_eta = time.time() + 1.5
        later.pub({'name': 'eta'}, eta=dt.datetime.fromtimestamp(due_eta))
        assert later.get_message_count() == 0  # they wait on the broker, not in the queue
        assert wait_until(lambda: len(ran) == 3, 10)
    finally:
        later.stop(grace=5)
    assert 1.0 <= ran['countdown'] - published < 2.0
    assert due_eta <= ran['eta'] < due_eta + 1.0


def test_a_raw_message_with_a_future_eta_waits_on_the_broker(queue_name: str, broker_kind: BrokerEnum) -> None:
    ran: dict[str, float] = {}
    later = timed_task(queue_name, broker_kind, ran)
    try:
        due = time.time() + 1.0
        get_broker(broker_kind, queue_name).publish(json.dumps({'name': 'raw', 'extra': {'eta': due}}))
        assert wait_until(lambda: 'raw' in ran, 5)
    finally:
        later.stop(grace=5)
    assert due <= ran['raw'] < due + 1.0


def test_a_shorter_delay_is_not_held_back_by_a_longer_one(queue_name: str, broker_kind: BrokerEnum) -> None:
    ran: dict[str, float] = {}
    later = timed_task(queue_name, broker_kind, ran)
    try:
        long_published = time.time()
        later.pub({'name': 'long'}, countdown=3.0)
        published = time.time()
        later.pub({'name': 'short'}, countdown=1.0)
        assert wait_until(lambda: len(ran) == 3, 10)
    finally:
        later.stop(grace=5)
    assert 1.0 <= ran['short'] - published < 2.0
    assert ran['long'] - long_published >= 3.0 - 0.05  # the due time is rounded to 0.1 ms when published


def test_5000_delayed_messages_stay_on_the_broker_until_due(queue_name: str, rabbitmq_server) -> None:
    ran = []

    @task_deco(queue_name, broker_kind=BrokerEnum.RABBITMQ_AMQPSTORM, concurrent_num=8)
    def later(n):
        ran.append(n)

    process = psutil.Process(os.getpid())
    later.consume()
    try:
        assert wait_until(lambda: later.consumer.broker._consumer is not None, 10)  # consuming, prefetch open
        before = process.memory_info().rss
        due = time.time() + 6  # every message's due time is later than this
        later.push_many(range(5000), countdown=6)
        later.push(-1)  # an ordinary message goes first: the consumer is not blocked by the delayed ones
        assert wait_until(lambda: ran == [-1], 20)
        assert later.get_message_count() == 0 and later.consumer._in_flight == 0
        while time.time() < due - 1:  # the consumer keeps fetching; nothing delayed may reach it
            assert later.get_message_count() == 0 and later.consumer._in_flight == 0 and ran == [-1]
            time.sleep(0.1)
        grown = process.memory_info().rss - before
    finally:
        later.stop(grace=5)
        later.consumer.broker.close()  # unsubscribes, so what comes due stays in the queue to be counted
    publisher = get_publisher(queue_name, BrokerEnum.RABBITMQ_AMQPSTORM)
    try:
        assert wait_until(lambda: publisher.get_message_count() == 5000, 20), publisher.get_message_count()
    finally:
        publisher.clear()
    assert grown < 10 * 1024 * 1024, f'RSS grew {grown / 1e6:.1f} MB while 5000 messages were delayed'


PUBLISH_DELAYED_SCRIPT = '''
import sys
from fsdf import BrokerEnum, get_publisher

pad = 'x' * 1000
get_publisher(sys.argv[1], BrokerEnum.KAFKA).publish_many(({'n': n, 'pad': pad} for n in range(30_000)), countdown=60)
'''


def test_kafka_delay_levels_are_not_read_into_the_consumer(queue_name: str, kafka_server, run_script) -> None:
    ran = []

    @task_deco(queue_name, broker_kind=BrokerEnum.KAFKA)
    def later(n, pad):
        ran.append(n)

    process = psutil.Process(os.getpid())
    later.consume()
    try:
        later.pub({'n': -1, 'pad': ''})
        assert wait_until(lambda: ran == [-1], 20)  # consuming: clients connected, group joined
        assert wait_until(lambda: later.get_message_count() == 0, 10)  # the count is lag: once -1's commit is in
        before = process.memory_info().rss
        # 30 MB of delayed messages, published by another process so that only consuming counts here:
        # a client that prefetched them would grow by 10+ MB in 3 s.
        assert run_script(PUBLISH_DELAYED_SCRIPT, queue_name).wait(60) == 0
        deadline = time.monotonic() + 3  # the forwarder reads the head of the level and pauses there
        while time.monotonic() < deadline:
            assert later.get_message_count() == 0 and later.consumer._in_flight == 0 and ran == [-1]
            time.sleep(0.1)
        grown = process.memory_info().rss - before
    finally:
        later.stop(grace=5)
        later.consumer.broker.close()
    assert grown < 6 * 1024 * 1024, f'RSS grew {grown / 1e6:.1f} MB while 30 MB of messages were delayed'
