"""Publishing fast and together (issue 19): group commit, the common push's message, Redis's lean publish.

Group commit (fsdf/group_commit.py) is tested on its own with plain callables standing for the broker
(what it promises callers: it returns once its body was sent, raises what the send raised), and on a
real Redis: many threads lose and duplicate nothing and need fewer round trips, and a server that
goes away mid-push gives each grouped caller the publisher's retry behaviour.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Optional

import pytest
import redis

from fsdf import BrokerEnum, BrokerUnreachableError, message, task_deco
from fsdf._compat import redis_commands
from fsdf.config import settings
from fsdf.group_commit import GroupCommit
from fsdf.redis_connection import redis_client
from helpers import wait_until


@pytest.fixture(autouse=True)
def own_runtime(runtime):
    """Each test in a runtime of its own: its brokers close after it."""
    yield runtime


class Recording:
    """A stand-in broker that records what it was sent and can hold a send or fail it."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self.hold: Optional[threading.Event] = None  # a send waits for it while set up
        self.sending = threading.Event()
        self.error: Optional[BaseException] = None

    def one(self, body: str) -> None:
        self.many([body])

    def many(self, bodies: list[str]) -> None:
        self.sending.set()
        if self.hold is not None:
            assert self.hold.wait(10)
        if self.error is not None:
            raise self.error
        self.sent.append(list(bodies))


def _publish_in_thread(group: GroupCommit, body: str, outcomes: dict[str, Any]) -> threading.Thread:
    def publish() -> None:
        try:
            group.publish(body)
            outcomes[body] = 'sent'
        except BaseException as exc:
            outcomes[body] = exc
    thread = threading.Thread(target=publish)
    thread.start()
    return thread


def _waiting_in_line(group: GroupCommit, count: int) -> bool:
    return len(group._line) == count


def _line_up_behind_a_held_send(broker: Recording, group: GroupCommit, count: int,
                                outcomes: dict[str, Any]) -> list[threading.Thread]:
    """Publish 'first' and hold its send, then ``count`` more ('b0'...) that wait in line: all their threads."""
    first = _publish_in_thread(group, 'first', outcomes)
    assert broker.sending.wait(10)
    others = [_publish_in_thread(group, f'b{i}', outcomes) for i in range(count)]
    assert wait_until(lambda: _waiting_in_line(group, count), 10)
    return [first, *others]


def test_a_lone_publish_is_sent_at_once_and_alone() -> None:
    broker = Recording()
    group = GroupCommit(broker.one, broker.many, 100)
    group.publish('a')
    group.publish('b')
    assert broker.sent == [['a'], ['b']]


def test_publishes_arriving_during_a_round_trip_go_together_and_return_only_once_sent() -> None:
    broker = Recording()
    broker.hold = threading.Event()
    group = GroupCommit(broker.one, broker.many, 100)
    outcomes: dict[str, Any] = {}
    threads = _line_up_behind_a_held_send(broker, group, 5, outcomes)
    assert outcomes == {}  # nobody returns while the round trip carrying nothing of theirs is held
    broker.hold.set()
    for thread in threads:
        thread.join(10)
    assert broker.sent[0] == ['first']
    assert sorted(broker.sent[1]) == [f'b{i}' for i in range(5)] and len(broker.sent) == 2
    assert all(outcome == 'sent' for outcome in outcomes.values()) and len(outcomes) == 6


def test_every_caller_of_a_failed_batch_gets_the_error_and_the_group_goes_on() -> None:
    broker = Recording()
    broker.hold = threading.Event()
    group = GroupCommit(broker.one, broker.many, 100)
    outcomes: dict[str, Any] = {}
    threads = _line_up_behind_a_held_send(broker, group, 4, outcomes)
    broker.error = ConnectionError('server gone')
    broker.hold.set()
    for thread in threads:
        thread.join(10)
    assert len(outcomes) == 5
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes.values())
    broker.error, broker.hold = None, None
    group.publish('after')  # not stuck in flight after a failure
    assert broker.sent == [['after']]


def test_a_line_longer_than_the_batch_limit_is_sent_in_several_batches() -> None:
    broker = Recording()
    broker.hold = threading.Event()
    group = GroupCommit(broker.one, broker.many, 3)
    outcomes: dict[str, Any] = {}
    threads = _line_up_behind_a_held_send(broker, group, 7, outcomes)
    broker.hold.set()
    for thread in threads:
        thread.join(10)
    assert [len(batch) for batch in broker.sent] == [1, 3, 3, 1]
    assert sorted(sum(broker.sent[1:], [])) == [f'b{i}' for i in range(7)]


# -- on a real Redis ------------------------------------------------------------------------------------------
def _calls(client: redis.Redis, command: str) -> int:
    return int(client.info('commandstats').get(f'cmdstat_{command}', {}).get('calls', 0))


def _lpush_calls(client: redis.Redis) -> int:
    return _calls(client, 'lpush')


def _bodies(client: redis.Redis, queue_name: str) -> list[dict[str, Any]]:
    return [json.loads(body) for body in client.lrange(queue_name, 0, -1)]


def _push_from_threads(work: Any, threads: int, each: int, outcomes: list[Any]) -> None:
    """Push ``threads * each`` distinct calls from ``threads`` threads; outcomes get (x, task id or error)."""
    def push_share(start: int) -> None:
        for x in range(start, start + each):
            try:
                outcomes.append((x, work.push(x).task_id))
            except Exception as exc:  # noqa: BLE001  (the test sorts outcomes out)
                outcomes.append((x, exc))
    workers = [threading.Thread(target=push_share, args=(n * each,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)


@pytest.mark.parametrize('kind', [BrokerEnum.REDIS, BrokerEnum.REDIS_STREAM], ids=['list', 'stream'])
def test_pushes_from_50_threads_all_land_once_in_fewer_round_trips(queue_name: str, kind, redis_server) -> None:
    @task_deco(queue_name, broker_kind=kind)
    def work(x):
        pass

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    work.push(-1)
    work.clear()
    lpushes, scripts = _lpush_calls(client), _calls(client, 'evalsha')
    outcomes: list[Any] = []
    _push_from_threads(work, 50, 40, outcomes)
    assert all(isinstance(task_id, str) for _, task_id in outcomes) and len(outcomes) == 2000
    if kind == BrokerEnum.REDIS:
        on_broker = _bodies(client, queue_name)
        assert sorted(body['x'] for body in on_broker) == list(range(2000))  # none lost, none twice
        assert {body['extra']['task_id'] for body in on_broker} == {task_id for _, task_id in outcomes}
        assert _lpush_calls(client) - lpushes < 2000  # pushes shared round trips
    else:
        assert work.get_message_count() == 2000
        assert _calls(client, 'evalsha') > scripts  # some went together, in one script call (XADDs inside count too)


def test_grouped_pushes_during_an_outage_each_raise_or_are_on_the_broker(queue_name: str, redis_server,
                                                                          monkeypatch) -> None:
    monkeypatch.setattr(settings, 'PUBLISH_RETRY_SECONDS', 0)

    @task_deco(queue_name, broker_kind=BrokerEnum.REDIS)
    def work(x):
        pass

    work.push(-1)
    outcomes: list[Any] = []
    pushing = threading.Thread(target=_push_from_threads, args=(work, 20, 300, outcomes))
    pushing.start()
    assert wait_until(lambda: len(outcomes) >= 200, 30)
    redis_server.restart(1.0)  # some pushes are in flight or in line when the server goes
    pushing.join(120)
    assert wait_until(lambda: _loaded(redis_server.port), 10)
    failed = [error for _, error in outcomes if not isinstance(error, str)]
    assert failed, 'no push met the outage'
    assert all(isinstance(error, BrokerUnreachableError) for error in failed), {type(e) for e in failed}
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    on_broker = {body['extra']['task_id'] for body in _bodies(client, queue_name)}
    reported = {task_id for _, task_id in outcomes if isinstance(task_id, str)}
    assert reported <= on_broker  # nothing reported published that is not (the restart keeps the AOF)


def test_grouped_pushes_wait_out_a_short_outage_and_all_land(queue_name: str, redis_server) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.REDIS)
    def work(x):
        pass

    work.push(-1)
    work.clear()
    outcomes: list[Any] = []
    pushing = threading.Thread(target=_push_from_threads, args=(work, 20, 100, outcomes))
    pushing.start()
    assert wait_until(lambda: len(outcomes) >= 100, 30)
    redis_server.restart(1.0)
    pushing.join(120)
    assert all(isinstance(task_id, str) for _, task_id in outcomes) and len(outcomes) == 2000
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    on_broker = _bodies(client, queue_name)
    assert {body['extra']['task_id'] for body in on_broker} == {task_id for _, task_id in outcomes}
    assert set(range(2000)) <= {body['x'] for body in on_broker}  # a lost reply may repeat one (at-least-once)


def test_the_lean_redis_call_replies_as_redis_py_and_survives_a_dropped_connection(queue_name: str,
                                                                                    redis_server) -> None:
    client = redis_client()
    assert redis_commands.send(client, 'LPUSH', queue_name, 'a') == 1
    assert redis_commands.send(client, 'LPUSH', queue_name, 'b', 'c') == 3
    with pytest.raises(redis.ResponseError, match='WRONGTYPE'):
        redis_commands.send(client, 'XADD', queue_name, '*', 'msg', 'x')
    assert redis_commands.send(client, 'LLEN', queue_name) == 3  # the connection still works after it
    redis_server.restart(0.2)  # every pooled connection is now dead
    assert wait_until(lambda: _loaded(redis_server.port), 10)  # accepting, and past LOADING (its data read back)
    assert redis_commands.send(client, 'LPUSH', queue_name, 'd') == 4  # reconnects as redis-py's own call does


def _loaded(port: int) -> bool:
    """Redis answers commands: after a restart it first answers LOADING (a ConnectionError) while it reads its data."""
    probe = redis.Redis(host='127.0.0.1', port=port, socket_connect_timeout=1)
    try:
        return bool(probe.ping())
    except redis.ConnectionError:
        return False
    finally:
        probe.close()


# -- the common push's message ------------------------------------------------------------------------------
@pytest.mark.parametrize('arguments', [{'a': 1, 'b': 'ünï "q"\n'}, {}, {'nested': {'x': [1.5, None, True]}}])
def test_new_body_is_the_message_encode_writes(arguments: dict[str, Any]) -> None:
    task_id, body = message.new_body(arguments)
    decoded_arguments, extra = message.decode(body)
    reference = message.new_extra(task_id)
    assert decoded_arguments == arguments
    assert list(extra) == list(reference) and extra['task_id'] == task_id
    assert abs(extra['publish_time'] - reference['publish_time']) < 1
    assert type(extra['publish_time']) is float and extra['publish_time'] == round(extra['publish_time'], 4)
    assert extra['publish_time_format'] == message._format_time(extra['publish_time'])


def test_new_body_names_the_running_task_as_parent_and_root() -> None:
    token = message.running_task.set(('parent "1"', 'root\u00e9'))
    try:
        task_id, body = message.new_body({'a': 1})
        reference = message.new_extra(task_id)
    finally:
        message.running_task.reset(token)
    _, extra = message.decode(body)
    assert extra['parent_task_id'] == 'parent "1"' and extra['root_task_id'] == 'root\u00e9'
    assert list(extra) == list(reference)


def test_new_body_refuses_what_encode_refuses() -> None:
    with pytest.raises(TypeError, match='JSON-serializable'):
        message.new_body({'a': object()})
    with pytest.raises(TypeError, match="'extra' is reserved"):
        message.new_body({'extra': 1})
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(TypeError, match='JSON-serializable'):
        message.new_body({'a': cycle})


def test_task_ids_are_32_hex_digits_and_distinct() -> None:
    ids = [message.new_task_id() for _ in range(1000)] + [message.new_body({})[0] for _ in range(1000)]
    assert len(set(ids)) == 2000
    assert all(len(task_id) == 32 and int(task_id, 16) >= 0 for task_id in ids)


def test_a_push_that_cannot_fit_a_keyword_only_parameter_still_fails_clearly(queue_name: str) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE)
    def f(a, b=2, *, k):
        pass

    with pytest.raises(TypeError, match="missing a required argument: 'k'"):
        f.push(1)
    with pytest.raises(TypeError, match="missing a required argument: 'k'"):
        f.push(1, 2)
    f.push(1, k=3)
    assert f.get_message_count() == 1


def test_time_texts_follow_the_clock() -> None:
    def time_text() -> str:
        return message.decode(message.new_body({})[1])[1]['publish_time_format']

    first = time_text()  # the time texts are made once a second: the next second must show
    assert wait_until(lambda: time_text() != first, 3)
