"""Publishing across a broker outage: pushes wait for the broker (PUBLISH_RETRY_SECONDS), then fail clearly."""
from __future__ import annotations

import threading
import time

import pytest

from fsdf import BrokerEnum, BrokerUnreachableError, task_deco
from fsdf.config import settings
from helpers import wait_until
from servers._server_process import accepts


@pytest.mark.parametrize('kind', [BrokerEnum.REDIS, BrokerEnum.REDIS_ACK_ABLE], ids=['list', 'ack_able'])
def test_no_push_raises_across_a_2s_redis_restart_and_every_push_is_consumed(queue_name: str, kind,
                                                                              redis_server) -> None:
    seen = set()

    @task_deco(queue_name, broker_kind=kind)
    def work(x):
        seen.add(x)

    work.push(-1)  # connected before the outage
    outage = threading.Thread(target=redis_server.restart, args=(2.0,))
    outage.start()
    pushed, during = [], 0
    try:
        assert wait_until(lambda: not accepts(redis_server.port), 10)
        started = time.monotonic()
        while outage.is_alive() or time.monotonic() - started < 3:
            during += not accepts(redis_server.port)  # this push starts while Redis is down
            work.push(len(pushed))  # raised ConnectionError before publishers retried
            pushed.append(len(pushed))
            time.sleep(0.01)
    finally:
        outage.join()
    assert during >= 1
    work.consume()
    try:
        assert wait_until(lambda: seen >= set(pushed), 30), f'{len(set(pushed) - seen)} pushes never ran'
    finally:
        work.consumer.stop()
        work.consumer.broker.close()


def test_with_retry_off_a_push_during_an_outage_raises_one_clear_error(queue_name: str, redis_server,
                                                                       monkeypatch) -> None:
    monkeypatch.setattr(settings, 'PUBLISH_RETRY_SECONDS', 0)

    @task_deco(queue_name, broker_kind=BrokerEnum.REDIS)
    def work(x):
        pass

    work.push(0)
    outage = threading.Thread(target=redis_server.restart, args=(2.0,))
    outage.start()
    try:
        assert wait_until(lambda: not accepts(redis_server.port), 10)
        started = time.monotonic()
        with pytest.raises(BrokerUnreachableError, match=f"queue '{queue_name}' on REDIS.*PUBLISH_RETRY_SECONDS"):
            work.push(1)
        assert time.monotonic() - started < 1.5  # at once, not after a retry window
    finally:
        outage.join()
    assert wait_until(lambda: _pushes(work), 20)  # and it works again once Redis is back


def _pushes(work) -> bool:
    try:
        work.push(2)
        return True
    except BrokerUnreachableError:
        return False
