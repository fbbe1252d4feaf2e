"""Delayed messages wait on the broker side and run no earlier than due, and within 1 s after."""
from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time

import psutil
import pytest

from fsdf import BrokerEnum, task_deco
from fsdf.brokers import get_broker
from helpers import wait_until


# Timed against the clock (within 1 s of due): run alone by scripts/test.sh, wherever a module reuses it. In
# the parallel part, three pytest processes on two cores made a Redis stream call 1.16 s late once.
@pytest.mark.timing
def test_delayed_calls_run_on_time(queue_name: str, broker_kind: BrokerEnum) -> None:
    ran: dict[int, float] = {}

    @task_deco(queue_name, broker_kind=broker_kind)
    def later(n):
        ran[n] = time.time()

    later.consume()  # consuming first, so the test times the broker's delay, not a consumer's start
    try:
        published = time.time()
        later.pub({'n': 1}, countdown=1.0)
        due_2 = time.time() + 1.5
        later.pub({'n': 2}, eta=dt.datetime.fromtimestamp(due_2))
        later.pub({'n': 3})
        assert wait_until(lambda: len(ran) == 3, 10)
    finally:
        later.stop(grace=5)
    assert ran[3] - published < 1.0
    assert 1.0 <= ran[1] - published < 2.0
    assert due_2 <= ran[2] < due_2 + 1.0


def test_push_many_with_countdown(queue_name: str, broker_kind: BrokerEnum) -> None:
    @task_deco(queue_name, broker_kind=broker_kind)
    def later(n):
        pass

    results = later.push_many(range(10), countdown=30)
    assert len(results) == 10 and later.get_message_count() == 0
    later.clear()


def test_a_raw_message_with_a_future_eta_is_delayed_by_the_consumer(queue_name: str,
                                                                    broker_kind: BrokerEnum) -> None:
    ran = threading.Event()

    @task_deco(queue_name, broker_kind=broker_kind)
    def later(n):
        ran.set()

    due = time.time() + 1.0
    get_broker(broker_kind, queue_name).publish(json.dumps({'n': 1, 'extra': {'eta': due}}))
    later.consume()
    try:
        assert ran.wait(5)
        assert time.time() >= due
    finally:
        later.stop(grace=5)


def test_20000_delayed_messages_do_not_grow_the_consumer(queue_name: str) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.PERSISTQUEUE)
    def later(n):
        pass

    process = psutil.Process(os.getpid())
    before = process.memory_info().rss
    later.consume()
    try:
        later.push_many(range(20_000), countdown=60)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # a 2 s window in which the fetch loop polls the broker ~40 times
            time.sleep(0.1)
        grown = process.memory_info().rss - before
    finally:
        later.stop(grace=5)
        later.clear()
    assert later.consumer.counters.settled == 0
    assert grown < 10 * 1024 * 1024, f'RSS grew {grown / 1e6:.1f} MB'
