"""ASYNC mode: async def calls on one shared loop, bounded, with retries, DLQ and timeouts;
async def under THREADING; a plain def under ASYNC."""
from __future__ import annotations

import asyncio
import threading

from fsdf import BrokerEnum, ConcurrentModeEnum, task_deco

ASYNC = ConcurrentModeEnum.ASYNC


def test_async_calls_share_one_loop_and_stay_bounded(queue_name: str, broker_kind: BrokerEnum) -> None:
    loops, running, peak = set(), 0, 0

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_mode=ASYNC, concurrent_num=100)
    async def wait(i):
        nonlocal running, peak
        loops.add(id(asyncio.get_running_loop()))
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    wait.push_many(range(1000))
    assert wait.drain(timeout=30) == 1000
    assert len(loops) == 1  # never a new loop per call
    assert 50 <= peak <= 100  # many at once, never above the bound


def test_async_retries_dead_letters_and_timeouts(queue_name: str, broker_kind: BrokerEnum) -> None:
    attempts: dict[int, int] = {}

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_mode=ASYNC, max_retry_times=1,
               function_timeout=0.2, is_using_rpc_mode=True, is_print_detail_exception=False)
    async def work(i):
        attempts[i] = attempts.get(i, 0) + 1
        if i == 1 and attempts[i] == 1:
            raise ValueError('once')
        if i == 2:
            raise ValueError('always')
        if i == 3:
            await asyncio.sleep(5)  # longer than function_timeout
        return i * 10

    results = [work.push(i) for i in range(4)]
    assert work.drain(timeout=30) == 4
    assert attempts == {0: 1, 1: 2, 2: 2, 3: 2}
    counters = work.consumer.counters
    assert (counters.succeeded, counters.dead_lettered, counters.retried) == (2, 2, 3)
    assert results[0].get(5) == 0 and results[1].get(5) == 10
    assert results[3].status == 'failed'


def test_async_def_under_threading_and_plain_def_under_async(queue_name: str) -> None:
    seen = []

    @task_deco(f'{queue_name}_t', broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, concurrent_num=4)
    async def coroutine_in_threads(i):
        await asyncio.sleep(0.01)
        seen.append(('coroutine', i))

    @task_deco(f'{queue_name}_a', broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, concurrent_mode=ASYNC)
    def plain_in_async(i):
        seen.append(('plain', i, threading.current_thread().name))

    coroutine_in_threads.push_many(range(5))
    plain_in_async.push_many(range(5))
    assert coroutine_in_threads.drain(timeout=10) == 5 and plain_in_async.drain(timeout=10) == 5
    assert sorted(i for kind, i, *_ in seen if kind == 'coroutine') == list(range(5))
    plain_threads = {rest[0] for kind, i, *rest in seen if kind == 'plain'}
    assert 'fsdf-event-loop' not in plain_threads  # a blocking function never runs on the loop


def test_await_result_from_async_code(queue_name: str) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, concurrent_mode=ASYNC,
               is_using_rpc_mode=True)
    async def double(x):
        return 2 * x

    async def caller():
        return [await double.push(i) for i in range(3)]

    double.consume()
    try:
        assert asyncio.run(caller()) == [0, 2, 4]
    finally:
        double.stop(grace=5)
