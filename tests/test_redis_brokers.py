"""The Redis brokers (REDIS, REDIS_ACK_ABLE, RedisBrpopLpush, REDIS_STREAM) against a real Redis on loopback."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import redis

import test_consume
import test_delayed
from fsdf import BrokerEnum, redis_registry, task_deco
from fsdf.brokers import get_broker, liveness
from fsdf.redis_connection import redis_client
from helpers import KILLED_CONSUMER_SCRIPT, wait_until
from servers._server_process import accepts

KINDS = [BrokerEnum.REDIS, BrokerEnum.REDIS_ACK_ABLE, BrokerEnum.RedisBrpopLpush, BrokerEnum.REDIS_STREAM]
IDS = ['list', 'ack_able', 'brpoplpush', 'stream']
AT_LEAST_ONCE = KINDS[1:]


@pytest.fixture(params=KINDS, ids=IDS)
def broker_kind(request: pytest.FixtureRequest, redis_server) -> BrokerEnum:
    """Each Redis kind; named like conftest's fixture so the shared consume-path tests run on them."""
    return request.param


@pytest.fixture(params=AT_LEAST_ONCE, ids=IDS[1:])
def lease_kind(request: pytest.FixtureRequest, redis_server) -> BrokerEnum:
    """The Redis kinds that keep a taken message until it is acked."""
    return request.param


@pytest.fixture(autouse=True)
def close_redis_brokers(runtime):
    """Each test in a runtime of its own, closed after it: its consumers stop and its brokers close, so
    their lease threads stop before the next test."""
    yield runtime


@pytest.fixture
def raw(redis_server) -> redis.Redis:
    """A plain redis-py client, as another program would have."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


from broker_contract import *  # noqa: E402,F401,F403  (the broker contract, on this module's kinds)
test_delayed_calls_run_on_time = test_delayed.test_delayed_calls_run_on_time
test_push_many_with_countdown = test_delayed.test_push_many_with_countdown
test_a_raw_message_with_a_future_eta_is_delayed_by_the_consumer = \
    test_delayed.test_a_raw_message_with_a_future_eta_is_delayed_by_the_consumer


def raw_publish(raw: redis.Redis, kind: BrokerEnum, queue_name: str, body: str) -> None:
    """Publish as another language's client would: LPUSH onto the list, or XADD a ``msg`` field."""
    if kind == BrokerEnum.REDIS_STREAM:
        raw.xadd(queue_name, {'msg': body})
    else:
        raw.lpush(queue_name, body)


def test_a_raw_client_publishes_with_the_queue_name_alone(queue_name: str, broker_kind, raw) -> None:
    seen = []

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_num=1)
    def add(a, b):
        seen.append(a + b)

    for a in range(5):
        raw_publish(raw, broker_kind, queue_name, json.dumps({'a': a, 'b': 10}))
    assert raw.type(queue_name) == ('stream' if broker_kind == BrokerEnum.REDIS_STREAM else 'list')
    assert add.get_message_count() == 5
    assert add.drain(timeout=10) == 5
    assert seen == [10, 11, 12, 13, 14]  # first in, first out


def test_a_stream_entry_without_msg_is_dead_lettered_whole(queue_name: str, redis_server, raw) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.REDIS_STREAM)
    def add(a, b):
        pass

    add.get_message_count()  # creates the group, as a deployed consumer would have
    raw.xadd(queue_name, {'a': '1', 'b': '2'})
    assert add.drain(timeout=10) == 1
    [letter] = test_consume.dead_letters(BrokerEnum.REDIS_STREAM, queue_name)
    assert letter['extra']['dead_letter']['reason'] == 'malformed'
    assert '{"a": "1", "b": "2"}' in letter['raw_body']


def test_a_consumer_loads_its_scripts_before_its_first_fetch(queue_name: str, broker_kind, raw) -> None:
    """Start-up (issue 19): the scripts are in Redis once leases start, so the first fetch runs each with one
    EVALSHA, not EVALSHA, NOSCRIPT, SCRIPT LOAD and EVALSHA again before the first task."""
    broker = get_broker(broker_kind, queue_name)
    scripts = [value for value in vars(broker).values() if isinstance(value, redis.commands.core.Script)]
    assert scripts  # every Redis kind runs at least the delayed messages' promote script
    raw.script_flush()
    broker.start_leases()
    assert raw.script_exists(*[script.sha for script in scripts]) == [True] * len(scripts)


def test_count_purge_and_the_dlq_queue(queue_name: str, broker_kind, raw) -> None:
    @task_deco(queue_name, broker_kind=broker_kind, max_retry_times=0, is_print_detail_exception=False)
    def f(x):
        raise ValueError('always')

    f.push_many(range(25))
    f.pub({'x': 99}, countdown=60)
    assert f.get_message_count() == 25  # the delayed one waits outside the queue
    f.clear()
    assert f.get_message_count() == 0
    assert raw.zcard(f'fsdf:delayed:{queue_name}') == 0
    f.push_many(range(3))
    assert f.drain(timeout=10) == 3
    assert get_broker(broker_kind, f'{queue_name}_dlq').count() == 3  # an ordinary queue of the same kind
    length = raw.xlen if broker_kind == BrokerEnum.REDIS_STREAM else raw.llen
    assert length(f'{queue_name}_dlq') == 3


def test_delayed_messages_wait_in_a_sorted_set(queue_name: str, broker_kind, raw) -> None:
    @task_deco(queue_name, broker_kind=broker_kind)
    def later(n):
        pass

    due = time.time() + 30
    later.push_many(range(3), eta=due)
    later.pub({'n': 3}, eta=due)
    delayed = raw.zrange(f'fsdf:delayed:{queue_name}', 0, -1, withscores=True)
    assert len(delayed) == 4 and all(score == pytest.approx(due) for _, score in delayed)
    later.clear()


def test_bookkeeping_lives_under_fsdf_and_acks_clear_it(queue_name: str, lease_kind, raw) -> None:
    broker = get_broker(lease_kind, queue_name)
    broker.publish_many([json.dumps({'x': n}) for n in range(5)])
    taken = broker.fetch(3, 1)
    assert [json.loads(d.body)['x'] for d in taken] == [0, 1, 2]
    assert held_by(raw, lease_kind, queue_name, broker.consumer_id) == 3
    others = {key for key in raw.scan_iter(match=f'*{queue_name}*')} - {queue_name}
    assert others and all(key.startswith('fsdf:') for key in others), others
    info = redis_registry.consumer_info(raw, broker.consumer_id)
    assert {'host', 'pid', 'queue', 'start_time'} <= set(info) and info['pid'] == str(os.getpid())
    for delivery in taken:
        broker.ack(delivery)
    assert wait_until(lambda: held_by(raw, lease_kind, queue_name, broker.consumer_id) == 0, 2)  # the flusher
    if lease_kind == BrokerEnum.REDIS_ACK_ABLE:  # a batch wholly settled leaves nothing behind
        assert wait_until(lambda: raw.hlen(f'fsdf:unacked:{queue_name}:{broker.consumer_id}') == 0, 2)
    assert broker.count() == 2
    assert len(broker.fetch(2, 1)) == 2 and broker.count() == 0
    broker.close()  # gives back what it still holds, and leaves the registry
    assert broker.count() == 2 and held_by(raw, lease_kind, queue_name, broker.consumer_id) == 0
    assert broker.consumer_id not in redis_registry.live_consumers(raw, queue_name)


def held_by(raw: redis.Redis, kind: BrokerEnum, queue_name: str, consumer_id: str) -> int:
    """How many messages a consumer holds unacked, read from its bookkeeping key."""
    if kind == BrokerEnum.REDIS_STREAM:
        return len(raw.xpending_range(queue_name, queue_name, '-', '+', 10_000, consumername=consumer_id))
    if kind == BrokerEnum.REDIS_ACK_ABLE:  # batches "b<n>" (lengths:bodies) less the settled tags listed in "a<n>"
        fields = raw.hgetall(f'fsdf:unacked:{queue_name}:{consumer_id}')
        taken = sum(value.split(':', 1)[0].count(',') + 1 for field, value in fields.items() if field[0] == 'b')
        settled = sum(len(set(value.split(',')) - {''}) for field, value in fields.items() if field[0] == 'a')
        return taken - settled + raw.llen(f'fsdf:inbox:{queue_name}:{consumer_id}')
    return raw.llen(f'fsdf:processing:{queue_name}:{consumer_id}')


def test_a_consumer_that_stopped_beating_has_its_messages_returned(queue_name: str, lease_kind, raw) -> None:
    silent = type(get_broker(lease_kind, queue_name))(queue_name)  # takes messages, never beats
    silent.publish_many([json.dumps({'x': n}) for n in range(5)])
    assert len(silent._take(5)) == 5
    raw.zadd(redis_registry.consumers_key(queue_name), {silent.consumer_id: time.time() - 60})
    survivor = get_broker(lease_kind, queue_name)
    assert survivor.count() == 0
    assert survivor.recover_abandoned() == 5
    assert survivor.count() == 5
    assert [json.loads(d.body)['x'] for d in survivor.fetch(5, 1)] == [0, 1, 2, 3, 4]  # oldest first
    assert silent.consumer_id not in raw.zrange(redis_registry.consumers_key(queue_name), 0, -1)


def test_kill_9_of_a_consumer(queue_name: str, broker_kind, run_script, tmp_path) -> None:
    """At-least-once kinds: every task runs after a consumer is killed. REDIS: none runs twice."""
    total = 2000
    done = tmp_path / 'done.txt'
    done.touch()
    out = os.open(done, os.O_WRONLY | os.O_APPEND)

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_num=50)
    def work(x):
        os.write(out, f'{x}\n'.encode())

    work.push_many(range(total))
    child = run_script(KILLED_CONSUMER_SCRIPT, queue_name, str(done), broker_kind.name)
    try:
        assert wait_until(lambda: len(done.read_text().split()) >= 300, 30), \
            f'the consumer ran {len(done.read_text().split())} of 300 calls in 30 s (its stacks: stderr)'
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    started = time.monotonic()
    work.drain(timeout=60)  # this consumer's lease check finds the dead pid and returns its messages
    os.close(out)
    runs = list(map(int, done.read_text().split()))
    duplicates, missing = len(runs) - len(set(runs)), total - len(set(runs))
    print(f'{broker_kind.name}: {missing} lost, {duplicates} ran twice after kill -9, '
          f'drained in {time.monotonic() - started:.1f} s')
    if broker_kind == BrokerEnum.REDIS:
        assert duplicates == 0
        assert missing <= 50  # at most what the dead consumer held: its concurrency
    else:
        assert missing == 0
        assert duplicates <= 100  # what it held: running, prefetched, and acks not yet sent
        assert time.monotonic() - started < 20


def redis_answers(client: redis.Redis) -> bool:
    """Redis answers commands (after a restart it first answers LOADING while it reads its data)."""
    try:
        return client.ping()
    except redis.ConnectionError:  # BusyLoadingError is one
        return False


def test_redis_restart_mid_run(queue_name: str, broker_kind, redis_server) -> None:
    """At-least-once kinds: every call runs. REDIS: none runs twice; a batch taken as Redis went down may be lost."""
    seen: list[int] = []
    lock = threading.Lock()

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_num=8)
    def work(x):
        time.sleep(0.01)
        with lock:
            seen.append(x)

    work.push_many(range(300))
    work.consume()
    at_least_once = broker_kind != BrokerEnum.REDIS
    try:
        assert wait_until(lambda: len(seen) >= 30, 20)
        redis_server.restart(down_seconds=1.0)
        assert wait_until(lambda: redis_answers(redis_client()), 20)  # it accepts while loading its data
        work.push_many(range(300, 350))  # publishing works again after the restart
        assert wait_until(lambda: work.get_message_count() == 0, 20)
        wait_until(lambda: len(set(seen)) == 350, 20 if at_least_once else 2)
    finally:
        work.consumer.stop()
    missing, duplicates = 350 - len(set(seen)), len(seen) - len(set(seen))
    print(f'{broker_kind.name}: {missing} lost, {duplicates} ran twice across a Redis restart')
    if at_least_once:
        assert missing == 0
        assert wait_until(lambda: held_by(redis_client(), broker_kind, queue_name,
                                          work.consumer.broker.consumer_id) == 0, 5)
    else:
        assert duplicates == 0 and missing <= 8  # at most one batch: the consumer's concurrency


@pytest.mark.parametrize('kind', [BrokerEnum.REDIS, BrokerEnum.REDIS_ACK_ABLE], ids=['list', 'ack_able'])
def test_a_consumer_started_while_redis_is_down_runs_when_it_is_back(queue_name: str, kind, redis_server) -> None:
    seen = []

    @task_deco(queue_name, broker_kind=kind)
    def work(x):
        seen.append(x)

    work.push_many(range(20))
    outage = threading.Thread(target=redis_server.restart, args=(2.0,))
    outage.start()
    try:
        assert wait_until(lambda: not accepts(redis_server.port), 10)
        work.consume()  # does not raise: it logs, and fetches once Redis is back
        outage.join()
        assert wait_until(lambda: len(seen) == 20, 20)
    finally:
        outage.join()
        work.consumer.stop()


def test_a_long_call_is_not_redelivered_while_its_consumer_beats(queue_name: str, redis_server, monkeypatch) -> None:
    """No visibility timeout: a message stays with a live consumer however long its call runs."""
    monkeypatch.setattr(liveness, 'STALE_AFTER_SECONDS', 2.5)  # shorter than the call below
    kind_class = type(get_broker(BrokerEnum.REDIS_ACK_ABLE, queue_name))
    busy, other = kind_class(queue_name), kind_class(queue_name)
    busy.publish('{"x": 1}')
    [delivery] = busy.fetch(1, 1)  # starts its beats
    deadline = time.monotonic() + 6  # more than twice the stale period
    while time.monotonic() < deadline:
        assert other.recover_abandoned() == 0 and other.count() == 0
        time.sleep(0.5)
    busy.ack(delivery)
    busy.close()
    other.close()
    assert other.count() == 0


def test_single_thread_gives_back_its_read_ahead_in_order_on_stop(queue_name: str, redis_server, raw) -> None:
    """SINGLE_THREAD on REDIS_ACK_ABLE sends the next take while a full batch runs: a stop during a call
    must run nothing after it, give back the batch's rest and the messages taken ahead, in queue order,
    and leave none held by the stopped consumer."""
    ran: list[int] = []
    slow_started, release = threading.Event(), threading.Event()
    total, stop_at = 2000, 600  # batches of up to 256 by then: the take after 600's batch is out

    @task_deco(queue_name, broker_kind=BrokerEnum.REDIS_ACK_ABLE, concurrent_mode=5)
    def record(x):
        ran.append(x)
        if x == stop_at:
            slow_started.set()
            release.wait(10)

    record.push_many(range(total))
    record.consume()
    assert slow_started.wait(20)
    stopper = threading.Thread(target=record.consumer.stop, kwargs={'grace': 10})
    stopper.start()
    assert record.consumer._stopping.wait(10)
    release.set()
    stopper.join(15)
    assert ran == list(range(stop_at + 1))
    assert record.get_message_count() == total - stop_at - 1
    consumer_id = record.consumer.broker.consumer_id
    assert wait_until(lambda: held_by(raw, BrokerEnum.REDIS_ACK_ABLE, queue_name, consumer_id) == 0, 5)
    assert record.drain(timeout=30) == total - stop_at - 1
    assert ran == list(range(total))  # the given-back messages kept their order: none run twice, none lost


def test_a_take_whose_reply_was_lost_is_given_back_by_the_lease_check(queue_name: str, lease_kind, raw) -> None:
    """Messages a consumer's bookkeeping holds that the consumer does not know of (the reply to its take
    was lost) go back to the queue once two lease checks in a row have seen them; known ones stay."""
    broker = get_broker(lease_kind, queue_name)
    broker.publish_many([json.dumps({'x': n}) for n in range(5)])
    known = broker.fetch(2, 1)  # held and known
    assert len(broker._take_and_ack(3, [])) == 3  # taken into the bookkeeping, the reply dropped
    assert broker.recover_abandoned() == 0  # seen once: maybe a take whose reply is on its way
    assert broker.recover_abandoned() == 3
    assert held_by(raw, lease_kind, queue_name, broker.consumer_id) == 2
    assert sorted(json.loads(d.body)['x'] for d in broker.fetch(5, 1)) == [2, 3, 4]
    broker.ack_many(known)


def test_a_dead_consumer_returns_only_the_unsettled_messages_of_a_batch(queue_name: str, redis_server, raw) -> None:
    """REDIS_ACK_ABLE keeps a take as one batch: after some of it was acked, requeued and dead-lettered, the
    consumer's death returns exactly the rest, oldest first."""
    silent = type(get_broker(BrokerEnum.REDIS_ACK_ABLE, queue_name))(queue_name)
    silent.publish_many([json.dumps({'x': n}) for n in range(6)])
    taken = silent.fetch(6, 1)
    assert [json.loads(d.body)['x'] for d in taken] == list(range(6))
    silent.ack(taken[0])
    silent.ack(taken[3])
    assert silent.flush_acks()
    silent.requeue(taken[4])  # back at the publishing end
    silent.dead_letter(taken[1], json.dumps({'x': 1, 'why': 'test'}))
    assert silent.flush_acks()
    assert held_by(raw, BrokerEnum.REDIS_ACK_ABLE, queue_name, silent.consumer_id) == 2
    silent._closed.set()  # it stops taking and beating, without the goodbye close() says
    raw.zadd(redis_registry.consumers_key(queue_name), {silent.consumer_id: time.time() - 60})
    survivor = get_broker(BrokerEnum.REDIS_ACK_ABLE, queue_name)
    assert survivor.recover_abandoned() == 2
    assert [json.loads(d.body)['x'] for d in survivor.fetch(6, 1)] == [2, 5, 4]
    assert survivor.dlq.count() == 1
    assert raw.hlen(f'fsdf:unacked:{queue_name}:{silent.consumer_id}') == 0


def test_messages_an_earlier_version_held_one_field_each_are_returned(queue_name: str, redis_server, raw) -> None:
    """A dead consumer of an earlier fsdf kept one hash field per message (its number -> its body): they come
    back, oldest (lowest number) first."""
    dead = 'vm:1:old-version'
    raw.hset(f'fsdf:unacked:{queue_name}:{dead}', mapping={str(n): json.dumps({'x': n}) for n in (12, 10, 11)})
    raw.zadd(redis_registry.consumers_key(queue_name), {dead: time.time() - 60})
    survivor = get_broker(BrokerEnum.REDIS_ACK_ABLE, queue_name)
    assert survivor.recover_abandoned() == 3
    assert [json.loads(d.body)['x'] for d in survivor.fetch(5, 1)] == [10, 11, 12]


EARLIER_RETURN_SCRIPT = """
local flat = redis.call('HGETALL', KEYS[2])
local held = {}
for i = 1, #flat, 2 do held[#held + 1] = {tonumber(flat[i]), flat[i + 1]} end
table.sort(held, function(a, b) return a[1] > b[1] end)
local bodies = redis.call('LRANGE', KEYS[3], 0, -1)
for _, entry in ipairs(held) do bodies[#bodies + 1] = entry[2] end
if #bodies > 0 then redis.call('RPUSH', KEYS[1], unpack(bodies)) end
redis.call('DEL', KEYS[2], KEYS[3])
return #bodies
"""  # fsdf 58e8e60's redis_ack_return.lua (one field per message), as a consumer of that version runs it


def test_an_earlier_versions_recovery_leaves_this_versions_batches_alone(queue_name: str, redis_server, raw) -> None:
    """During a rolling upgrade a consumer of the earlier version may find a dead consumer of this one: its
    script must fail without writing (the messages wait for a consumer of this version), never push a batch
    as one message."""
    dead = type(get_broker(BrokerEnum.REDIS_ACK_ABLE, queue_name))(queue_name)  # takes, never beats
    dead.publish_many([json.dumps({'x': n}) for n in range(3)])
    assert len(dead._take_and_ack(3, [])) == 3
    hash_key, inbox = f'fsdf:unacked:{queue_name}:{dead.consumer_id}', f'fsdf:inbox:{queue_name}:{dead.consumer_id}'
    before = raw.hgetall(hash_key)
    with pytest.raises(redis.ResponseError, match='compare'):
        raw.eval(EARLIER_RETURN_SCRIPT, 3, queue_name, hash_key, inbox)
    assert raw.hgetall(hash_key) == before and raw.llen(queue_name) == 0
    raw.zadd(redis_registry.consumers_key(queue_name), {dead.consumer_id: time.time() - 60})
    assert get_broker(BrokerEnum.REDIS_ACK_ABLE, queue_name).recover_abandoned() == 3
