"""Controls around the call on the embedded brokers: qps, function_timeout, expiry, filtering,
the do-not-run window, per-message overrides, and the counters' rates."""
from __future__ import annotations

import datetime as dt
import json
import logging
import statistics
import threading
import time
import uuid

import pytest

from fsdf import BrokerEnum, task_deco
from fsdf.brokers import get_broker
from fsdf.concurrency.timeout import FunctionTimeoutError, ThreadTimeout
from fsdf.controls.filtering import SqliteFilterStore, TaskFilter, filter_key
from fsdf.controls.overrides import check_overrides
from fsdf.controls.window import DoNotRunWindow

from helpers import wait_until

pytestmark = pytest.mark.timing  # paces and latencies: run alone by scripts/test.sh


def dead_letters(kind: BrokerEnum, queue_name: str) -> list[dict]:
    """Every message in ``<queue>_dlq``, parsed, acked."""
    dlq = get_broker(kind, f'{queue_name}_dlq')
    out = []
    while batch := dlq.fetch(100, 0.05):
        for delivery in batch:
            out.append(json.loads(delivery.body))
            dlq.ack(delivery)
    return out


def publish_raw(kind: BrokerEnum, queue_name: str, arguments: dict, **extra) -> None:
    """Publish as another program would, with an ``extra`` we choose (e.g. an old publish_time)."""
    extra.setdefault('task_id', uuid.uuid4().hex)
    extra.setdefault('publish_time', time.time())
    get_broker(kind, queue_name).publish(json.dumps({**arguments, 'extra': extra}))


class StartRecorder:
    """The function's start times (monotonic), thread-safe."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.lock = threading.Lock()

    def mark(self) -> None:
        with self.lock:
            self.starts.append(time.monotonic())

    def rate(self) -> float:
        starts = sorted(self.starts)
        return (len(starts) - 1) / (starts[-1] - starts[0])


# -- qps ---------------------------------------------------------------------------------
def test_qps_paces_starts(queue_name: str, broker_kind: BrokerEnum) -> None:
    recorder = StartRecorder()

    @task_deco(queue_name, broker_kind=broker_kind, qps=25)
    def tick(x):
        recorder.mark()

    tick.push_many(range(50))
    assert tick.drain(timeout=15) == 50
    gaps = [b - a for a, b in zip(recorder.starts, recorder.starts[1:])]
    assert recorder.rate() == pytest.approx(25, rel=0.05)
    assert statistics.median(gaps) == pytest.approx(0.04, abs=0.005)
    assert min(gaps) > 0.02  # paced one by one, no bursts


def test_qps_holds_while_calls_are_slower_than_the_interval(queue_name: str, broker_kind: BrokerEnum) -> None:
    recorder = StartRecorder()
    peak_threads = 0

    @task_deco(queue_name, broker_kind=broker_kind, qps=10, concurrent_num=20)
    def slow(x):
        nonlocal peak_threads
        recorder.mark()
        peak_threads = max(peak_threads, slow.consumer.pool.thread_count)
        time.sleep(0.6)

    slow.push_many(range(30))
    assert slow.drain(timeout=15) == 30
    assert recorder.rate() == pytest.approx(10, rel=0.05)  # 0.6 s calls do not slow a 10/s rate
    assert 6 <= peak_threads <= 10  # the pool grew to about qps * duration, not to concurrent_num


def test_slow_rate_one_start_per_interval(queue_name: str) -> None:
    recorder = StartRecorder()

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, qps=2)
    def tick(x):
        recorder.mark()

    tick.push_many(range(5))
    assert tick.drain(timeout=10) == 5
    gaps = [b - a for a, b in zip(recorder.starts, recorder.starts[1:])]
    assert all(gap == pytest.approx(0.5, abs=0.03) for gap in gaps), gaps


def test_pool_shrinks_when_calls_get_fast_again(queue_name: str) -> None:
    slow_calls = 15

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, qps=20, concurrent_num=30)
    def work(x):
        if x < slow_calls:
            time.sleep(0.5)

    pool = work.consumer.pool
    pool.keep_alive = 0.5  # the governor only ever lowers it; short here to keep the test short
    work.push_many(range(slow_calls))
    work.consume()
    try:
        assert wait_until(lambda: pool.thread_count >= 7, timeout=5)
        work.push_many(range(slow_calls, slow_calls + 80))  # 4 s of fast calls at 20/s
        assert wait_until(lambda: pool.thread_count <= 2, timeout=8)
        assert work.get_message_count() > 0  # it shrank while the fast calls were still coming
    finally:
        work.stop()


def test_unreachable_qps_is_reported_once(queue_name: str, fsdf_logs) -> None:
    recorder = StartRecorder()

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, qps=20, concurrent_num=2)
    def slow(x):
        recorder.mark()
        time.sleep(0.2)  # 2 threads x 5 calls/s: 10/s at most

    slow.push_many(range(60))
    slow.consume()
    try:
        assert wait_until(lambda: 'cannot be reached' in fsdf_logs.text, timeout=8)
        wait_until(lambda: len(recorder.starts) >= 45, timeout=5)
    finally:
        slow.stop()
    warnings = [r for r in fsdf_logs.records if 'cannot be reached' in r.getMessage()]
    assert len(warnings) == 1
    assert 'concurrent_num=2' in warnings[0].getMessage()
    assert recorder.rate() == pytest.approx(10, rel=0.15)


# -- function_timeout ----------------------------------------------------------------------
def test_timeout_stops_the_call_retries_then_dead_letters(queue_name: str, broker_kind: BrokerEnum) -> None:
    attempts = []
    iterations = [0]

    @task_deco(queue_name, broker_kind=broker_kind, function_timeout=0.3, max_retry_times=2)
    def spin(x):
        attempts.append(time.monotonic())
        while True:
            iterations[0] += 1
            time.sleep(0.005)

    spin.push(1)
    began = time.monotonic()
    assert spin.drain(timeout=10) == 1
    assert len(attempts) == 3
    assert time.monotonic() - began < 3
    counters = spin.consumer.counters
    assert (counters.failed, counters.retried, counters.dead_lettered) == (1, 2, 1)
    [letter] = dead_letters(broker_kind, queue_name)
    assert letter['x'] == 1
    assert letter['extra']['dead_letter']['exception_type'] == 'FunctionTimeoutError'
    stopped_at = iterations[0]
    assert not wait_until(lambda: iterations[0] != stopped_at, timeout=0.3)  # no runaway loop left


def test_per_message_timeout_wins_over_the_task(queue_name: str, broker_kind: BrokerEnum) -> None:
    done = []

    @task_deco(queue_name, broker_kind=broker_kind, max_retry_times=0, concurrent_num=2)
    def nap(x):
        for _ in range(40):  # 0.4 s in short sleeps, so the interrupt lands at once
            time.sleep(0.01)
        done.append(x)

    nap.pub({'x': 1}, function_timeout=0.1)
    nap.pub({'x': 2})
    assert nap.drain(timeout=10) == 2
    assert done == [2]
    assert [m['x'] for m in dead_letters(broker_kind, queue_name)] == [1]


def test_call_blocked_in_c_is_abandoned_at_its_deadline() -> None:
    began = time.monotonic()
    with pytest.raises(FunctionTimeoutError, match='abandoned'):
        ThreadTimeout().run(0.1, time.sleep, 2)  # the interrupt cannot land inside sleep(): the worker moves on
    assert time.monotonic() - began < 1


def test_task_catching_exception_cannot_swallow_the_timeout() -> None:
    def stubborn() -> str:
        try:
            while True:
                time.sleep(0.005)
        except Exception:
            return 'swallowed'

    with pytest.raises(FunctionTimeoutError):
        ThreadTimeout().run(0.1, stubborn)


def test_timeouts_at_the_edge_never_leak_into_the_next_call(queue_name: str, fsdf_logs) -> None:
    """Calls that end right around their deadline: each is either a success or a timeout, and an
    interrupt meant for one never hits the consumer or a later call."""
    finished, interrupted_after = [], []

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, function_timeout=0.01,
               max_retry_times=0, concurrent_num=4, is_print_detail_exception=False)
    def edge(x):
        began = time.monotonic()
        try:
            end = began + 0.008 + (x % 5) * 0.001
            while time.monotonic() < end:
                pass
            finished.append(x)
        except BaseException:
            interrupted_after.append(time.monotonic() - began)
            raise

    edge.push_many(range(300))
    assert edge.drain(timeout=20) == 300
    counters = edge.consumer.counters
    assert counters.succeeded + counters.dead_lettered == 300
    # Each timeout stopped its own call (a few, starved of the GIL on a busy machine, are stopped before
    # their first line and so are not in interrupted_after)...
    assert counters.dead_lettered >= len(interrupted_after) >= counters.dead_lettered * 0.8 > 0
    # ...never early: an interrupt left over from another call would be raised at the first line of the next.
    # (The deadline counts from when the call's thread took it; on a busy machine its first line may run a
    # few ms later.)
    assert min(interrupted_after) >= 0.005
    assert counters.succeeded <= len(finished)  # a call stopped after its last line counts as timed out
    assert 'could not settle' not in fsdf_logs.text and 'uncaught error' not in fsdf_logs.text


# -- msg_expire_seconds --------------------------------------------------------------------
def test_expired_messages_are_acked_counted_and_logged_sparingly(
        queue_name: str, broker_kind: BrokerEnum, fsdf_logs) -> None:
    ran = []

    @task_deco(queue_name, broker_kind=broker_kind, msg_expire_seconds=30)
    def f(x):
        ran.append(x)

    for x in range(300):
        publish_raw(broker_kind, queue_name, {'x': x}, publish_time=time.time() - 60)
    f.push(1000)
    assert f.drain(timeout=20) == 301
    assert ran == [1000]
    assert f.consumer.counters.expired == 300
    assert f.get_message_count() == 0
    lines = [r for r in fsdf_logs.records if 'expired' in r.getMessage()]
    assert 1 <= len(lines) <= 2


def test_message_expiry_overrides_the_task(queue_name: str, broker_kind: BrokerEnum) -> None:
    ran = []

    @task_deco(queue_name, broker_kind=broker_kind)  # no expiry on the task
    def f(x):
        ran.append(x)

    publish_raw(broker_kind, queue_name, {'x': 1}, publish_time=time.time() - 10, msg_expire_seconds=5)
    publish_raw(broker_kind, queue_name, {'x': 2}, publish_time=time.time() - 10)
    publish_raw(broker_kind, queue_name, {'x': 3}, publish_time=time.time() - 10, msg_expire_seconds=60)
    assert f.drain(timeout=10) == 3
    assert sorted(ran) == [2, 3]
    assert f.consumer.counters.expired == 1


def test_expiry_is_judged_once_retries_run_on(queue_name: str, broker_kind: BrokerEnum) -> None:
    attempts = []

    @task_deco(queue_name, broker_kind=broker_kind, msg_expire_seconds=1.0, max_retry_times=3)
    def flaky(x):
        attempts.append(x)
        if len(attempts) < 3:
            time.sleep(0.6)  # the retries together outlast msg_expire_seconds
            raise ValueError('not yet')

    _ = flaky.consumer  # built before the push (pushing builds none), so the message is young when its turn comes
    flaky.push(1)
    assert flaky.drain(timeout=10) == 1
    counters = flaky.consumer.counters
    assert (len(attempts), counters.retried, counters.succeeded, counters.expired) == (3, 2, 1, 0)


# -- do_task_filtering ---------------------------------------------------------------------
def test_filter_skips_calls_that_already_succeeded(queue_name: str, broker_kind: BrokerEnum) -> None:
    ran = []

    @task_deco(queue_name, broker_kind=broker_kind, do_task_filtering=True, concurrent_num=1)
    def f(a, b):
        ran.append((a, b))

    f.clear_filter()
    f.push(1, 2)
    assert f.drain(timeout=10) == 1
    f.pub({'b': 2, 'a': 1})  # the same call, keys in another order
    f.push(1, 3)
    assert f.drain(timeout=10) == 2
    assert ran == [(1, 2), (1, 3)]
    assert f.consumer.counters.filtered == 1
    assert f.get_message_count() == 0  # the filtered one was acked
    f.clear_filter()
    f.push(1, 2)
    assert f.drain(timeout=10) == 1
    assert ran[-1] == (1, 2)


def test_filter_records_only_after_success(queue_name: str, broker_kind: BrokerEnum) -> None:
    attempts = []

    @task_deco(queue_name, broker_kind=broker_kind, do_task_filtering=True, max_retry_times=1,
               concurrent_num=1, is_print_detail_exception=False)
    def f(x):
        attempts.append(x)
        if x == 'bad' or attempts.count(x) == 1:
            raise ValueError('fails')  # 'ok' fails once then succeeds on retry; 'bad' always fails

    f.clear_filter()
    f.push('ok')
    f.push('bad')
    assert f.drain(timeout=10) == 2
    f.push('ok')
    f.push('bad')
    assert f.drain(timeout=10) == 2
    assert attempts.count('ok') == 2  # recorded after its retry succeeded: the twin was filtered
    assert attempts.count('bad') == 4  # dead-lettered twice: a failure filters nothing
    assert f.consumer.counters.filtered == 1
    assert len(dead_letters(broker_kind, queue_name)) == 2


def test_filter_entries_expire(queue_name: str, broker_kind: BrokerEnum) -> None:
    ran = []

    @task_deco(queue_name, broker_kind=broker_kind, do_task_filtering=True, task_filtering_expire_seconds=0.3)
    def f(x):
        ran.append(x)

    f.clear_filter()
    f.push(7)
    assert f.drain(timeout=10) == 1
    store = next(m for m in f.consumer.middleware if isinstance(m, TaskFilter)).store
    assert store.seen(filter_key({'x': 7}))
    assert wait_until(lambda: not store.seen(filter_key({'x': 7})), timeout=3)
    f.push(7)
    assert f.drain(timeout=10) == 1
    assert ran == [7, 7]


def test_sqlite_filter_is_shared_by_processes_of_the_machine(queue_name: str, run_script) -> None:
    proc = run_script(f'''
        from fsdf.controls.filtering import SqliteFilterStore, filter_key
        SqliteFilterStore({queue_name!r}).record(filter_key({{'x': 1}}), 0)
    ''')
    assert proc.wait(30) == 0
    store = SqliteFilterStore(queue_name)
    assert store.seen(filter_key({'x': 1})) and not store.seen(filter_key({'x': 2}))
    store.clear()
    assert not store.seen(filter_key({'x': 1}))


# -- do-not-run window ---------------------------------------------------------------------
def test_window_contains_spans_midnight() -> None:
    night = DoNotRunWindow(('22:00:00', '06:00:00'))
    assert night.contains(dt.time(23, 30)) and night.contains(dt.time(0, 0)) and night.contains(dt.time(5, 59, 59))
    assert not night.contains(dt.time(6, 0)) and not night.contains(dt.time(12, 0))
    day = DoNotRunWindow(('10:00:00', '22:00:00'))
    assert day.contains(dt.time(10, 0)) and not day.contains(dt.time(22, 0)) and not day.contains(dt.time(9, 59))
    assert night.seconds_left(dt.datetime(2024, 1, 1, 23, 0)) == 7 * 3600


def test_window_keeps_messages_in_the_broker(queue_name: str, broker_kind: BrokerEnum) -> None:
    now = dt.datetime.now()
    end = (now + dt.timedelta(seconds=2)).replace(microsecond=0)  # between 1 and 2 s from now
    window = ((now - dt.timedelta(hours=1)).strftime('%H:%M:%S'), end.strftime('%H:%M:%S'))
    started = []

    @task_deco(queue_name, broker_kind=broker_kind, is_do_not_run_by_specify_time_effect=True,
               do_not_run_by_specify_time=window)
    def f(x):
        started.append(dt.datetime.now())

    f.push_many(range(3))
    f.consume()
    try:
        assert not wait_until(lambda: started, timeout=0.8)
        assert f.get_message_count() == 3  # waiting in the broker, not fetched and held
        assert wait_until(lambda: len(started) == 3, timeout=5)
    finally:
        f.stop()
    assert min(started) >= end


def test_stop_is_prompt_inside_the_window(queue_name: str) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, is_do_not_run_by_specify_time_effect=True,
               do_not_run_by_specify_time=('00:00:00', '23:59:59'))
    def f(x):
        pass

    window = next(m for m in f.consumer.middleware if isinstance(m, DoNotRunWindow))
    if not window.contains(dt.datetime.now().time()):
        pytest.skip('run in the last second of the day')
    f.push(1)
    f.consume()
    began = time.monotonic()
    f.stop()
    assert time.monotonic() - began < 2.5
    assert f.get_message_count() == 1


# -- per-message overrides and counters ----------------------------------------------------
def test_message_max_retry_times_wins(queue_name: str, broker_kind: BrokerEnum) -> None:
    attempts = []

    @task_deco(queue_name, broker_kind=broker_kind, max_retry_times=0, is_print_detail_exception=False)
    def fail(x):
        attempts.append(x)
        raise ValueError('always')

    fail.pub({'x': 'more'}, max_retry_times=2)
    fail.pub({'x': 'task default'})
    assert fail.drain(timeout=10) == 2
    assert attempts.count('more') == 3 and attempts.count('task default') == 1
    assert fail.consumer.counters.retried == 2


def test_overrides_are_checked_at_publish_time() -> None:
    assert check_overrides({'function_timeout': 2.5, 'max_retry_times': 0}) == {
        'function_timeout': 2.5, 'max_retry_times': 0}
    with pytest.raises(TypeError, match='cannot be set per message'):
        check_overrides({'qps': 3})
    with pytest.raises(ValueError, match='max_retry_times'):
        check_overrides({'max_retry_times': 1.5})
    with pytest.raises(ValueError, match='msg_expire_seconds'):
        check_overrides({'msg_expire_seconds': -1})


def test_counters_give_per_second_rates(queue_name: str) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, qps=50, log_level=logging.WARNING)
    def f(x):
        pass

    counters = f.consumer.counters
    began = time.monotonic()
    counters.rates()  # the first reading starts the window
    f.push_many(range(50))
    assert f.drain(timeout=10) == 50
    rates = counters.rates()
    assert rates['succeeded'] == pytest.approx(50 / (time.monotonic() - began), rel=0.05)
    assert rates['failed'] == 0
