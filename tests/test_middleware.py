"""The middleware API, delayed retries, the message runner on its own, and publishing without a consumer."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Optional

import pytest

import fsdf
from fsdf import BrokerEnum, ConsumerContext, Middleware, RunOutcome, task_deco
from fsdf.brokers import get_broker
from helpers import wait_until
from conftest import ROOT


class Recorder(Middleware):
    """Records every hook it sees; skips calls with x < 0; stamps every published message."""

    def __init__(self) -> None:
        self.contexts: list[ConsumerContext] = []
        self.stopped = threading.Event()
        self.fetches = 0
        self.outcomes: list[RunOutcome] = []
        self.published: list[str] = []

    def on_start(self, context: ConsumerContext) -> None:
        self.contexts.append(context)

    def on_stop(self, context: ConsumerContext) -> None:
        self.stopped.set()

    def before_fetch(self, wanted: int) -> int:
        self.fetches += 1
        return wanted

    def skip_reason(self, arguments: dict[str, Any], extra: dict[str, Any]) -> Optional[str]:
        return 'negative' if arguments.get('x', 0) < 0 else None

    def after_settle(self, outcome: RunOutcome) -> None:
        self.outcomes.append(outcome)

    def on_publish(self, queue_name: str, arguments: dict[str, Any], extra: dict[str, Any]) -> None:
        self.published.append(queue_name)
        extra['stamp'] = 'seen'


def test_a_middleware_sees_every_hook(queue_name: str, broker_kind: BrokerEnum) -> None:
    recorder = Recorder()

    @task_deco(queue_name, broker_kind=broker_kind, middleware=[recorder], max_retry_times=1)
    def work(x):
        if x == 13:
            raise ValueError('unlucky')
        return x * 2

    work.push_many([1, 2, 13, -1])
    assert recorder.published == [queue_name] * 4
    assert work.drain(timeout=30) == 4
    [context] = recorder.contexts
    assert (context.queue_name, context.broker_kind) == (queue_name, broker_kind)
    assert context.consumer_id == work.consumer.broker.consumer_id and context.stopping.is_set()
    assert recorder.stopped.is_set() and recorder.fetches >= 1
    by_x = {o.arguments['x']: o for o in recorder.outcomes}
    assert sorted(by_x) == [-1, 1, 2, 13]
    assert (by_x[1].status, by_x[1].result, by_x[2].result) == ('succeeded', 2, 4)
    assert by_x[1].extra['stamp'] == 'seen' and by_x[1].duration >= 0 and by_x[1].finished >= by_x[1].started > 0
    assert (by_x[13].status, by_x[13].retries, type(by_x[13].exception)) == ('dead_lettered', 1, ValueError)
    assert by_x[-1].status == 'negative'
    assert work.consumer.counters.skipped == 1 and work.consumer.counters.succeeded == 2


def test_process_wide_middleware_applies_until_removed(queue_name: str) -> None:
    recorder = Recorder()

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE)
    def work(x):
        return x

    work.push(1)  # publisher built before the registration: it still applies from now on
    fsdf.add_middleware(recorder)
    try:
        work.push(2)
        work.drain(timeout=10)
    finally:
        fsdf.remove_middleware(recorder)
    work.push(3)
    assert recorder.published == [queue_name]
    assert sorted(o.arguments['x'] for o in recorder.outcomes) == [1, 2]
    assert [o.extra.get('stamp') for o in sorted(recorder.outcomes, key=lambda o: o.arguments['x'])] == [None, 'seen']


def test_only_overridden_hooks_are_called_per_message(queue_name: str) -> None:
    class SettleOnly(Middleware):
        def after_settle(self, outcome: RunOutcome) -> None:
            pass

    only = SettleOnly()

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, middleware=[only])
    def work(x):
        return x

    runner = work.consumer.runner
    assert only in runner._settle_hooks and only not in runner._skip_checks
    assert only not in work.consumer._fetch_gates and not work.publisher._publish_hooks


def test_settle_hooks_see_every_call_of_a_chunk(queue_name: str) -> None:
    """Calls under a millisecond settle in chunks: after_settle still sees each message once (the default
    after_settle_many calls it), and a middleware overriding after_settle_many gets whole chunks, in order."""
    class ChunkSeer(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.chunks: list[list[int]] = []

        def after_settle_many(self, outcomes: list[RunOutcome]) -> None:
            self.chunks.append([o.arguments['x'] for o in outcomes])

    per_message, per_chunk = Recorder(), ChunkSeer()

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, concurrent_mode=5,
               middleware=[per_message, per_chunk])
    def work(x):
        return x

    work.push_many(range(2000))
    assert work.drain(timeout=30) == 2000
    assert sorted(o.arguments['x'] for o in per_message.outcomes) == list(range(2000))
    assert all(o.status == 'succeeded' and o.finished >= o.started > 0 for o in per_message.outcomes)
    chunked = [x for chunk in per_chunk.chunks for x in chunk]
    assert len(per_chunk.chunks) < 1000 and all(chunk == sorted(chunk) for chunk in per_chunk.chunks)
    assert sorted(chunked + [o.arguments['x'] for o in per_chunk.outcomes]) == list(range(2000))


def test_middleware_option_rejects_what_is_not_middleware(queue_name: str) -> None:
    with pytest.raises(ValueError, match='fsdf.Middleware'):
        task_deco(queue_name, middleware=[object()])
    with pytest.raises(TypeError, match='fsdf.Middleware'):
        fsdf.add_middleware(print)  # type: ignore[arg-type]


def test_parent_and_root_ids_across_three_levels(queue_name: str, broker_kind: BrokerEnum) -> None:
    seen_by_child = Recorder()

    @task_deco(f'{queue_name}_3', broker_kind=broker_kind)
    def grandchild(n):
        pass

    @task_deco(f'{queue_name}_2', broker_kind=broker_kind, middleware=[seen_by_child])
    def child(n):
        grandchild.push(n)

    @task_deco(queue_name, broker_kind=broker_kind)
    def root(n):
        child.push(n)

    root_id = root.push(1).task_id
    root.drain(timeout=10)
    child.drain(timeout=10)
    [child_outcome] = seen_by_child.outcomes
    [delivery] = get_broker(broker_kind, f'{queue_name}_3').fetch(1, 1)
    child_extra, grandchild_extra = child_outcome.extra, json.loads(delivery.body)['extra']
    assert (child_extra['parent_task_id'], child_extra['root_task_id']) == (root_id, root_id)
    assert grandchild_extra['parent_task_id'] == child_outcome.task_id != root_id
    assert grandchild_extra['root_task_id'] == root_id


def test_a_foreign_message_is_a_root(queue_name: str) -> None:
    kind = BrokerEnum.LOCAL_PYTHON_QUEUE

    @task_deco(f'{queue_name}_child', broker_kind=kind)
    def child(n):
        pass

    @task_deco(queue_name, broker_kind=kind)
    def parent(n):
        child.push(n)

    get_broker(kind, queue_name).publish('{"n": 1, "extra": {"task_id": "from-java"}}')
    get_broker(kind, queue_name).publish('{"n": 2}')  # no task id at all: its children have no parent
    parent.drain(timeout=10)
    extras = [json.loads(d.body)['extra'] for d in get_broker(kind, f'{queue_name}_child').fetch(2, 1)]
    assert [(e.get('parent_task_id'), e.get('root_task_id')) for e in extras] == [('from-java', 'from-java'),
                                                                                    (None, None)]


def test_delayed_retry_frees_the_worker_and_keeps_its_count(queue_name: str, broker_kind: BrokerEnum) -> None:
    attempts: list[tuple[int, float]] = []
    others: list[float] = []

    @task_deco(queue_name, broker_kind=broker_kind, concurrent_num=1, max_retry_times=3, retry_delay=0.3)
    def flaky(x):
        if x == 'other':
            others.append(time.monotonic())
            return
        attempts.append((len(attempts), time.monotonic()))
        if len(attempts) < 3:
            raise ValueError('not yet')

    flaky.push('first')
    flaky.consume()
    try:
        assert wait_until(lambda: len(attempts) == 1, 10)
        flaky.push('other')  # runs while the retry waits on the broker: the only worker is free
        assert wait_until(lambda: len(attempts) == 3, 10)
    finally:
        flaky.stop()
    gaps = [later - earlier for (_, earlier), (_, later) in zip(attempts, attempts[1:])]
    assert all(gap >= 0.29 for gap in gaps), gaps
    assert others and others[0] < attempts[1][1]
    counters = flaky.consumer.counters
    assert (counters.retried, counters.succeeded, counters.dead_lettered) == (2, 2, 0)


def test_delayed_retries_end_in_the_dlq_with_their_count(queue_name: str) -> None:
    kind = BrokerEnum.PERSISTQUEUE

    @task_deco(queue_name, broker_kind=kind, max_retry_times=2, retry_delay=0.05, retry_backoff=True)
    def always_fails(x):
        raise RuntimeError('no')

    assert [always_fails.consumer.runner.retry_delay(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    always_fails.push(1)
    always_fails.consume()
    dlq = get_broker(kind, f'{queue_name}_dlq')
    try:
        assert wait_until(lambda: dlq.count() == 1, 10)
    finally:
        always_fails.stop()
    [delivery] = dlq.fetch(1, 1)
    dead = json.loads(delivery.body)['extra']['dead_letter']
    assert (dead['reason'], dead['retries'], dead['exception_type']) == ('failed', 2, 'RuntimeError')


def test_backoff_is_capped(queue_name: str) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, retry_delay=1, retry_backoff=True,
               retry_backoff_max=5)
    def work():
        pass

    assert [work.consumer.runner.retry_delay(n) for n in (1, 2, 3, 4, 10)] == [1, 2, 4, 5, 5]


def test_the_runner_runs_one_message_in_the_test_thread(queue_name: str, broker_kind: BrokerEnum) -> None:
    threads = []

    @task_deco(queue_name, broker_kind=broker_kind)
    def work(x):
        threads.append(threading.current_thread())
        return x + 1

    work.push(41)
    runner = work.consumer.runner
    [delivery] = runner.broker.fetch(1, 1)
    outcome = runner.process(delivery)
    assert (outcome.status, outcome.result) == ('succeeded', 42)
    assert threads == [threading.current_thread()]
    assert work.get_message_count() == 0 and runner.broker.fetch(1, 0.05) == []
    assert work.consumer.counters.succeeded == 1


def test_pushing_and_scheduling_build_no_consumer_and_no_pool(tmp_path) -> None:
    script = textwrap.dedent('''
        import gc, os
        os.environ['FSDF_CONFIG_FILE'] = '0'
        os.environ['FSDF_PERSIST_QUEUE_PATH'] = {folder!r}
        import fsdf
        from fsdf import BrokerEnum, task_deco
        from fsdf.concurrency.base import WorkerPool
        from fsdf.consumer import Consumer
        from fsdf.scheduling import FsdfBackgroundScheduler

        @task_deco('only_published', broker_kind=BrokerEnum.PERSISTQUEUE, qps=5, is_using_rpc_mode=True,
                   do_task_filtering=True)
        def add(a, b):
            return a + b

        add.push(1, 2)
        add.pub({{'a': 1, 'b': 2}}, countdown=60)
        add.push_many([(1, 2), (3, 4)])
        scheduler = FsdfBackgroundScheduler()
        scheduler.add_timing_publish_job(add, 'interval', seconds=3600, args=(1, 2))
        gc.collect()
        # The scheduler's own executor threads are a pool named fsdf-scheduler; a consumer's is named after its queue.
        built = [type(o).__name__ for o in gc.get_objects() if isinstance(o, Consumer)
                 or isinstance(o, WorkerPool) and getattr(o, 'name', '') != 'fsdf-scheduler']
        print('BUILT', built, add.get_message_count())
    ''').format(folder=str(tmp_path))
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=60,
                         env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin'})
    assert out.returncode == 0, out.stderr
    assert 'BUILT [] 3' in out.stdout, out.stdout + out.stderr


def test_the_middleware_example_runs(tmp_path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / 'test_frame' / 'example_middleware.py')], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60,
                         env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin', 'FSDF_CONFIG_FILE': '0'})
    assert out.returncode == 0, out.stderr
    assert 'middleware_demo: 3 runs seen' in out.stdout and out.stdout.count('slow: task') == 1, out.stdout
