"""``Broker.oldest_age``: the age of the oldest waiting message, on every kind that can tell, against real servers.

Messages are published with a ``publish_time`` in the past (as a message that has waited would carry),
so no test sleeps: the age read must be that message's, within a few seconds of slack for a slow machine.
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from fsdf import BrokerEnum
from fsdf.brokers import get_broker
from fsdf.message import encode, new_extra

CASES = [(BrokerEnum.LOCAL_PYTHON_QUEUE, None), (BrokerEnum.PERSISTQUEUE, None), (BrokerEnum.SQLACHEMY, None),
         (BrokerEnum.SQLACHEMY, 'postgres_server'), (BrokerEnum.REDIS, 'redis_server'),
         (BrokerEnum.REDIS_ACK_ABLE, 'redis_server'), (BrokerEnum.RedisBrpopLpush, 'redis_server'),
         (BrokerEnum.REDIS_STREAM, 'redis_server'), (BrokerEnum.MONGOMQ, 'mongo_server')]
"""(kind, the server fixture it needs); SQLACHEMY without a server is SQLite."""
KEEPS_ITS_OWN_TIME = {BrokerEnum.PERSISTQUEUE, BrokerEnum.SQLACHEMY, BrokerEnum.REDIS_STREAM, BrokerEnum.MONGOMQ}
"""Kinds that store when an entry arrived, so a message another program published (no publish_time) has an age."""
SLACK = 5.0


@pytest.fixture(params=CASES, ids=[k.name + (f'-{s.split("_")[0]}' if s else '') for k, s in CASES])
def kind(request: pytest.FixtureRequest) -> BrokerEnum:
    kind, server_fixture = request.param
    server = request.getfixturevalue(server_fixture) if server_fixture else None
    if kind is BrokerEnum.SQLACHEMY:
        from conftest import _point_fsdf_at
        _point_fsdf_at('SQLACHEMY_ENGINE_URL', server.url if server else '')  # '': SQLite beside PERSISTQUEUE's files
    return kind


def _aged(seconds: float, **arguments: Any) -> str:
    extra = new_extra()
    extra['publish_time'] = time.time() - seconds
    return encode(arguments, extra)


def test_the_oldest_waiting_message_gives_the_age(kind: BrokerEnum, queue_name: str) -> None:
    broker = get_broker(kind, queue_name)
    try:
        assert broker.oldest_age() == 0.0  # nothing waits
        broker.publish_delayed(_aged(0, x=0), time.time() + 600)
        assert broker.oldest_age() == 0.0  # a delayed message not yet due does not wait yet
        broker.publish(_aged(120, x=1))
        broker.publish(_aged(30, x=2))
        age = broker.oldest_age()
        assert age is not None and 120 <= age < 120 + SLACK
        taken = broker.fetch(1, 5)
        assert len(taken) == 1 and b'"x":1' in (taken[0].body if isinstance(taken[0].body, bytes)
                                                 else taken[0].body.encode())
        age = broker.oldest_age()  # a taken message no longer waits: the next one is the oldest
        assert age is not None and 30 <= age < 30 + SLACK
        broker.ack(taken[0])
    finally:
        broker.purge()


def test_a_message_without_a_publish_time(kind: BrokerEnum, queue_name: str) -> None:
    """Another program's message: the kinds that keep their own arrival time tell; the others cannot."""
    broker = get_broker(kind, queue_name)
    try:
        broker.publish('{"a": 1}')
        age = broker.oldest_age()
        if kind in KEEPS_ITS_OWN_TIME:
            assert age is not None and 0 <= age < SLACK
        else:
            assert age is None
    finally:
        broker.purge()


def test_an_eta_later_than_the_publish_time_counts_from_the_eta(queue_name: str) -> None:
    """A delayed message waits from when it was due, not from when it was published."""
    broker = get_broker(BrokerEnum.LOCAL_PYTHON_QUEUE, queue_name)
    extra = new_extra(eta=time.time() - 10)
    extra['publish_time'] = time.time() - 3600
    broker.publish(encode({'x': 1}, extra))
    age = broker.oldest_age()
    assert age is not None and 10 <= age < 10 + SLACK
    broker.purge()
