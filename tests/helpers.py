"""Small helpers shared by the tests (fixtures live in conftest.py)."""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from fsdf import task_deco


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` s pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def every_call_runs_across_a_restart(queue_name: str, kind, restart: Callable[[], None],
                                     settled: Optional[Callable[[], bool]] = None) -> None:
    """Consume 100 calls with 4 threads, ``restart()`` the server after 10 have run, publish 50 more,
    and assert that all 150 run, and then that ``settled()`` (nothing left on the server) holds."""
    seen = set()
    lock = threading.Lock()

    @task_deco(queue_name, broker_kind=kind, concurrent_num=4)
    def work(x):
        time.sleep(0.01)
        with lock:
            seen.add(x)

    work.push_many(range(100))
    work.consume()
    try:
        assert wait_until(lambda: len(seen) >= 10, 30)
        restart()
        work.push_many(range(100, 150))  # publishing works again after the restart
        assert wait_until(lambda: len(seen) == 150, 60), f'{150 - len(seen)} calls never ran'
        if settled is not None:
            assert wait_until(settled, 20)
    finally:
        work.consumer.stop()
