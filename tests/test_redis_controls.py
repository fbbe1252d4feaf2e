"""Controls that live in Redis, against a real redis-server: distributed qps, filters, heartbeats, RPC."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import test_controls
import test_rpc
from fsdf import BrokerEnum, redis_registry, rpc, task_deco
from fsdf.controls.distributed_rate import RedisPacer, rate_key
from fsdf.controls.filtering import MemoryFilterStore, SqliteFilterStore, filter_key, filter_store
from fsdf.controls.redis_filter import RedisFilterStore, filter_entry_prefix
from fsdf.hosts import HOST
from fsdf.redis_connection import redis_client
from fsdf.result import AsyncResult, TaskFailedError
from fsdf.rpc import RESULT_TTL_SECONDS, result_key

from helpers import wait_until

# The tests of paces, latencies and expiry are marked `timing` one by one (scripts/test.sh runs them alone);
# filters, heartbeats and RPC results wait with deadlines of 10 s and more, and run in the parallel part.
pytestmark = pytest.mark.usefixtures('redis_server')


REDIS_KINDS = [BrokerEnum.REDIS, BrokerEnum.REDIS_ACK_ABLE, BrokerEnum.RedisBrpopLpush, BrokerEnum.REDIS_STREAM]


@pytest.fixture(params=REDIS_KINDS, ids=['list', 'ack_able', 'brpoplpush', 'stream'])
def broker_kind(request: pytest.FixtureRequest) -> BrokerEnum:
    """The Redis kinds; named like conftest's fixture so the shared filter and RPC tests run with Redis behind them."""
    return request.param


# Filtering and RPC as the embedded brokers pass them, run unchanged with their keys and results in Redis.
test_filter_skips_calls_that_already_succeeded = test_controls.test_filter_skips_calls_that_already_succeeded
test_filter_records_only_after_success = test_controls.test_filter_records_only_after_success
test_results_and_failures_come_back = test_rpc.test_results_and_failures_come_back


def redis_keys(prefix: str) -> list[str]:
    return list(redis_client().scan_iter(match=prefix + '*'))


def rate_of(starts: list[float]) -> float:
    """Starts per second from the first start to the last."""
    starts = sorted(starts)
    return (len(starts) - 1) / (starts[-1] - starts[0])


# -- distributed qps -------------------------------------------------------------------------
TICKER = '''
import logging, sys, time
from fsdf import task_deco, BrokerEnum

out = open(sys.argv[2], 'a', buffering=1)

@task_deco(sys.argv[1], broker_kind=BrokerEnum.PERSISTQUEUE, qps=4, is_using_distributed_frequency_control=True,
           log_level=logging.WARNING)
def tick(i):
    out.write(f'{time.time()}\\n')

tick.consume()
'''


def starts_in(path: Path, after: float = 0.0) -> list[float]:
    """Start times a ticker process wrote (whole lines only), later than ``after``."""
    if not path.exists():
        return []
    lines = path.read_text().split('\n')[:-1]
    return [t for t in map(float, lines) if t > after]


@pytest.mark.timing
def test_distributed_qps_holds_for_one_consumer(queue_name: str) -> None:
    starts: list[float] = []

    @task_deco(queue_name, broker_kind=BrokerEnum.PERSISTQUEUE, qps=4, is_using_distributed_frequency_control=True)
    def tick(i):
        starts.append(time.monotonic())

    tick.push_many(range(40))
    tick.consume()
    try:
        assert wait_until(lambda: len(starts) >= 21, timeout=10)
    finally:
        tick.stop(grace=2)
    assert rate_of(starts[:21]) == pytest.approx(4, rel=0.05)
    assert min(b - a for a, b in zip(starts, starts[1:])) > 0.15  # one by one, never a burst
    assert redis_client().exists(rate_key(queue_name))


@pytest.mark.timing
def test_two_processes_share_the_rate_and_it_holds_when_one_leaves(queue_name: str, run_script,
                                                                  tmp_path: Path) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.PERSISTQUEUE)
    def tick(i):
        pass

    tick.push_many(range(200))
    files = [tmp_path / 'a.txt', tmp_path / 'b.txt']
    procs = [run_script(TICKER, queue_name, str(path)) for path in files]
    try:
        assert wait_until(lambda: all(starts_in(path) for path in files), timeout=15)
        both_running = time.time()
        assert wait_until(lambda: sum(len(starts_in(p, both_running)) for p in files) >= 33, timeout=15)
        per_process = [starts_in(path, both_running) for path in files]
        together, shares = sum(per_process, []), [len(starts) for starts in per_process]

        procs[1].terminate()
        assert procs[1].wait(10) == 0
        settled = time.time() + 2.0
        assert wait_until(lambda: len(starts_in(files[0], settled)) >= 17, timeout=10)
        alone = starts_in(files[0], settled)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
    print(f'distributed qps=4: two processes {rate_of(together):.3f}/s (shares {shares}), '
          f'one left {rate_of(alone):.3f}/s')
    assert rate_of(together) == pytest.approx(4, rel=0.05)
    assert min(shares) >= 6  # both consumers start calls: the rate is shared, not one process's alone
    assert rate_of(alone) == pytest.approx(4, rel=0.05)


@pytest.mark.timing
def test_stop_is_prompt_while_waiting_for_a_distributed_start(queue_name: str) -> None:
    ran = threading.Event()

    @task_deco(queue_name, broker_kind=BrokerEnum.PERSISTQUEUE, qps=0.1, is_using_distributed_frequency_control=True)
    def slow(i):
        ran.set()

    slow.push_many(range(3))
    slow.consume()
    assert ran.wait(10)  # the next start is 10 s away
    began = time.monotonic()
    slow.stop(grace=2)
    assert time.monotonic() - began < 2.0
    assert slow.consumer.counters.succeeded == 1


@pytest.mark.timing
def test_distributed_pacer_starts_nothing_while_redis_is_unreachable(queue_name: str, fsdf_logs) -> None:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        nobody_port = sock.getsockname()[1]
    pacer = RedisPacer(queue_name, 4, logging.getLogger(f'fsdf.{queue_name}'),
                       client=redis_client(f'redis://127.0.0.1:{nobody_port}/0'))
    stopping, taken = threading.Event(), []
    taker = threading.Thread(target=lambda: taken.append(pacer.take(5, stopping)))
    taker.start()
    taker.join(1.5)
    assert taker.is_alive() and taken == []  # still waiting for Redis: no start past the shared limit
    stopping.set()
    taker.join(1.5)
    assert not taker.is_alive() and taken == [0]  # and a stop is still noticed within a second
    assert 'distributed qps: no answer from Redis' in fsdf_logs.text


def test_redis_controls_without_the_redis_client_say_how_to_install_it(queue_name: str, run_script) -> None:
    proc = run_script('''
        import sys
        sys.modules['redis'] = None  # as if redis-py were not installed
        from fsdf import task_deco, BrokerEnum

        @task_deco(sys.argv[1], broker_kind=BrokerEnum.PERSISTQUEUE, qps=2, is_using_distributed_frequency_control=True)
        def f(x):
            pass

        f.push(1)  # publishing needs nothing of the consume side, Redis included
        print('pushed')
        try:
            f.consume()
        except ImportError as exc:
            print(exc)
    ''', queue_name, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert out.startswith('pushed') and 'is_using_distributed_frequency_control keeps its state in Redis' in out
    assert 'pip install "fsdf[redis]"' in out


# -- do_task_filtering in Redis ----------------------------------------------------------------
def test_server_brokers_filter_in_redis_and_embedded_ones_never_do(queue_name: str) -> None:
    for kind in BrokerEnum:
        expected = {BrokerEnum.LOCAL_PYTHON_QUEUE: MemoryFilterStore,
                    BrokerEnum.PERSISTQUEUE: SqliteFilterStore}.get(kind, RedisFilterStore)
        assert type(filter_store(kind, queue_name)) is expected, kind.name


def test_filter_entries_are_redis_keys_of_their_own(queue_name: str, broker_kind: BrokerEnum) -> None:
    @task_deco(queue_name, broker_kind=broker_kind, do_task_filtering=True, task_filtering_expire_seconds=60)
    def f(x):
        pass

    f.clear_filter()
    f.push_many([1, 2])
    assert f.drain(timeout=15) == 2
    client, prefix = redis_client(), filter_entry_prefix(queue_name)
    keys = redis_keys(prefix)
    assert len(keys) == 2 and all(55 <= client.ttl(key) <= 60 for key in keys)
    f.clear_filter()
    assert redis_keys(prefix) == []


@pytest.mark.timing
def test_redis_filter_entries_expire_each_on_its_own(queue_name: str) -> None:
    store = RedisFilterStore(queue_name)
    short, forever, longer = filter_key({'x': 1}), filter_key({'x': 2}), filter_key({'x': 3})
    store.record(short, 0.3)
    store.record(forever, 0)
    store.record(longer, 60)
    client = redis_client()
    assert client.ttl(store.entry_key(forever)) == -1
    assert 55 <= client.ttl(store.entry_key(longer)) <= 60
    assert store.seen(short)
    assert wait_until(lambda: not store.seen(short), timeout=3)
    assert store.seen(forever) and store.seen(longer)
    store.record(longer, 0)  # recorded again forever: the earlier expiry no longer applies
    assert client.ttl(store.entry_key(longer)) == -1
    store.clear()
    assert not store.seen(forever) and not store.seen(longer)


def test_filter_clear_touches_only_its_own_queue(queue_name: str) -> None:
    mine, other = RedisFilterStore(f'{queue_name}*'), RedisFilterStore(f'{queue_name}_other')
    mine.record(filter_key({'x': 1}), 0)
    other.record(filter_key({'x': 1}), 0)
    mine.clear()  # a glob character in the queue name must not widen what clear removes
    assert not mine.seen(filter_key({'x': 1})) and other.seen(filter_key({'x': 1}))
    other.clear()


FILTERED_CONSUMER = '''
import sys
from fsdf import task_deco, BrokerEnum

@task_deco(sys.argv[1], broker_kind=BrokerEnum(int(sys.argv[2])), do_task_filtering=True)
def f(x):
    print('ran', x)

f.push(1)
assert f.drain(timeout=15) == 1
'''


def test_redis_filter_is_shared_by_processes(queue_name: str, broker_kind: BrokerEnum, run_script) -> None:
    ran = []

    @task_deco(queue_name, broker_kind=broker_kind, do_task_filtering=True)
    def f(x):
        ran.append(x)

    f.clear_filter()
    proc = run_script(FILTERED_CONSUMER, queue_name, str(int(broker_kind)), stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and 'ran 1' in out
    f.push(1)
    f.push(2)
    assert f.drain(timeout=15) == 2
    assert ran == [2]  # 1 already ran in the other process
    assert f.consumer.counters.filtered == 1
    f.clear_filter()


# -- heartbeats ----------------------------------------------------------------------------
def test_heartbeat_reports_the_consumer_and_its_counters(queue_name: str) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.PERSISTQUEUE, is_send_consumer_heartbeat_to_redis=True,
               concurrent_num=4, qps=50)
    def f(x):
        return x

    f.push_many(range(5))
    f.consume()
    consumer_id = f.consumer.broker.consumer_id
    client = redis_client()

    def counters() -> dict:
        info = redis_registry.consumer_info(client, consumer_id)
        return json.loads(info['counters']) if info else {}

    try:
        assert wait_until(lambda: counters().get('succeeded') == 5, timeout=10)
        assert redis_registry.live_consumers(client, queue_name) == [consumer_id]
        info = redis_registry.consumer_info(client, consumer_id)
        assert info['queue'] == queue_name and info['broker_kind'] == 'PERSISTQUEUE'
        assert (info['host'], int(info['pid'])) == (HOST, os.getpid())
        assert (int(info['concurrency']), float(info['qps'])) == (4, 50)
        assert float(info['start_time']) <= time.time()
        assert 'succeeded' in json.loads(info['rates'])
    finally:
        f.stop(grace=5)
    assert wait_until(lambda: not redis_registry.live_consumers(client, queue_name), timeout=5)
    assert redis_registry.consumer_info(client, consumer_id) == {}


# -- RPC over Redis --------------------------------------------------------------------------
def test_rpc_results_and_errors_live_in_redis_for_a_while(queue_name: str, broker_kind: BrokerEnum) -> None:
    @task_deco(queue_name, broker_kind=broker_kind, is_using_rpc_mode=True, max_retry_times=0,
               is_print_detail_exception=False)
    def double(x):
        if x < 0:
            raise ValueError(f'negative: {x}')
        return x * 2

    ok, bad = double.push(21), double.push(-1)
    double.consume()
    try:
        assert ok.get(timeout=15) == 42
        with pytest.raises(TaskFailedError, match='failed after 0 retries: ValueError: negative: -1'):
            bad.get(timeout=15)
    finally:
        double.stop(grace=5)
    assert AsyncResult(ok.task_id, broker_kind).result == 42  # a fresh handle, as another process has
    client = redis_client()
    assert 0 < client.ttl(result_key(ok.task_id)) <= RESULT_TTL_SECONDS
    stored = json.loads(client.lindex(result_key(bad.task_id), 0))
    assert stored['exception'] == {'type': 'ValueError', 'message': 'negative: -1'}


def test_rpc_wait_spans_several_blocking_calls(queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpc, 'BLOCK_SLICE_SECONDS', 0.2)  # long waits are cut in slices under the socket timeout

    @task_deco(queue_name, broker_kind=BrokerEnum.REDIS_ACK_ABLE, is_using_rpc_mode=True)
    def slow(x):
        time.sleep(0.7)
        return x

    result = slow.push(5)
    slow.consume()
    try:
        assert result.get(timeout=10) == 5
    finally:
        slow.stop(grace=5)


@pytest.mark.timing
def test_rpc_get_times_out_clearly(queue_name: str, broker_kind: BrokerEnum) -> None:
    @task_deco(queue_name, broker_kind=broker_kind, is_using_rpc_mode=True)
    def f(x):
        return x

    began = time.monotonic()
    with pytest.raises(TimeoutError, match='no result for task'):
        f.push(1).get(timeout=0.5)
    assert 0.5 <= time.monotonic() - began < 2
    f.clear()
