"""PERSISTQUEUE's holders and batched acks at their edges: a late owner, a consumer taken for dead, an earlier
version's lease rows, a failed body read, a failed ack flush.

Each test runs the real SQLite file; a failure is made with SQLite's own means (a trigger, an authorizer).
"""
from __future__ import annotations

import sqlite3

import pytest
from helpers import wait_until

from fsdf import BrokerEnum
from fsdf.brokers import broker_class, persist_queue
from fsdf.config import settings


def database(queue_name: str) -> sqlite3.Connection:
    """A connection of another program to the queue's file."""
    return sqlite3.connect(settings.path('PERSIST_QUEUE_PATH') / f'{queue_name}.sqlite', isolation_level=None)


def rows_in_file(queue_name: str) -> int:
    with database(queue_name) as db:
        return db.execute(f'SELECT COUNT(*) FROM "{queue_name}"').fetchone()[0]


def holder(queue_name: str) -> list[str]:
    """The consumers holding messages, one per message taken (its status names its holder)."""
    with database(queue_name) as db:
        return [consumer for (consumer,) in db.execute(
            f'SELECT h.consumer FROM "{queue_name}" q JOIN fsdf_holders h '
            f'ON q.status = {persist_queue.HOLDER_BASE} + h.holder ORDER BY q._id')]


def open_broker(queue_name: str) -> persist_queue.PersistQueueBroker:
    broker = broker_class(BrokerEnum.PERSISTQUEUE)(queue_name)
    assert isinstance(broker, persist_queue.PersistQueueBroker)
    return broker


def test_a_late_owner_requeuing_a_recovered_message_does_not_take_it_from_its_new_holder(queue_name) -> None:
    late, alive = open_broker(queue_name), open_broker(queue_name)
    try:
        late.publish('{"n": 1}')
        (taken,) = late.fetch(1, 5)  # `late` never beats: its message counts as abandoned
        alive.beat()
        assert alive.recover_abandoned() == 1
        (again,) = alive.fetch(1, 5)
        late.requeue(taken)  # a stop that gives back what it did not start, say, after the recovery
        assert alive.count() == 0  # not ready for a third consumer while `alive` runs it
        assert holder(queue_name) == [alive.consumer_id]  # and `alive` still holds it if it dies
        alive.ack(again)
    finally:
        late.close()
        alive.close()
    assert rows_in_file(queue_name) == 0


def test_a_take_whose_bodies_cannot_be_read_gives_its_messages_back(queue_name) -> None:
    broker = open_broker(queue_name)
    try:
        broker.publish_many(['{"n": 1}', '{"n": 2}'])
        table = queue_name
        # The take reads ids and status; the read of the bodies after it, the data column: deny only that.
        broker._db.set_authorizer(
            lambda action, arg1, arg2, *_: sqlite3.SQLITE_DENY
            if action == sqlite3.SQLITE_READ and arg1 == table and arg2 == 'data' else sqlite3.SQLITE_OK)
        with pytest.raises(sqlite3.DatabaseError):
            broker.fetch(2, 1)  # the take commits, then its read fails
        broker._db.set_authorizer(None)
        assert broker.count() == 2 and holder(queue_name) == []  # ready again, not held until this process dies
        assert sorted(d.body for d in broker.fetch(2, 1)) == [b'{"n": 1}', b'{"n": 2}']
    finally:
        broker.close()


def test_acks_a_failed_flush_put_back_are_deleted_without_a_new_ack(queue_name, fsdf_logs) -> None:
    broker = open_broker(queue_name)
    try:
        broker.publish('{"n": 1}')
        (delivery,) = broker.fetch(1, 5)
        with database(queue_name) as db:  # another program's rule that makes the delete fail
            db.execute(f'CREATE TRIGGER keep BEFORE DELETE ON "{queue_name}" BEGIN SELECT RAISE(ABORT, \'kept\'); END')
        broker.ack(delivery)
        assert wait_until(lambda: 'could not delete 1 acked messages' in fsdf_logs.text, timeout=10)
        with database(queue_name) as db:
            db.execute('DROP TRIGGER keep')
        # No take, no new ack, no close: the flusher alone must retry the ack it put back.
        assert wait_until(lambda: rows_in_file(queue_name) == 0, timeout=persist_queue.ACK_RETRY_SECONDS + 5)
    finally:
        broker.close()


def test_an_ack_then_a_requeue_of_the_same_message_leaves_it_acked(queue_name) -> None:
    broker = open_broker(queue_name)
    try:
        broker.publish('{"n": 1}')
        (delivery,) = broker.fetch(1, 5)
        broker.ack(delivery)  # noted, not yet deleted
        broker.requeue(delivery)  # its transaction deletes the noted ack first: nothing is left to give back
        assert broker.count() == 0 and rows_in_file(queue_name) == 0
    finally:
        broker.close()


def test_a_late_owners_ack_ends_the_message_its_new_holder_runs_again(queue_name) -> None:
    """At-least-once, not a loss: the late owner ran the message to its end before it acked."""
    late, alive = open_broker(queue_name), open_broker(queue_name)
    try:
        late.publish('{"n": 1}')
        (taken,) = late.fetch(1, 5)
        alive.beat()
        assert alive.recover_abandoned() == 1
        (again,) = alive.fetch(1, 5)
        late.ack(taken)
        late.flush_acks()
        assert rows_in_file(queue_name) == 0 and holder(queue_name) == []
        alive.requeue(again)  # its run failed, say: nothing comes back, the message is done
        assert alive.count() == 0 and rows_in_file(queue_name) == 0
        alive.ack(again)
    finally:
        late.close()
        alive.close()


def test_a_consumer_taken_for_dead_keeps_what_it_takes_once_it_beats_again(queue_name) -> None:
    """Recovery drops a dead consumer's holder number; its next take writes it again, so a consumer that only
    looked dead (stopped beating for a while) is not robbed of every message it takes afterwards."""
    stale, other = open_broker(queue_name), open_broker(queue_name)
    try:
        stale.publish_many(['{"n": 1}', '{"n": 2}'])
        (first,) = stale.fetch(1, 5)  # before any beat: taken for dead at the next recovery
        other.beat()
        assert other.recover_abandoned() == 1
        taken = stale.fetch(2, 5)
        assert sorted(d.tag for d in taken) == sorted([first.tag, first.tag + 1])  # its first again, and the next
        stale.beat()  # alive again
        assert other.recover_abandoned() == 0
        assert holder(queue_name) == [stale.consumer_id] * 2
        stale.requeue_many(taken)  # and still its own to give back
        assert stale.count() == 2
    finally:
        stale.close()
        other.close()


def test_a_message_an_earlier_version_took_comes_back_when_its_consumer_is_gone(queue_name) -> None:
    """Earlier versions marked a taken row ``status = 2`` and wrote its holder into ``fsdf_leases``."""
    broker = open_broker(queue_name)
    try:
        broker.publish_many(['{"n": 1}', '{"n": 2}', '{"n": 3}'])
        with database(queue_name) as db:  # what an earlier version's take left: one consumer gone, one alive
            db.execute(f'UPDATE "{queue_name}" SET status = 2 WHERE _id IN (1, 2)')
            db.execute("INSERT INTO fsdf_leases (msg_id, consumer) VALUES (1, 'h:1:gone'), (2, 'h:2:alive')")
            db.execute('INSERT INTO fsdf_consumers (consumer, host, pid, started, last_beat) '
                       "VALUES ('h:2:alive', 'elsewhere', 2, strftime('%s','now'), strftime('%s','now'))")
        assert broker.count() == 1
        broker.beat()
        assert broker.recover_abandoned() == 1
        assert sorted(d.body for d in broker.fetch(3, 1)) == [b'{"n": 1}', b'{"n": 3}']  # not the one still held
        with database(queue_name) as db:
            assert db.execute('SELECT msg_id, consumer FROM fsdf_leases').fetchall() == [(2, 'h:2:alive')]
    finally:
        broker.close()


def test_a_stopped_consumers_holder_number_is_dropped(queue_name) -> None:
    """``fsdf_holders`` does not grow with every consumer that ever ran: a gone one's number is dropped."""
    first, second = open_broker(queue_name), open_broker(queue_name)
    try:
        first.publish('{"n": 1}')
        first.beat()
        first.ack(*first.fetch(1, 5))
        first.close()
        second.beat()
        assert second.recover_abandoned() == 0  # it held nothing
        with database(queue_name) as db:
            assert db.execute('SELECT consumer FROM fsdf_holders').fetchall() == []
    finally:
        second.close()


def test_a_dropped_holder_number_is_never_given_to_another_consumer(queue_name) -> None:
    """Else the messages a consumer taken for dead takes afterwards would count as the other one's, and
    would never come back if it then died."""
    stale, checker, newcomer = open_broker(queue_name), open_broker(queue_name), open_broker(queue_name)
    try:
        stale.publish_many(['{"n": 1}', '{"n": 2}'])
        stale.fetch(1, 5)  # it never beats
        checker.beat()
        assert checker.recover_abandoned() == 1  # drops the only number given so far
        newcomer.beat()
        newcomer.fetch(1, 5)  # its first take: a number now
        stale.fetch(1, 5)
        assert sorted(holder(queue_name)) == sorted([stale.consumer_id, newcomer.consumer_id])
        assert checker.recover_abandoned() == 1  # the stale one's, not counted as the newcomer's
    finally:
        for broker in (stale, checker, newcomer):
            broker.close()
