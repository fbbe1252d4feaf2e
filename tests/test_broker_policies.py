"""The policies brokers share, each in one home: when a consumer is dead (``liveness``), how a fetch polls and
how often due messages move (``polling``), and Lua's chunked unpack (``lua/chunked.lua``)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time

import pytest

from fsdf import BrokerEnum
from fsdf.brokers import broker_class, liveness
from fsdf.brokers.polling import LONGEST_PAUSE_SECONDS, DueThrottle, poll
from fsdf.hosts import HOST


@pytest.fixture(scope='module')
def gone_pid() -> int:
    """The pid of a process of this host that has exited."""
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_a_consumer_is_dead_once_its_beat_is_stale() -> None:
    now = time.time()
    assert liveness.is_dead('elsewhere', 1, now - liveness.STALE_AFTER_SECONDS, now)
    assert not liveness.is_dead('elsewhere', 1, now - liveness.STALE_AFTER_SECONDS + 1, now)


def test_a_consumer_of_this_host_is_dead_at_once_when_its_process_is_gone(gone_pid: int) -> None:
    now = time.time()
    assert liveness.is_dead(HOST, gone_pid, now, now)
    assert not liveness.is_dead(HOST, os.getpid(), now, now)
    assert not liveness.is_dead('elsewhere', gone_pid, now, now)  # a pid of another host cannot be checked
    assert not liveness.is_dead(HOST, None, now, now)


def test_an_infinite_staleness_trusts_every_beat_but_not_a_gone_process(gone_pid: int) -> None:
    now = time.time()
    assert not liveness.is_dead('elsewhere', 1, 0.0, now, stale_after=math.inf)
    assert liveness.is_dead(HOST, gone_pid, 0.0, now, stale_after=math.inf)


def test_the_staleness_is_read_when_called(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    monkeypatch.setattr(liveness, 'STALE_AFTER_SECONDS', 1.0)
    assert liveness.is_dead('elsewhere', 1, now - 1.5, now)


def test_host_and_pid_read_a_consumer_id() -> None:
    assert liveness.host_and_pid('box-1:4242:ab12cd34') == ('box-1', 4242)
    assert liveness.host_and_pid('odd-id') == ('odd-id', None)


def test_poll_returns_the_first_take_that_finds_something() -> None:
    results = iter([[], [], ['a']])
    began = time.monotonic()
    assert poll(lambda: next(results), 5, threading.Event()) == ['a']
    assert time.monotonic() - began < 0.5  # two short pauses: 2 ms, then 4 ms


def test_poll_backs_off_to_its_longest_pause_and_gives_up_at_the_timeout() -> None:
    calls: list[float] = []
    began = time.monotonic()
    assert poll(lambda: calls.append(time.monotonic()) or [], 0.5, threading.Event()) == []
    assert 0.5 <= time.monotonic() - began < 1.5
    gaps = [later - earlier for earlier, later in zip(calls, calls[1:])]
    # It backs off, up to 50 ms. The last gap is cut by the deadline (it may be under a millisecond):
    # the last full pause is the one before it.
    assert gaps[0] < gaps[-2] and max(gaps) < LONGEST_PAUSE_SECONDS + 0.15
    assert 5 <= len(calls) <= 20  # 2, 4, ... 32 ms, then every 50 ms: not a busy loop


def test_closing_wakes_a_waiting_poll_and_a_closed_poll_takes_nothing() -> None:
    closed, calls = threading.Event(), []
    threading.Timer(0.1, closed.set).start()
    began = time.monotonic()
    assert poll(lambda: calls.append(1) or [], 10, closed) == []
    assert time.monotonic() - began < 1.5  # not the 10 s timeout
    calls.clear()
    assert poll(lambda: calls.append(1) or ['x'], 10, closed) == [] and calls == []


def test_the_due_throttle_says_yes_once_per_period() -> None:
    throttle = DueThrottle(0.1)
    assert throttle.ready(1000.0)
    assert not throttle.ready(1000.05)
    assert throttle.ready(1000.1)
    assert not throttle.ready(1000.15)


@pytest.mark.parametrize('kind', [BrokerEnum.REDIS_ACK_ABLE, BrokerEnum.RedisBrpopLpush],
                         ids=['ack_able', 'brpoplpush'])
def test_lua_moves_more_values_than_one_unpack_can_hold(queue_name: str, kind: BrokerEnum, redis_server) -> None:
    """Lua's unpack() holds about 8000 values: a take of 10,000 (20,000 hash fields) and giving them all
    back on close go through ``chunked``."""
    broker = broker_class(kind)(queue_name)
    bodies = [f'{{"n": {n}}}' for n in range(10_000)]
    broker.publish_many(bodies)
    taken = broker.fetch(10_000, 5)
    assert len(taken) == 10_000 and broker.count() == 0
    broker.close()  # gives every taken message back, in one script
    other = broker_class(kind)(queue_name)
    try:
        assert other.count() == 10_000
        got = sorted(d.body.decode() if isinstance(d.body, bytes) else d.body for d in other.fetch(10_000, 5))
        same = got == sorted(bodies)  # compared outside assert: pytest's diff of 10,000 items takes minutes
        assert same, f'{len(got)} bodies came back, {len(set(got) ^ set(bodies))} differ'
    finally:
        other.close()


def test_an_ack_batch_keeps_what_a_failed_send_had_and_sends_it_next_time() -> None:
    from fsdf.brokers.ack_batch import AckBatch
    sent: list[list[int]] = []
    failing = [True]

    def send(ids: list[int]) -> None:
        if failing[0]:
            failing[0] = False
            raise ConnectionError('backend away')
        sent.append(ids)

    batch = AckBatch(send)
    with pytest.raises(ConnectionError):
        batch.add(1)
    batch.add(2)  # the next ack carries the one the failed send kept
    batch.flush(wait=True)
    assert sent == [[1, 2]]
