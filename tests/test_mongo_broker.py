"""MONGOMQ against a MongoDB-wire server the suite starts on loopback (nx-27017, a compatible server:
no real mongod can be installed on these machines)."""
from __future__ import annotations

import json
import signal
import threading
import time

import pymongo
import pytest

from fsdf import BrokerEnum, task_deco
from fsdf.brokers import get_broker
from fsdf.brokers.mongo import MongoBroker
from helpers import every_call_runs_across_a_restart, wait_until


@pytest.fixture
def broker_kind(mongo_server) -> BrokerEnum:
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
    documents = collection(mongo_server, queue_name)
    [leased] = documents.find({'state': 1})
    assert leased['consumer'] == broker.consumer_id and leased['taken_at'] > 0 and leased['lease']
    assert broker.count() == 1
    broker.requeue(delivery)
    assert broker.count() == 2
    assert all(set(document) == {'_id', 'msg', 'state', 'time'} for document in documents.find())


def test_a_take_whose_reply_is_lost_gives_its_messages_back(queue_name: str, mongo_server, monkeypatch) -> None:
    """The server leases the documents, then the connection drops before the consumer reads them back:
    the consumer is alive, so no lease check would ever return them; its next take must."""
    broker = MongoBroker(queue_name)
    broker.publish_many(['{"x": 1}', '{"x": 2}'])
    real = broker._collection

    class ReplyLost:
        """The real collection, whose read-back of a take fails once, as when the server goes away."""

        def __getattr__(self, name: str):
            return getattr(real, name)

        def find(self, filter, *args, **kwargs):
            if 'lease' in filter:
                monkeypatch.setattr(broker, '_collection', real)
                raise pymongo.errors.AutoReconnect('connection closed')
            return real.find(filter, *args, **kwargs)

    monkeypatch.setattr(broker, '_collection', ReplyLost())
    with pytest.raises(pymongo.errors.AutoReconnect):
        broker.fetch(10, 1)
    assert collection(mongo_server, queue_name).count_documents({'state': 1}) == 2  # leased, to nobody
    taken = broker.fetch(10, 1)
    assert sorted(json.loads(delivery.body)['x'] for delivery in taken) == [1, 2]
    broker.close()


def test_a_batch_comes_oldest_first(queue_name: str, mongo_server) -> None:
    documents = collection(mongo_server, queue_name)
    now = time.time()
    documents.insert_many([{'msg': str(i), 'state': 0, 'time': now - i} for i in range(10)]
                          + [{'msg': 'later', 'state': 0, 'time': now + 60}])
    broker = MongoBroker(queue_name)
    assert [d.body for d in broker.fetch(100, 1)] == [str(i) for i in reversed(range(10))]
    assert documents.count_documents({'state': 1}) == 10  # the delayed one stays ready


def test_racing_consumers_each_get_a_message_once(queue_name: str, mongo_server) -> None:
    MongoBroker(queue_name).publish_many([str(i) for i in range(600)])
    consumers = [MongoBroker(queue_name) for _ in range(4)]
    got: list[list[str]] = [[] for _ in consumers]

    def take(broker: MongoBroker, into: list[str]) -> None:
        while taken := broker.fetch(7, 0.05):
            into.extend(d.body for d in taken)

    threads = [threading.Thread(target=take, args=pair) for pair in zip(consumers, got)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    bodies = [body for bodies in got for body in bodies]
    assert sorted(bodies, key=int) == [str(i) for i in range(600)]  # each taken by exactly one


def test_acks_from_many_threads_all_delete(queue_name: str, mongo_server) -> None:
    broker = MongoBroker(queue_name)
    broker.publish_many([str(i) for i in range(500)])
    deliveries = broker.fetch(500, 1)
    assert len(deliveries) == 500
    threads = [threading.Thread(target=lambda part=deliveries[i::20]: [broker.ack(d) for d in part])
               for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Every ack() returned, so none may wait for a later call: all are deleted now.
    assert collection(mongo_server, queue_name).count_documents({}) == 0


def test_close_sends_acks_left_behind(queue_name: str, mongo_server) -> None:
    broker = MongoBroker(queue_name)
    broker.publish_many(['1', '2'])
    deliveries = broker.fetch(2, 1)
    broker._acks._ids.extend(d.tag for d in deliveries)  # as a failed send leaves them
    broker.close()
    assert collection(mongo_server, queue_name).count_documents({}) == 0


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


def test_mongo_restart_mid_run(queue_name: str, mongo_server) -> None:
    """The server goes away for 2 s and comes back on the same data: consumers and publishers carry on
    and every call runs, none left leased or waiting."""
    every_call_runs_across_a_restart(queue_name, BrokerEnum.MONGOMQ, lambda: mongo_server.restart(down_seconds=2.0),
                                     lambda: collection(mongo_server, queue_name).count_documents({}) == 0)
