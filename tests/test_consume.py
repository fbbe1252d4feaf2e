"""The consume path on the embedded brokers: results, retries, requeue, dead letters, malformed input."""
from __future__ import annotations

import json
import threading
import time

import pytest

from fsdf import BrokerEnum, ExceptionForRequeue, ExceptionForRetry, message, task_deco
from fsdf.brokers import get_broker
from fsdf.consumer import CHUNK_BELOW_SECONDS, SHORT_CALL_SECONDS
from fsdf.exceptions import MalformedMessageError


def dead_letters(kind: BrokerEnum, queue_name: str) -> list[dict]:
    """Every message in ``<queue>_dlq``, parsed, acked."""
    dlq = get_broker(kind, f'{queue_name}_dlq')
    out = []
    while batch := dlq.fetch(100, 0.05):
        for delivery in batch:
            out.append(json.loads(delivery.body))
            dlq.ack(delivery)
    return out


def test_every_pushed_call_runs_once(queue_name: str, broker_kind: BrokerEnum) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_num=8)
    def record(x):
        with lock:
            seen.append(x)

    record.push_many(range(500))
    assert record.drain(timeout=30) == 500
    assert sorted(seen) == list(range(500))
    assert record.consumer.counters.succeeded == 500
    assert record.get_message_count() == 0


def test_message_without_extra_from_another_program(queue_name: str, broker_kind: BrokerEnum) -> None:
    seen = []

    @task_deco(queue_name, broker_kind=broker_kind)
    def add(a, b):
        seen.append(a + b)

    get_broker(broker_kind, queue_name).publish('{"a": 3, "b": 6}')
    assert add.drain(timeout=10) == 1
    assert seen == [9]


def test_retries_then_success(queue_name: str, broker_kind: BrokerEnum) -> None:
    attempts = []

    @task_deco(queue_name, broker_kind=broker_kind, max_retry_times=3)
    def flaky(x):
        attempts.append(x)
        if len(attempts) == 1:
            raise ValueError('first time fails')
        if len(attempts) == 2:
            raise ExceptionForRetry('asked to retry')

    flaky.push(7)
    flaky.drain(timeout=10)
    assert attempts == [7, 7, 7]
    counters = flaky.consumer.counters
    assert (counters.retried, counters.succeeded, counters.dead_lettered) == (2, 1, 0)
    assert dead_letters(broker_kind, queue_name) == []


def test_last_failure_goes_to_the_dead_letter_queue(queue_name: str, broker_kind: BrokerEnum) -> None:
    attempts = []

    @task_deco(queue_name, broker_kind=broker_kind, max_retry_times=2, is_print_detail_exception=False)
    def broken(x, y=1):
        attempts.append(x)
        raise KeyError('no such thing')

    result = broken.push(5, y=2)
    assert broken.drain(timeout=10) == 1
    assert attempts == [5, 5, 5]
    [letter] = dead_letters(broker_kind, queue_name)
    assert letter['x'] == 5 and letter['y'] == 2
    assert letter['extra']['task_id'] == result.task_id
    reason = letter['extra']['dead_letter']
    assert reason['reason'] == 'failed' and reason['exception_type'] == 'KeyError'
    assert 'no such thing' in reason['exception_message'] and reason['retries'] == 2
    assert broken.get_message_count() == 0


@pytest.mark.parametrize('body, why', [
    ('not json at all', 'not JSON'),
    ('[1, 2]', 'not a JSON object but list'),
    ('"text"', 'not a JSON object but str'),
    ('{"a": 1}', "missing a required argument: 'b'"),
    ('{"a": 1, "b": 2, "c": 3}', "unexpected keyword argument 'c'"),
    ('{"a": 1, "b": 2, "extra": 5}', "'extra' is not an object"),
])
def test_malformed_messages_go_to_the_dlq_with_the_reason(queue_name: str, broker_kind: BrokerEnum,
                                                          body: str, why: str) -> None:
    ran = []

    @task_deco(queue_name, broker_kind=broker_kind)
    def add(a, b):
        ran.append((a, b))

    broker = get_broker(broker_kind, queue_name)
    broker.publish(body)
    add.push(1, 2)  # the consumer keeps going after the bad one
    assert add.drain(timeout=10) == 2
    assert ran == [(1, 2)]
    [letter] = dead_letters(broker_kind, queue_name)
    assert letter['extra']['dead_letter']['reason'] == 'malformed'
    assert why in letter['extra']['dead_letter']['error']
    if 'argument' in why:
        assert {k: v for k, v in letter.items() if k != 'extra'} == json.loads(body)
    else:
        assert letter['raw_body'] == body  # kept whole, so nothing is lost


@pytest.mark.parametrize('body', [
    b'{"a": 1, "b": 2}', '{"a": 1, "b": 2}', b' \n{"a": 1, "b": 2}\n', b'\xef\xbb\xbf{"a": 1, "b": 2}',
    '{"a": 1, "b": 2}'.encode('utf-16'), bytearray(b'{"a": 1, "b": 2}'),
    b'{"a": 1, "b": 2} x', b'', b'\xff{}', b'[1, 2]', b'{"a": NaN, "b": 2}'])
def test_bodies_decode_as_json_loads_reads_them(body) -> None:
    """fsdf's fast JSON read accepts and refuses exactly what json.loads does (cross-language publishers)."""
    try:
        expected = json.loads(body)
    except ValueError as exc:
        with pytest.raises(MalformedMessageError, match='not JSON') as caught:
            message.decode(body)
        assert str(exc) in str(caught.value)  # the same words json.loads would give
        return
    if not isinstance(expected, dict):
        with pytest.raises(MalformedMessageError, match='not a JSON object'):
            message.decode(body)
        return
    assert message.decode(body) == (expected, {})


def test_calls_failing_at_once_all_reach_the_dlq(queue_name: str, broker_kind: BrokerEnum) -> None:
    """The first dead letters open <queue>_dlq from several threads at the same moment."""
    together = threading.Barrier(8)

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_num=8, max_retry_times=0,
               is_print_detail_exception=False)
    def fail(x):
        together.wait(10)
        raise ValueError('always')

    fail.push_many(range(8))
    assert fail.drain(timeout=20) == 8
    assert sorted(letter['x'] for letter in dead_letters(broker_kind, queue_name)) == list(range(8))


def test_requeue_gives_the_message_back(queue_name: str, broker_kind: BrokerEnum) -> None:
    runs = []

    @task_deco(queue_name, broker_kind=broker_kind, max_retry_times=0)
    def picky(x):
        runs.append(x)
        if len(runs) < 3:
            raise ExceptionForRequeue('not yet')

    picky.push(1)
    picky.drain(timeout=10)
    assert runs == [1, 1, 1]
    assert picky.consumer.counters.requeued == 2 and picky.consumer.counters.succeeded == 1
    assert dead_letters(broker_kind, queue_name) == []


def test_calls_published_inside_a_task_name_their_parent(queue_name: str, broker_kind: BrokerEnum) -> None:
    @task_deco(f'{queue_name}_child', broker_kind=broker_kind)
    def child(n):
        pass

    @task_deco(queue_name, broker_kind=broker_kind)
    def parent(n):
        child.push(n)

    parent_id = parent.push(1).task_id
    parent.drain(timeout=10)
    [delivery] = child.publisher.broker.fetch(1, 1)
    assert json.loads(delivery.body)['extra']['parent_task_id'] == parent_id


def test_single_dict_parameter_mode(queue_name: str) -> None:
    seen = []

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, is_consuming_function_use_multi_params=False)
    def handle(body):
        seen.append(body)

    handle.pub({'anything': 1, 'goes': [2]})
    handle.drain(timeout=10)
    assert seen == [{'anything': 1, 'goes': [2]}]


def test_single_thread_mode(queue_name: str, broker_kind: BrokerEnum) -> None:
    threads = set()

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_mode=5)
    def where(x):
        threads.add(threading.current_thread().name)

    where.push_many(range(50))
    assert where.drain(timeout=10) == 50
    assert threads == {f'fsdf-fetch-{queue_name}'}


def test_single_thread_stop_gives_back_the_rest_of_its_batch(queue_name: str, broker_kind: BrokerEnum) -> None:
    """SINGLE_THREAD runs a fetched batch of up to 256 in the fetch thread: a stop during one call
    must run nothing after it and leave the rest of the batch on the queue, none lost, none run twice."""
    ran: list[int] = []
    slow_started, release = threading.Event(), threading.Event()

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_mode=5)
    def record(x):
        ran.append(x)
        if x == 5:
            slow_started.set()
            release.wait(10)

    record.push_many(range(50))
    record.consume()
    assert slow_started.wait(10)
    stopper = threading.Thread(target=record.consumer.stop, kwargs={'grace': 10})
    stopper.start()
    assert record.consumer._stopping.wait(10)
    release.set()
    stopper.join(15)
    assert ran == list(range(6))  # calls 6.. were fetched with 5 but had not started
    assert record.get_message_count() == 44
    assert record.drain(timeout=10) == 44
    assert sorted(ran) == list(range(50))


def test_threading_stop_gives_back_the_chunks_no_thread_started(queue_name: str, broker_kind: BrokerEnum) -> None:
    """While calls are very short a THREADING pool gets its messages in chunks (one waiting entry each): a stop
    while every thread blocks must give back every chunk not started and the rest of the running ones, none
    lost, none run twice."""
    ran: list[int] = []
    lock = threading.Lock()
    slow_started, release = threading.Event(), threading.Event()

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_num=2)
    def record(x):
        with lock:
            ran.append(x)
        if x >= 1500:  # both threads end up blocked here: the chunks behind them wait in the pool
            slow_started.set()
            release.wait(10)

    record.push_many(range(2000))
    record.consume()
    assert slow_started.wait(20)
    mean_call = record.consumer.runner.mean_call
    assert mean_call is not None and mean_call < CHUNK_BELOW_SECONDS  # the messages went out in chunks
    stopper = threading.Thread(target=record.consumer.stop, kwargs={'grace': 10})
    stopper.start()
    assert record.consumer._stopping.wait(10)
    release.set()
    stopper.join(15)
    left = 2000 - len(ran)
    assert len(set(ran)) == len(ran) and left > 0
    assert record.get_message_count() == left
    assert record.drain(timeout=30) == left
    assert sorted(ran) == list(range(2000))


def test_single_thread_holds_only_what_starts_within_a_short_while(queue_name: str, broker_kind: BrokerEnum) -> None:
    """Calls of 20 ms: beyond the running call a SINGLE_THREAD consumer may hold what starts within
    SHORT_CALL_SECONDS (two more), not its whole margin of 255, which other consumers could be running."""
    held: list[int] = []

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_mode=5)
    def slow(x):
        held.append(slow.consumer._in_flight)
        time.sleep(0.02)  # the work itself

    slow.push_many(range(30))
    assert slow.drain(timeout=30) == 30
    assert max(held) <= 1 + int(SHORT_CALL_SECONDS / 0.02)


def test_another_program_publishes_with_plain_sql(queue_name: str) -> None:
    import sqlite3

    from fsdf import settings
    seen = []

    @task_deco(queue_name, broker_kind=BrokerEnum.PERSISTQUEUE)
    def add(a, b):
        seen.append(a + b)

    add.get_message_count()  # creates the queue's table
    db = sqlite3.connect(settings.path('PERSIST_QUEUE_PATH') / f'{queue_name}.sqlite')
    with db:
        db.execute(f'INSERT INTO "{queue_name}" (data, timestamp, status) '
                   f"""VALUES ('{{"a": 1, "b": 2}}', strftime('%s','now'), 1)""")
    db.close()
    assert add.drain(timeout=10) == 1 and seen == [3]


def test_a_persist_queue_program_shares_the_queue(queue_name: str) -> None:
    """fsdf writes persist-queue's schema without importing it: persist-queue's own SQLiteAckQueue, on the same
    file and table, takes what fsdf published and publishes what fsdf runs."""
    from persistqueue import SQLiteAckQueue

    from fsdf import settings

    class SameTable(SQLiteAckQueue):  # persist-queue's table name hook: the table named after the queue
        @property
        def _table_name(self) -> str:
            return '"{}"'.format(self.name.replace('"', '""'))

    class Text:  # fsdf's bodies are JSON text; persist-queue's default would pickle
        dumps = loads = staticmethod(lambda value: value)

    seen = []

    @task_deco(queue_name, broker_kind=BrokerEnum.PERSISTQUEUE)
    def add(a, b):
        seen.append(a + b)

    add.push(1, 2)
    other = SameTable(str(settings.path('PERSIST_QUEUE_PATH')), name=queue_name, serializer=Text,
                      db_file_name=f'{queue_name}.sqlite', auto_resume=False)
    try:
        taken = other.get(block=False)
        assert json.loads(taken)['a'] == 1  # fsdf's body as fsdf wrote it
        other.ack(taken)
        other.put(json.dumps({'a': 3, 'b': 4}))
    finally:
        other.close()
    assert add.drain(timeout=10) == 1 and seen == [7]
