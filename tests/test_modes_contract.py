"""One contract for every concurrency mode on every broker: results, retries, dead letters,
timeouts, qps accuracy and graceful stop, each combination in its own process (gevent and
eventlet must monkey-patch before anything else is imported, so every mode runs the same way)."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import wait_until

from fsdf import BrokerEnum, ConcurrentModeEnum, get_publisher, task_deco

pytestmark = pytest.mark.timing  # paces and latencies: run alone by scripts/test.sh

SCRIPT = '''
import sys
MODE, BROKER, QUEUE, READY = sys.argv[1:5]
if MODE == 'GEVENT':
    from gevent import monkey; monkey.patch_all()
elif MODE == 'EVENTLET':
    import eventlet; eventlet.monkey_patch()
import asyncio, collections, contextlib, json, os, time
from pathlib import Path
from fsdf import BrokerEnum, ConcurrentModeEnum, task_deco
from fsdf.result import TaskFailedError

mode, kind = ConcurrentModeEnum[MODE], BrokerEnum[BROKER]
IS_ASYNC = mode == ConcurrentModeEnum.ASYNC
HOLD_CONCURRENCY = 1 if mode == ConcurrentModeEnum.SINGLE_THREAD else 4
SLOW, HOLD, TIMEOUT = 30.0, 0.6, 0.3
common = dict(broker_kind=kind, concurrent_mode=mode, is_print_detail_exception=False)
attempts = collections.Counter()
slow, held, ticks = collections.Counter(), collections.Counter(), []


def nap(seconds):
    """Blocking sleep the way a task in this mode blocks; in OS threads a timeout interrupts
    only between bytecodes, so there it is a loop of short sleeps."""
    if MODE in ('THREADING', 'SINGLE_THREAD'):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.01)
    else:
        time.sleep(seconds)


def plan(kind_, i):
    """What a call of ``work`` does before it sleeps: count the attempt, fail as told."""
    attempts[f'{kind_}{i}'] += 1
    if kind_ == 'flaky' and attempts[f'{kind_}{i}'] <= 2:
        raise ValueError('flaky fails twice')
    if kind_ == 'fail':
        raise KeyError(f'always fails {i}')
    return SLOW if kind_ == 'slow' else 0


@contextlib.contextmanager
def tracked(state):
    """Count runs that started, that ran to their end, and that unwound (ended or were stopped)."""
    state['started'] += 1
    try:
        yield
        state['ended'] += 1
    finally:
        state['unwound'] += 1


if IS_ASYNC:
    @task_deco(QUEUE, is_using_rpc_mode=True, max_retry_times=2, function_timeout=TIMEOUT, **common)
    async def work(kind_, i):
        seconds = plan(kind_, i)
        if seconds:
            with tracked(slow):
                await asyncio.sleep(seconds)
        return i * 2

    @task_deco(QUEUE + '_tick', qps=20, **common)
    async def tick(i):
        ticks.append(time.monotonic())

    @task_deco(QUEUE + '_hold', concurrent_num=HOLD_CONCURRENCY, **common)
    async def hold(i):
        with tracked(held):
            await asyncio.sleep(HOLD)
else:
    @task_deco(QUEUE, is_using_rpc_mode=True, max_retry_times=2, function_timeout=TIMEOUT, **common)
    def work(kind_, i):
        seconds = plan(kind_, i)
        if seconds:
            with tracked(slow):
                nap(seconds)
        return i * 2

    @task_deco(QUEUE + '_tick', qps=20, **common)
    def tick(i):
        ticks.append(time.monotonic())

    @task_deco(QUEUE + '_hold', concurrent_num=HOLD_CONCURRENCY, **common)
    def hold(i):
        with tracked(held):
            nap(HOLD)

report = {}
# Results, retries, dead letters and timeouts: one drain of one queue.
echoes = [work.push('echo', i) for i in range(5)]
flaky, failing, slow_call = work.push('flaky', 0), work.push('fail', 0), work.push('slow', 0)
tick.push_many(range(50))
tick.consume()
began = time.monotonic()
report['settled'] = work.drain(timeout=30)
report['drain_seconds'] = round(time.monotonic() - began, 2)
report['results'] = [r.get(5) for r in echoes]
report['flaky'] = flaky.get(5)
report['attempts'] = dict(attempts)
report['slow'] = dict(slow)
report['counters'] = work.consumer.counters.snapshot()
for name, call in (('fail_result', failing), ('slow_result', slow_call)):
    try:
        call.get(5)
        report[name] = 'returned'
    except TaskFailedError as exc:
        report[name] = str(exc)
dlq = work.publisher.broker.dlq
dead = {}
for delivery in dlq.fetch(10, 1.0):
    body = json.loads(delivery.body)
    dead[f"{body['kind_']}{body['i']}"] = body['extra']['dead_letter']
    dlq.ack(delivery)
report['dlq'] = dead

# qps: 50 starts paced at 20/s (they ran alongside the drain above).
deadline = time.monotonic() + 15
while len(ticks) < 50 and time.monotonic() < deadline:
    time.sleep(0.05)
tick.stop()
report['ticks'] = len(ticks)
steady = ticks[5:]
report['qps'] = round((len(steady) - 1) / (steady[-1] - steady[0]), 2) if len(steady) > 1 else 0

# Graceful stop: SIGTERM from the test while calls run.
hold.push_many(range(20))
hold.consume()
while held['started'] < HOLD_CONCURRENCY:
    time.sleep(0.01)
try:  # the file exists once opened: a SIGTERM right after must land inside this try
    Path(READY).write_text('running')
    while True:
        time.sleep(0.05)
except (SystemExit, KeyboardInterrupt):
    pass
report['held'] = dict(held)
report['left_in_queue'] = hold.get_message_count()
print(json.dumps(report), flush=True)
'''

MODES = ['THREADING', 'SINGLE_THREAD', 'GEVENT', 'EVENTLET', 'ASYNC']
BROKERS = ['LOCAL_PYTHON_QUEUE', 'PERSISTQUEUE', 'REDIS_ACK_ABLE']


@pytest.fixture
def broker_env(request: pytest.FixtureRequest, broker: str) -> None:
    """A Redis server for the Redis brokers (the child finds it through FSDF_REDIS_URL)."""
    if broker.startswith('REDIS'):
        request.getfixturevalue('redis_server')


@pytest.mark.parametrize('broker', BROKERS)
@pytest.mark.parametrize('mode', MODES)
def test_mode_contract(mode: str, broker: str, broker_env: None, run_script, queue_name: str,
                       tmp_path: Path) -> None:
    ready = tmp_path / 'ready'
    proc = run_script(SCRIPT, mode, broker, queue_name, str(ready), stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: ready.exists() or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out.strip(), err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])

    # Results come back (RPC), a flaky call succeeds on its third attempt.
    assert report['settled'] == 8
    assert report['results'] == [0, 2, 4, 6, 8] and report['flaky'] == 0
    assert report['attempts'] == {**{f'echo{i}': 1 for i in range(5)}, 'flaky0': 3, 'fail0': 3, 'slow0': 3}
    counters = report['counters']
    assert (counters['succeeded'], counters['dead_lettered'], counters['retried']) == (6, 2, 6)

    # A call that always fails, and one that always runs too long, end in <queue>_dlq after their retries.
    assert report['dlq']['fail0']['exception_type'] == 'KeyError'
    assert 'always fails 0' in report['dlq']['fail0']['exception_message']
    assert report['dlq']['slow0']['exception_type'] == 'FunctionTimeoutError'
    assert report['dlq']['slow0']['exception_message'].startswith('work ran longer than function_timeout=0.3 s')
    assert report['dlq']['fail0']['retries'] == report['dlq']['slow0']['retries'] == 2
    assert 'KeyError' in report['fail_result'] and 'failed after 2 retries' in report['slow_result']
    # Stopped, not left running: three 30 s attempts settled in seconds, each one unwound.
    assert report['slow'] == {'started': 3, 'unwound': 3}
    assert report['drain_seconds'] < 15

    # qps=20 held within 10 %.
    assert report['ticks'] == 50
    assert 18 <= report['qps'] <= 22, report['qps']

    # SIGTERM: running calls finished, the rest given back, nothing lost.
    held = report['held']
    assert held['started'] == held['ended'] == held['unwound'] >= 1
    assert report['left_in_queue'] + held['ended'] == 20, report


MULTI_PROCESS_SCRIPT = '''
import sys
if sys.argv[2] == 'GEVENT':
    from gevent import monkey; monkey.patch_all()
import asyncio, os, time
from fsdf import task_deco, BrokerEnum, ConcurrentModeEnum

queue, mode, out = sys.argv[1], ConcurrentModeEnum[sys.argv[2]], sys.argv[3]


def record(i):
    with open(out, 'a') as f:
        f.write(f'{os.getpid()} {i}\\n')


if mode == ConcurrentModeEnum.ASYNC:
    @task_deco(queue, broker_kind=BrokerEnum.PERSISTQUEUE, concurrent_mode=mode, concurrent_num=20)
    async def work(i):
        await asyncio.sleep(0.2)
        record(i)
else:
    @task_deco(queue, broker_kind=BrokerEnum.PERSISTQUEUE, concurrent_mode=mode, concurrent_num=20)
    def work(i):
        time.sleep(0.2)  # patched: yields to the other greenlets
        record(i)

if __name__ == '__main__':
    work.multi_process_consume(2)
'''


@pytest.mark.parametrize('mode', ['ASYNC', 'GEVENT'])
def test_multi_process_consume_with_async_and_green_children(mode: str, run_script, queue_name: str,
                                                             tmp_path: Path) -> None:
    out = tmp_path / 'out.txt'
    get_publisher(queue_name, BrokerEnum.PERSISTQUEUE).publish_many([{'i': i} for i in range(300)])
    parent = run_script(MULTI_PROCESS_SCRIPT, queue_name, mode, str(out))
    try:
        def records() -> list[tuple[int, int]]:
            return [tuple(map(int, line.split())) for line in out.read_text().splitlines()] if out.exists() else []
        assert wait_until(lambda: len(records()) >= 300, timeout=30)
        assert sorted(i for _, i in records()) == list(range(300))  # every message once
        assert len({pid for pid, _ in records()}) == 2  # both children consumed
    finally:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(20) == 0


def test_async_tasks_publish_and_await_results_without_blocking_the_loop(queue_name: str) -> None:
    """A task on the shared loop fans out with aio_push and awaits the results, which run on the
    same loop: it finishes only if neither publishing nor waiting blocks the loop."""
    local, async_mode = BrokerEnum.LOCAL_PYTHON_QUEUE, ConcurrentModeEnum.ASYNC

    @task_deco(f'{queue_name}_square', broker_kind=local, concurrent_mode=async_mode, is_using_rpc_mode=True)
    async def square(x):
        await asyncio.sleep(0.05)
        return x * x

    @task_deco(queue_name, broker_kind=local, concurrent_mode=async_mode, is_using_rpc_mode=True, concurrent_num=2)
    async def total(n):
        published = await asyncio.gather(*(square.aio_push(i) for i in range(n)))
        published.append(await square.aio_pub({'x': 10}, task_id=f'{queue_name}-ten'))
        return [sum(await asyncio.gather(*published)), published[-1].task_id]

    square.consume()
    total.consume()
    try:
        results = [total.push(n) for n in (3, 5)]
        assert [r.get(20) for r in results] == [[105, f'{queue_name}-ten'], [130, f'{queue_name}-ten']]
    finally:
        total.stop(grace=5)
        square.stop(grace=5)


def test_plain_def_under_async_is_bounded_by_concurrent_num_and_really_stopped(queue_name: str) -> None:
    """A blocking function under ASYNC runs in concurrent_num threads (not asyncio's few default
    ones), and a run past function_timeout is stopped in its thread, not just abandoned."""
    lock, state = threading.Lock(), {'running': 0, 'peak': 0, 'slow_finished': 0}

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, concurrent_mode=ConcurrentModeEnum.ASYNC,
               concurrent_num=12, function_timeout=0.5, max_retry_times=0, is_print_detail_exception=False)
    def block(seconds):
        with lock:
            state['running'] += 1
            state['peak'] = max(state['peak'], state['running'])
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:  # short sleeps: a thread is interrupted between bytecodes
                time.sleep(0.01)
            if seconds > 1:
                state['slow_finished'] += 1
        finally:
            with lock:
                state['running'] -= 1

    block.push(30)
    block.push_many([0.3] * 23)
    assert block.drain(timeout=20) == 24
    counters = block.consumer.counters
    assert (counters.succeeded, counters.dead_lettered) == (23, 1)
    assert state['peak'] == 12
    assert state['running'] == 0 and state['slow_finished'] == 0
