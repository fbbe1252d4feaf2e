"""The runtime: process-wide state that closes in order, and a fresh runtime that works after a close.

Against a real Redis and RabbitMQ where connections are what is checked: the connections counted are
this process's TCP connections to the server, as the operating system lists them.
"""
from __future__ import annotations

import asyncio
import threading

import psutil
import pytest

from fsdf import BrokerEnum, task_deco
from fsdf.brokers import get_broker
from fsdf.concurrency.event_loop import shared_loop
from fsdf.redis_connection import redis_client
from fsdf.rpc import result_backend_for
from fsdf.runtime import Runtime, default_runtime, set_default_runtime
from helpers import wait_until

RABBITMQ_KINDS = [BrokerEnum.RABBITMQ_AMQPSTORM, BrokerEnum.RABBITMQ_PIKA]


def connections_to(port: int) -> int:
    """This process's open TCP connections to a server port."""
    return sum(1 for c in psutil.Process().net_connections(kind='tcp')
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def threads_named(name: str) -> list[threading.Thread]:
    """Live threads of this name (a queue's fetch thread is ``fsdf-fetch-<queue>``, its lease thread
    ``fsdf-lease-<queue>``)."""
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_the_module_helpers_use_the_default_runtime(runtime: Runtime) -> None:
    assert default_runtime() is runtime
    broker = get_broker(BrokerEnum.LOCAL_PYTHON_QUEUE, 'q')
    assert runtime.brokers() == {(BrokerEnum.LOCAL_PYTHON_QUEUE, 'q'): broker}
    assert result_backend_for(BrokerEnum.LOCAL_PYTHON_QUEUE) is result_backend_for(BrokerEnum.LOCAL_PYTHON_QUEUE)
    assert shared_loop() is runtime.loop()


def test_a_fresh_runtime_has_its_own_local_queues(queue_name: str) -> None:
    first, second = Runtime(), Runtime()
    previous = set_default_runtime(first)
    try:
        get_broker(BrokerEnum.LOCAL_PYTHON_QUEUE, queue_name).publish('{"n": 1}')
        set_default_runtime(second)
        assert get_broker(BrokerEnum.LOCAL_PYTHON_QUEUE, queue_name).count() == 0
    finally:
        set_default_runtime(previous)
        first.close()
        second.close()


def test_close_stops_consumers_closes_brokers_and_clients_then_the_loop(queue_name: str, redis_server) -> None:
    runtime = Runtime()
    previous = set_default_runtime(runtime)
    ran = threading.Event()
    before = connections_to(redis_server.port)
    try:
        @task_deco(queue_name, broker_kind=BrokerEnum.REDIS_ACK_ABLE, concurrent_num=2)
        def note(n):
            ran.set()

        note.push(1)
        note.consume()
        assert ran.wait(20)
        loop = runtime.loop()
        assert connections_to(redis_server.port) > before
        assert threads_named(f'fsdf-fetch-{queue_name}') and threads_named(f'fsdf-lease-{queue_name}')
        runtime.close(grace=2)
        assert runtime.consumers() == [] and runtime.brokers() == {}
        assert not threads_named(f'fsdf-fetch-{queue_name}')  # stopped: close returns after the consumers
        assert wait_until(lambda: not threads_named(f'fsdf-lease-{queue_name}'), timeout=10)  # broker closed
        assert wait_until(lambda: connections_to(redis_server.port) == before, timeout=10)  # client closed
        assert wait_until(lambda: not loop.is_running(), timeout=5)
    finally:
        set_default_runtime(previous)
        runtime.close()


def test_a_closed_runtime_works_again(queue_name: str, redis_server) -> None:
    runtime = Runtime()
    previous = set_default_runtime(runtime)
    try:
        redis_client().ping()
        first_loop = runtime.loop()
        runtime.close()
        assert redis_client().ping()  # a new client, not the closed one
        assert asyncio.run_coroutine_threadsafe(asyncio.sleep(0, 'ok'), runtime.loop()).result(5) == 'ok'
        assert runtime.loop() is not first_loop
        ran = threading.Event()

        @task_deco(queue_name, broker_kind=BrokerEnum.REDIS_ACK_ABLE, concurrent_num=1)
        def note(n):
            ran.set()

        note.push(1)
        note.consume()
        assert ran.wait(20)
    finally:
        runtime.close(grace=2)
        set_default_runtime(previous)


@pytest.mark.parametrize('kind', RABBITMQ_KINDS, ids=['amqpstorm', 'pika'])
def test_rabbitmq_queues_of_one_url_publish_through_one_connection(queue_name: str, kind, rabbitmq_server,
                                                                   runtime: Runtime) -> None:
    """Before, every queue's broker had a publishing connection of its own, its dead-letter queue another."""
    before = connections_to(rabbitmq_server.port)
    first, second = get_broker(kind, queue_name), get_broker(kind, f'{queue_name}_b')
    first.publish('{"n": 1}')
    second.publish_many(['{"n": 2}', '{"n": 3}'])
    first.dlq.publish('{"n": 4}')
    assert (first.count(), second.count(), first.dlq.count()) == (1, 2, 1)
    assert connections_to(rabbitmq_server.port) - before == 1
    for broker in (first, second):
        broker.purge()
    runtime.close()
    assert wait_until(lambda: connections_to(rabbitmq_server.port) == before, timeout=10)


@pytest.mark.parametrize('kind', RABBITMQ_KINDS, ids=['amqpstorm', 'pika'])
def test_rabbitmq_threads_publishing_at_once_each_get_a_session(queue_name: str, kind, rabbitmq_server,
                                                                runtime: Runtime) -> None:
    """A session is lent to one thread at a time: concurrent publishers to many queues all get confirms."""
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def publish(i: int) -> None:
        broker = get_broker(kind, f'{queue_name}_{i % 3}')
        barrier.wait()
        try:
            for n in range(20):
                broker.publish(f'{{"n": {n}}}')
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [get_broker(kind, f'{queue_name}_{q}').count() for q in range(3)] == [40, 40, 40]
    for q in range(3):
        get_broker(kind, f'{queue_name}_{q}').purge()
