"""ZEROMQ: PUSH/PULL with no server, on this machine's unix sockets and loopback TCP.

It is at-most-once and keeps no state outside the two processes, so it runs the end-to-end contract
(one process publishing and consuming) and the interface promises it can keep, not the interface
suite's at-least-once ones (see ``ZeroMQBroker``'s docstring for what it declares).
"""
from __future__ import annotations

import time

import pytest

from fsdf import BrokerEnum, task_deco
from fsdf.brokers import BrokerClosedError
from fsdf.brokers.zeromq import SEND_HWM, ZeroMQBroker, address
from helpers import wait_until

ZEROMQ = BrokerEnum.ZEROMQ


@pytest.fixture
def broker_kind(runtime) -> BrokerEnum:
    """ZEROMQ; named like conftest's fixture so the shared consume-path tests run on it (a fresh runtime
    each: a test's consumer process binds the queue's socket, the next test binds its own)."""
    return ZEROMQ


from broker_contract import *  # noqa: E402,F401,F403  (the broker contract, on this module's kinds)


def test_a_port_number_is_a_loopback_tcp_queue_and_other_names_unix_sockets(runtime) -> None:
    assert address('5555') == 'tcp://127.0.0.1:5555'
    assert address('jobs').startswith('ipc://') and address('jobs').endswith('/zeromq/jobs')


def _fetch_exactly(consumer: ZeroMQBroker, count: int, max_count: int) -> list:
    """Fetch until ``count`` deliveries came, each fetch asking for at most ``max_count`` minus those
    taken: a fetch returns what has arrived, and five messages sent together may cross the socket in
    more than one read."""
    taken: list = []
    deadline = time.monotonic() + 5
    while len(taken) < count and time.monotonic() < deadline:
        batch = consumer.fetch(max_count - len(taken), 1)
        assert len(batch) <= max_count - len(taken)
        taken += batch
    return taken


def test_fetch_order_max_count_requeue_to_front_and_timeout(queue_name: str, runtime) -> None:
    consumer, publisher = ZeroMQBroker(queue_name), ZeroMQBroker(queue_name)
    assert consumer.fetch(5, 0.2) == []  # binds
    publisher.publish_many([f'{n}' for n in range(5)])
    first = _fetch_exactly(consumer, 3, 3)
    assert [d.body for d in first] == [b'0', b'1', b'2']
    consumer.requeue_many(first[1:])
    assert [d.body for d in _fetch_exactly(consumer, 4, 10)] == [b'1', b'2', b'3', b'4']
    began = time.monotonic()
    assert consumer.fetch(5, 0.3) == [] and 0.28 <= time.monotonic() - began < 2
    consumer.close()
    with pytest.raises(BrokerClosedError):
        consumer.count()
    assert consumer.fetch(5, 5) == []
    publisher.close()


def test_delayed_messages_wait_in_the_consumer_until_due(queue_name: str, runtime) -> None:
    consumer, publisher = ZeroMQBroker(queue_name), ZeroMQBroker(queue_name)
    consumer.fetch(1, 0.1)
    due = time.time() + 0.6
    publisher.publish_delayed_many(['{"d": 1}'], due)
    publisher.publish_delayed_many(['{"now": 1}'], time.time() - 1)
    assert [d.body for d in consumer.fetch(5, 0.3)] == [b'{"now": 1}']
    assert consumer.count() == 0
    taken = consumer.fetch(5, 5)
    assert time.time() >= due and [d.body for d in taken] == [b'{"d": 1}']


def test_purge_drops_what_the_consumer_holds(queue_name: str, runtime) -> None:
    consumer, publisher = ZeroMQBroker(queue_name), ZeroMQBroker(queue_name)
    consumer.fetch(1, 0.1)
    publisher.publish_many(['1', '2', '3'])
    publisher.publish_delayed('4', time.time() + 0.3)
    def held() -> int:  # what has crossed the socket so far, moved into the consumer's memory
        consumer._receive(consumer._pull, 10, 0)
        return len(consumer._ready) + len(consumer._delayed)
    assert wait_until(lambda: held() == 4, 5)  # the four cross the socket in one or more reads
    consumer.purge()
    assert consumer.fetch(5, 0.6) == []


def test_with_no_consumer_a_publisher_keeps_messages_up_to_the_high_water_mark(queue_name: str, runtime) -> None:
    """Measured: exactly SEND_HWM messages wait in the publisher's memory, then a publish times out; a
    consumer that binds later receives all of them."""
    import zmq
    publisher = ZeroMQBroker(queue_name)
    publisher._push_socket().setsockopt(zmq.SNDTIMEO, 200)
    sent = 0
    with pytest.raises(TimeoutError, match='no consumer'):
        while True:
            publisher.publish_many(['x'] * 1000)
            sent += 1000
    assert sent == SEND_HWM
    consumer = ZeroMQBroker(queue_name)
    received = 0
    while batch := consumer.fetch(1000, 1):
        received += len(batch)
    assert received >= SEND_HWM


PUBLISHER_SCRIPT = '''
import sys
from fsdf import BrokerEnum, task_deco

@task_deco(sys.argv[1], broker_kind=BrokerEnum.ZEROMQ)
def add(a, b):
    pass

add.push_many([(i, i) for i in range(1000)])
# and exits at once: fsdf hands over what the process still holds before it goes
'''


def test_push_in_one_process_consume_in_another(queue_name: str, runtime, run_script) -> None:
    seen = []

    @task_deco(queue_name, broker_kind=ZEROMQ, concurrent_num=4)
    def add(a, b):
        seen.append(a + b)

    add.consume()
    child = run_script(PUBLISHER_SCRIPT, queue_name)
    assert child.wait(30) == 0
    assert wait_until(lambda: len(seen) == 1000, 20)
    assert sorted(seen) == [2 * i for i in range(1000)]
