"""MONGOMQ against a MongoDB-wire server the suite starts on loopback (nx-27017, a compatible server:
no real mongod can be installed on these machines)."""
from __future__ import annotations

import signal
import time

import pymongo
import pytest

from fsdf import BrokerEnum, task_deco
from fsdf.brokers import get_broker
from helpers import wait_until


@pytest.fixture
def embedded_kind(mongo_server) -> BrokerEnum:
    """MONGOMQ; named like conftest's fixture so the shared consume-path tests run on it."""
    return BrokerEnum.MONGOMQ


from broker_contract import *  # noqa: E402,F401,F403  (the broker contract, on this module's kinds)


def collection(mongo_server, name: str) -> pymongo.collection.Collection:
    """The queue's collection through a plain pymongo client, as another program sees it."""
    return pymongo.MongoClient(mongo_server.url).get_default_database()[name]


def test_another_program_inserts_documents(queue_name: str, mongo_server) -> None:
    seen = []

    @task_deco(queue_name, broker_kind=BrokerEnum.MONGOMQ)
    def add(a, b):
        seen.append(a + b)

    documents = collection(mongo_server, queue_name)
    documents.insert_one({'msg': {'a': 1, 'b': 2}, 'state': 0, 'time': time.time()})
    documents.insert_one({'msg': '{"a": 10, "b": 20}', 'state': 0, 'time': time.time()})
    assert add.drain(timeout=10) == 2
    assert sorted(seen) == [3, 30]
    assert documents.count_documents({}) == 0  # acked documents are deleted


def test_count_purge_and_the_dlq_collection(queue_name: str, mongo_server) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.MONGOMQ)
    def f(x):
        raise ValueError('always')

    f.push_many(range(5))
    assert f.get_message_count() == 5
    f.clear()
    assert f.get_message_count() == 0
    f.push(1)
    f.drain(timeout=10)
    assert get_broker(BrokerEnum.MONGOMQ, f'{queue_name}_dlq').count() == 1
    assert collection(mongo_server, f'{queue_name}_dlq').count_documents({'state': 0}) == 1


def test_taken_messages_are_leased_to_the_consumer(queue_name: str, mongo_server) -> None:
    broker = get_broker(BrokerEnum.MONGOMQ, queue_name)
    broker.publish_many(['{"x": 1}', '{"x": 2}'])
    [delivery] = broker.fetch(1, 1)
    [leased] = collection(mongo_server, queue_name).find({'state': 1})
    assert leased['consumer'] == broker.consumer_id and leased['taken_at'] > 0
    assert broker.count() == 1
    broker.requeue(delivery)
    assert broker.count() == 2


CONSUMER_SCRIPT = '''
import sys, time
from fsdf import BrokerEnum, task_deco

@task_deco(sys.argv[1], broker_kind=BrokerEnum.MONGOMQ, concurrent_num=4)
def work(x):
    with open(sys.argv[2], 'a') as out:
        out.write(f'{x}\\n')
    time.sleep(0.1)

work.consume()
'''


def test_kill_9_returns_the_leased_messages(queue_name: str, mongo_server, run_script, tmp_path) -> None:
    done = tmp_path / 'done.txt'
    done.touch()

    @task_deco(queue_name, broker_kind=BrokerEnum.MONGOMQ, concurrent_num=4)
    def work(x):
        with open(done, 'a') as out:
            out.write(f'{x}\n')

    work.push_many(range(60))
    child = run_script(CONSUMER_SCRIPT, queue_name, str(done))
    leased = collection(mongo_server, queue_name)
    assert wait_until(lambda: len(done.read_text().split()) >= 8, 20)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert leased.count_documents({'state': 1}) > 0  # the dead consumer held some
    started = time.monotonic()
    work.drain(timeout=60)  # this consumer's lease check returns them (the dead pid is on this host)
    assert set(map(int, done.read_text().split())) == set(range(60))
    assert leased.count_documents({}) == 0
    assert time.monotonic() - started < 20
