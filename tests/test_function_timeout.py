"""``function_timeout`` on calls blocked in C code (issue 18 item 5): at the deadline the message is
settled (retried or dead-lettered), the worker takes its next message, the stuck thread is abandoned,
its late result ignored, and a cap on abandoned threads warns instead of exhausting the process."""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Iterator

import pytest

from fsdf import BrokerEnum, ConcurrentModeEnum, task_deco
from fsdf.concurrency.timeout import THREAD_TIMEOUT, FunctionTimeoutError, ThreadTimeout, abandoned_threads
from fsdf.config import settings

from helpers import wait_until
from test_controls import dead_letters

pytestmark = pytest.mark.timing  # paces and latencies: run alone by scripts/test.sh


class Peak:
    """Counts calls running at once, and the most seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = self.peak = 0

    def __enter__(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.running -= 1


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A loopback TCP server that accepts connections and never sends a byte (a hung HTTP peer);
    closed at the end, which ends every read still waiting on it."""
    listener = socket.create_server(('127.0.0.1', 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except (TimeoutError, OSError):
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        acceptor.join(2)
        for connection in accepted:
            connection.close()
        listener.close()


def test_sleep_past_the_timeout_is_dead_lettered_at_once_and_the_pool_keeps_its_concurrency(
        queue_name: str, broker_kind: BrokerEnum) -> None:
    peak = Peak()
    settled_at: list[float] = []

    @task_deco(queue_name, broker_kind=broker_kind, function_timeout=1, max_retry_times=0, concurrent_num=4,
               is_print_detail_exception=False)
    def work(seconds: float) -> None:
        if seconds > 5:
            time.sleep(seconds)  # blocked in C: no interrupt can land until it returns
            return
        with peak:
            time.sleep(seconds)

    work.push(30)
    began = time.monotonic()
    work.consume()
    try:
        assert wait_until(lambda: work.consumer.counters.dead_lettered == 1, timeout=5)
        settled_at.append(time.monotonic() - began)
        work.push_many([0.3] * 24)  # while the sleeper's thread still sleeps
        assert wait_until(lambda: work.consumer.counters.succeeded == 24, timeout=10)
    finally:
        work.stop(grace=2)
    assert settled_at[0] < 2.5
    assert peak.peak == 4  # the abandoned sleeper holds no slot
    [letter] = dead_letters(broker_kind, queue_name)
    assert letter['extra']['dead_letter']['exception_type'] == 'FunctionTimeoutError'


def test_timed_out_call_is_retried_by_the_usual_rules(queue_name: str) -> None:
    attempts: list[float] = []

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, function_timeout=0.5, max_retry_times=2,
               is_print_detail_exception=False)
    def nap(x: int) -> None:
        attempts.append(time.monotonic())
        time.sleep(20)

    nap.push(1)
    began = time.monotonic()
    assert nap.drain(timeout=10) == 1
    assert len(attempts) == 3 and time.monotonic() - began < 4
    counters = nap.consumer.counters
    assert (counters.retried, counters.dead_lettered) == (2, 1)


def test_socket_read_that_never_answers_is_settled_and_its_slot_reused(
        queue_name: str, silent_server: tuple[str, int], fsdf_logs) -> None:
    """One worker: a call stuck in recv() would hold it for good; here the next messages run on it."""
    ran: list[int] = []

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, function_timeout=0.5, max_retry_times=0,
               concurrent_num=1, is_print_detail_exception=False)
    def fetch(x: int) -> str:
        if x == 0:
            with socket.create_connection(silent_server) as connection:
                connection.recv(1)  # no timeout: blocks until the server closes
            return 'late'
        ran.append(x)
        return 'ok'

    abandoned_before = THREAD_TIMEOUT.abandoned_total
    fetch.push(0)
    fetch.push_many([1, 2, 3])
    assert fetch.drain(timeout=10) == 4
    assert sorted(ran) == [1, 2, 3]
    assert THREAD_TIMEOUT.abandoned_total == abandoned_before + 1 and abandoned_threads() >= 1
    counters = fetch.consumer.counters
    assert (counters.succeeded, counters.dead_lettered, counters.settled) == (3, 1, 4)
    assert [m['x'] for m in dead_letters(BrokerEnum.LOCAL_PYTHON_QUEUE, queue_name)] == [0]
    assert 'abandoned' in fsdf_logs.text


def test_late_result_of_an_abandoned_call_is_ignored(queue_name: str, fsdf_logs) -> None:
    fsdf_logs.set_level(logging.INFO, logger='fsdf.timeout')
    release = threading.Event()
    returned: list[str] = []

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, function_timeout=0.3, max_retry_times=0,
               is_print_detail_exception=False)
    def stuck(x: int) -> str:
        try:
            release.wait()  # a C-level lock wait: the interrupt lands only once it returns...
        except BaseException:
            pass  # ...and this stubborn function swallows it and returns a result anyway
        returned.append('late')
        return 'late'

    abandoned_before = THREAD_TIMEOUT.abandoned_total
    stuck.push(1)
    assert stuck.drain(timeout=10) == 1
    assert THREAD_TIMEOUT.abandoned_total == abandoned_before + 1
    release.set()
    assert wait_until(lambda: returned == ['late'], timeout=5)
    assert wait_until(lambda: 'its result is ignored' in fsdf_logs.text, timeout=2)
    counters = stuck.consumer.counters
    assert (counters.succeeded, counters.dead_lettered, counters.settled) == (0, 1, 1)  # no second settle
    assert len(dead_letters(BrokerEnum.LOCAL_PYTHON_QUEUE, queue_name)) == 1


def test_single_thread_mode_keeps_fetching_past_a_stuck_call(queue_name: str) -> None:
    ran: list[int] = []

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, concurrent_mode=ConcurrentModeEnum.SINGLE_THREAD,
               function_timeout=0.5, max_retry_times=0, is_print_detail_exception=False)
    def serial(x: int) -> None:
        if x == 0:
            time.sleep(20)
        ran.append(x)

    serial.push(0)
    serial.push_many([1, 2, 3])
    began = time.monotonic()
    assert serial.drain(timeout=10) == 4
    assert ran == [1, 2, 3] and time.monotonic() - began < 3


def test_cap_on_abandoned_threads_warns_and_makes_the_worker_wait(monkeypatch, fsdf_logs) -> None:
    monkeypatch.setattr(settings, 'FUNCTION_TIMEOUT_MAX_ABANDONED', 1)
    strategy = ThreadTimeout()
    release = threading.Event()
    try:
        with pytest.raises(FunctionTimeoutError, match='abandoned'):
            strategy.run(0.1, release.wait)
        assert strategy.abandoned == 1
        threading.Timer(1.0, release.set).start()
        began = time.monotonic()
        # At the cap this call is not abandoned: the worker waits until it returns, then it counts as timed out.
        with pytest.raises(FunctionTimeoutError, match='stopped'):
            strategy.run(0.1, release.wait)
        assert time.monotonic() - began > 0.8
    finally:
        release.set()
    assert 'FUNCTION_TIMEOUT_MAX_ABANDONED=1' in fsdf_logs.text
    assert wait_until(lambda: strategy.abandoned == 0, timeout=5)
    assert strategy.abandoned_total == 1


def test_calls_that_end_in_time_reuse_one_thread_and_see_the_callers_context() -> None:
    from fsdf import message
    token = message.running_task.set(('t1', 'root'))
    try:
        names = {THREAD_TIMEOUT.run(1, lambda: threading.current_thread().name) for _ in range(50)}
        seen = THREAD_TIMEOUT.run(1, message.running_task.get)
    finally:
        message.running_task.reset(token)
    assert len(names) == 1 and seen == ('t1', 'root')
