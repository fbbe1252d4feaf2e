"""RabbitMQ brokers (AMQPStorm and pika) against a real RabbitMQ the suite starts on loopback."""
from __future__ import annotations

import json
import signal
import threading

import amqpstorm
import pytest

from fsdf import BrokerEnum, task_deco
from fsdf.brokers import broker_class, get_broker
from fsdf.exceptions import BrokerNotAvailableError
from helpers import every_call_runs_across_a_restart, push_from_threads, wait_until

KINDS = [BrokerEnum.RABBITMQ_AMQPSTORM, BrokerEnum.RABBITMQ_PIKA]


@pytest.fixture(params=KINDS, ids=['amqpstorm', 'pika'])
def broker_kind(request: pytest.FixtureRequest, rabbitmq_server) -> BrokerEnum:
    """Both RabbitMQ kinds; named like conftest's fixture so the shared consume-path tests run on them."""
    return request.param


from broker_contract import *  # noqa: E402,F401,F403  (the broker contract, on this module's kinds)


def raw_channel(url: str) -> tuple[amqpstorm.Connection, amqpstorm.Channel]:
    """A plain AMQPStorm connection, as another program would have."""
    connection = amqpstorm.UriConnection(url)
    return connection, connection.channel()


def test_plain_amqp_publish_from_another_program(queue_name: str, broker_kind, rabbitmq_server) -> None:
    seen = []

    @task_deco(queue_name, broker_kind=broker_kind)
    def add(a, b):
        seen.append(a + b)

    add.get_message_count()  # declares the queue, as a deployed consumer would have
    connection, channel = raw_channel(rabbitmq_server.url)
    channel.basic.publish('{"a": 2, "b": 5}', queue_name, properties={'delivery_mode': 2})
    connection.close()
    assert add.drain(timeout=10) == 1 and seen == [7]


def test_queue_is_durable_and_messages_persistent(queue_name: str, broker_kind, rabbitmq_server) -> None:
    @task_deco(queue_name, broker_kind=broker_kind)
    def f(x):
        pass

    f.push(1)
    connection, channel = raw_channel(rabbitmq_server.url)
    message = channel.basic.get(queue_name, no_ack=True)
    connection.close()
    assert message.properties['delivery_mode'] == 2
    assert json.loads(message.body)['x'] == 1
    # declaring it again as durable with the same arguments succeeds only if fsdf declared it so
    connection, channel = raw_channel(rabbitmq_server.url)
    channel.queue.declare(queue_name, durable=True, arguments={'x-max-priority': 10})
    connection.close()


def test_a_batch_arrives_whole_and_persistent(queue_name: str, broker_kind, rabbitmq_server) -> None:
    """push_many's messages, one of them bigger than an AMQP frame, arrive in order, intact and
    persistent, as one-by-one publishes would have sent them."""
    @task_deco(queue_name, broker_kind=broker_kind)
    def f(x):
        pass

    big = 'é' * 200_000  # 400,000 bytes of UTF-8: split over several frames of 131,072
    f.push_many(['a', big, 'b'])
    connection, channel = raw_channel(rabbitmq_server.url)
    messages = [channel.basic.get(queue_name, no_ack=True) for _ in range(3)]
    connection.close()
    assert [json.loads(message.body)['x'] for message in messages] == ['a', big, 'b']
    assert {message.properties['delivery_mode'] for message in messages} == {2}
    assert {message.properties['content_type'] for message in messages} == {'application/json'}


def test_count_and_purge(queue_name: str, broker_kind) -> None:
    @task_deco(queue_name, broker_kind=broker_kind)
    def f(x):
        pass

    f.push_many(range(25))
    assert f.get_message_count() == 25
    f.clear()
    assert f.get_message_count() == 0
    assert get_broker(broker_kind, f'{queue_name}_dlq').count() == 0  # the DLQ is an ordinary queue


def test_higher_priority_runs_first(queue_name: str, broker_kind) -> None:
    order = []

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_num=1)
    def f(x):
        order.append(x)

    for x, priority in [(1, 1), (2, 5), (3, 9), (4, None)]:
        f.pub({'x': x}, priority=priority)
    assert wait_until(lambda: f.get_message_count() == 4, 5)
    f.drain(timeout=10)
    assert order == [3, 2, 1, 4]


def test_prefetch_is_bounded_by_concurrency(queue_name: str, broker_kind) -> None:
    release = threading.Event()
    running = []

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_num=3)
    def slow(x):
        running.append(x)
        release.wait(10)

    slow.push_many(range(20))
    slow.consume()
    try:
        assert wait_until(lambda: len(running) == 3, 10)
        # RabbitMQ keeps everything beyond the 3 unacked deliveries: nothing else sits in this process
        assert wait_until(lambda: slow.get_message_count() == 17, 5)
    finally:
        release.set()
    assert wait_until(lambda: slow.consumer.counters.succeeded == 20, 20)
    slow.consumer.stop()


def test_many_threads_publish_at_once(queue_name: str, broker_kind) -> None:
    @task_deco(queue_name, broker_kind=broker_kind, concurrent_num=8)
    def f(x):
        pass

    push_from_threads(f, 8, 50)
    assert f.get_message_count() == 400
    assert f.drain(timeout=30) == 400


def test_rabbitpy_points_to_the_other_clients() -> None:
    with pytest.raises(BrokerNotAvailableError, match='RABBITMQ_AMQPSTORM.*RABBITMQ_PIKA'):
        broker_class(BrokerEnum.RABBITMQ_RABBITPY)


CONSUMER_SCRIPT = '''
import sys, time
from fsdf import BrokerEnum, task_deco

@task_deco(sys.argv[1], broker_kind=BrokerEnum[sys.argv[2]], concurrent_num=4)
def work(x):
    with open(sys.argv[3], 'a') as out:
        out.write(f'{x}\\n')
    time.sleep(0.05)

work.consume()
'''


def test_kill_9_of_a_consumer_loses_nothing(queue_name: str, broker_kind, run_script, tmp_path) -> None:
    done = tmp_path / 'done.txt'
    done.touch()

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_num=4)
    def work(x):
        with open(done, 'a') as out:
            out.write(f'{x}\n')

    work.push_many(range(200))
    child = run_script(CONSUMER_SCRIPT, queue_name, broker_kind.name, str(done))
    assert wait_until(lambda: len(done.read_text().split()) >= 20, 20)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    # RabbitMQ gives the dead connection's unacked messages back at once; this process finishes the queue.
    work.drain(timeout=60)
    assert set(map(int, done.read_text().split())) == set(range(200))


def test_rabbitmq_restart_mid_run(queue_name: str, broker_kind, rabbitmq_server) -> None:
    every_call_runs_across_a_restart(queue_name, broker_kind, rabbitmq_server.restart,
                                     lambda: get_broker(broker_kind, queue_name).count() == 0)
