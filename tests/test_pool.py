"""ShrinkableThreadPool grows only while work waits, never past its bound, and shrinks when idle;
a consumer never holds more unsettled messages than its pool can run."""
from __future__ import annotations

import threading
import time

import pytest

from fsdf import BrokerEnum, task_deco
from fsdf.brokers import get_broker
from fsdf.concurrency import ShrinkableThreadPool
from fsdf.consumer import CHUNKED_MARGIN

pytestmark = pytest.mark.timing  # paces and latencies: run alone by scripts/test.sh


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_sequential_work_uses_one_thread() -> None:
    pool = ShrinkableThreadPool(20, keep_alive=5)
    for _ in range(50):
        done = threading.Event()
        pool.submit(done.set)
        assert done.wait(5)
        wait_until(lambda: pool.idle_count == 1)  # the worker has reported itself idle
    assert pool.thread_count == 1


def test_grows_to_the_bound_under_blocking_load_and_no_further() -> None:
    pool = ShrinkableThreadPool(8, keep_alive=5)
    release = threading.Event()
    started = threading.Semaphore(0)

    def block() -> None:
        started.release()
        release.wait(10)

    for _ in range(20):
        pool.submit(block)
    for _ in range(8):
        assert started.acquire(timeout=5)
    assert pool.thread_count == 8
    assert not started.acquire(timeout=0.2)  # the other 12 wait: no ninth thread
    release.set()
    for _ in range(12):
        assert started.acquire(timeout=5)
    assert pool.thread_count == 8


def test_shrinks_after_keep_alive() -> None:
    pool = ShrinkableThreadPool(6, keep_alive=0.3, name='shrink-test')
    release = threading.Event()
    for _ in range(6):
        pool.submit(release.wait, 10)
    assert wait_until(lambda: pool.thread_count == 6)
    release.set()
    assert wait_until(lambda: pool.thread_count == 0, timeout=5)
    names = {t.name for t in threading.enumerate()}
    assert not any(name.startswith('shrink-test') for name in names)


def test_errors_inside_calls_do_not_kill_threads() -> None:
    pool = ShrinkableThreadPool(1, keep_alive=5)
    done = threading.Event()
    pool.submit(lambda: 1 / 0)
    pool.submit(done.set)
    assert done.wait(5) and pool.thread_count == 1


def test_consumer_holds_no_more_unsettled_messages_than_its_pool(queue_name: str) -> None:
    peak = 0
    gate = threading.Event()
    broker = get_broker(BrokerEnum.PERSISTQUEUE, queue_name)

    @task_deco(queue_name, broker_kind=BrokerEnum.PERSISTQUEUE, concurrent_num=4)
    def slow(x):
        nonlocal peak
        gate.wait(5)
        with broker._lock:
            taken = broker._db.execute(f'SELECT COUNT(*) FROM {broker._table} WHERE status = 2').fetchone()[0]
        peak = max(peak, taken)

    slow.push_many(range(40))
    slow.consume()
    try:
        assert wait_until(lambda: slow.consumer._in_flight == 4)
        assert slow.get_message_count() == 36  # the rest are still in the broker
        gate.set()
        assert wait_until(lambda: slow.consumer.counters.succeeded == 40, timeout=20)
    finally:
        slow.stop(grace=5)
    # Once calls are short (under SHORT_CALL_SECONDS), the pool's prefetch margin may be held too, and
    # CHUNKED_MARGIN once they take under CHUNK_BELOW_SECONDS (the calls here are then that short).
    assert peak <= 4 + max(slow.consumer.pool.prefetch_margin, CHUNKED_MARGIN)


def _most_held(queue_name: str, **options) -> tuple[int, int]:
    """Run 3,000 no-op calls on LOCAL_PYTHON_QUEUE: the most messages the consumer held at once, and its pool's
    prefetch margin."""
    peak = 0

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, **options)
    def fast(x):
        nonlocal peak
        peak = max(peak, fast.consumer._in_flight)

    fast.push_many(range(3000))
    assert fast.drain(timeout=30) == 3000
    return peak, fast.consumer.pool.prefetch_margin


def test_very_short_calls_are_held_up_to_the_chunked_margin(queue_name: str) -> None:
    """Calls under CHUNK_BELOW_SECONDS go to the threads in chunks, and the consumer may hold CHUNKED_MARGIN
    beyond its threads (a fetch per few messages cost more than the calls), never more."""
    peak, margin = _most_held(queue_name, concurrent_num=4)
    assert 4 + margin < peak <= 4 + CHUNKED_MARGIN


def test_single_thread_keeps_its_own_margin_for_very_short_calls(queue_name: str) -> None:
    """SINGLE_THREAD runs a fetched batch itself, in order: very short calls do not raise what it holds to
    CHUNKED_MARGIN (a larger batch did not make it faster, and a stop gives back what it holds)."""
    peak, margin = _most_held(queue_name, concurrent_mode=5)
    assert margin < CHUNKED_MARGIN and 1 < peak <= 1 + margin


def test_several_consumers_can_share_one_pool(queue_name: str) -> None:
    shared = ShrinkableThreadPool(3, keep_alive=5)
    seen = []
    lock = threading.Lock()

    def make(name):
        @task_deco(name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, specify_concurrent_pool=shared)
        def record(x):
            with lock:
                seen.append((name, x, threading.current_thread().name))
        return record

    first, second = make(f'{queue_name}_a'), make(f'{queue_name}_b')
    first.push_many(range(20))
    second.push_many(range(20))
    assert first.drain(timeout=10) == 20 and second.drain(timeout=10) == 20
    assert len(seen) == 40
    assert {thread for _, _, thread in seen} <= {f'fsdf-worker-{i}' for i in range(1, 4)}
