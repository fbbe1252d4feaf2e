"""RPC mode: the consumer sends results back; AsyncResult waits for them, also from asyncio."""
from __future__ import annotations

import asyncio
import subprocess

import pytest

from fsdf import BrokerEnum, task_deco
from fsdf.result import TaskFailedError


def test_results_and_failures_come_back(queue_name: str, broker_kind: BrokerEnum) -> None:
    @task_deco(queue_name, broker_kind=broker_kind, is_using_rpc_mode=True, max_retry_times=1,
               is_print_detail_exception=False)
    def divide(a, b):
        return {'quotient': a / b, 'pair': (a, b)}

    good, bad = divide.push(1, 4), divide.push(1, 0)
    assert good.status == 'pending'
    divide.consume()
    try:
        assert good.get(timeout=10) == {'quotient': 0.25, 'pair': [1, 4]}  # JSON on every store
        assert good.status == 'success'
        with pytest.raises(TaskFailedError, match='failed after 1 retries: ZeroDivisionError'):
            bad.get(timeout=10)
        assert bad.status == 'failed'
        assert asyncio.run(_await(divide.push(3, 2)))['quotient'] == 1.5
    finally:
        divide.stop(grace=5)


async def _await(result):
    return await result


def test_get_times_out_clearly_without_a_consumer(queue_name: str) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, is_using_rpc_mode=True)
    def f(x):
        return x

    with pytest.raises(TimeoutError, match='no result for task'):
        f.push(1).get(timeout=0.2)


CONSUMER = '''
import sys
from fsdf import task_deco, BrokerEnum

@task_deco(sys.argv[1], broker_kind=BrokerEnum.PERSISTQUEUE, is_using_rpc_mode=True)
def add(a, b):
    return a + b

add.consume()
'''


def test_result_crosses_processes_on_sqlite(queue_name: str, run_script) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.PERSISTQUEUE, is_using_rpc_mode=True)
    def add(a, b):
        return a + b

    results = [add.push(i, i) for i in range(20)]
    proc = run_script(CONSUMER, queue_name, stderr=subprocess.DEVNULL)
    try:
        assert [r.get(timeout=20) for r in results] == [2 * i for i in range(20)]
    finally:
        proc.terminate()
        proc.wait(20)
