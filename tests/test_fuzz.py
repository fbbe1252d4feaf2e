"""Fuzzing the decode and prepare path with Hypothesis, on the embedded brokers and the Redis kinds.

Arbitrary bytes, arbitrary JSON, and messages with arbitrary ``extra`` contents go through one running
consumer per broker kind. What a user relies on: the consumer never dies, and every message ends run,
dead-lettered or requeued (then run or dead-lettered), counted: nothing is stuck, nothing is lost.
Bounded in time: a few dozen examples per kind, a few seconds each kind.
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fsdf import BrokerEnum, ExceptionForRequeue, Middleware, RunOutcome, task_deco
from fsdf.brokers import get_broker
from fsdf.message import EXTRA_TYPES
from helpers import wait_until

EXAMPLES_PER_KIND = 60

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10)
# The keys fsdf reads, with any JSON value, beside keys it does not know.
extras = st.dictionaries(st.sampled_from(sorted(EXTRA_TYPES)) | st.text(max_size=6), json_values, max_size=4)
# x: anything, or a value the function treats specially (fails, asks for a requeue, upsets a middleware)
arguments = json_values | st.sampled_from(['fail', 'requeue', 'skip-check-raises'])
messages = st.fixed_dictionaries({'x': arguments}, optional={'extra': extras | json_values})
bodies = st.one_of(
    st.binary(max_size=64),                                       # arbitrary bytes
    json_values.map(json.dumps),                                  # arbitrary JSON
    st.dictionaries(st.text(max_size=6), json_values, max_size=3).map(json.dumps),  # objects that rarely fit
    messages.map(json.dumps),                                     # calls with arbitrary extra contents
    messages.map(lambda m: json.dumps(m).encode()),               # the same as bytes
)

FUZZ_KINDS = {
    'local': (BrokerEnum.LOCAL_PYTHON_QUEUE, None), 'persist': (BrokerEnum.PERSISTQUEUE, None),
    'redis': (BrokerEnum.REDIS, 'redis_server'), 'redis_ack': (BrokerEnum.REDIS_ACK_ABLE, 'redis_server'),
    'brpoplpush': (BrokerEnum.RedisBrpopLpush, 'redis_server'), 'stream': (BrokerEnum.REDIS_STREAM, 'redis_server'),
}


@pytest.fixture(params=list(FUZZ_KINDS.values()), ids=list(FUZZ_KINDS))
def fuzz_kind(request: pytest.FixtureRequest) -> BrokerEnum:
    """The embedded brokers and the Redis kinds (their server from the session's fixture)."""
    kind, server = request.param
    if server:
        request.getfixturevalue(server)
    return kind


class Outcomes(Middleware):
    """Counts what became of each message; its skip check raises for one argument value."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.lock = threading.Lock()

    def skip_reason(self, arguments: dict[str, Any], extra: dict[str, Any]) -> None:
        if arguments.get('x') == 'skip-check-raises':
            raise RuntimeError('this middleware cannot judge the message')

    def after_settle(self, outcome: RunOutcome) -> None:
        with self.lock:
            self.statuses[outcome.status] += 1

    def ended(self) -> int:
        """Messages that reached an end (run, dead-lettered, skipped, delayed on the broker): all but requeues."""
        with self.lock:
            return sum(n for status, n in self.statuses.items() if status != 'requeued')


def test_any_body_ends_run_dead_lettered_or_requeued(queue_name: str, fuzz_kind: BrokerEnum) -> None:
    outcomes = Outcomes()
    ran: list[Any] = []
    requeued: set[str] = set()

    @task_deco(queue_name, broker_kind=fuzz_kind, max_retry_times=0, concurrent_num=2, middleware=[outcomes])
    def work(x):
        if x == 'fail':
            raise ValueError('this call fails')
        if x == 'requeue' and queue_name not in requeued:  # once: it comes back and runs
            requeued.add(queue_name)
            raise ExceptionForRequeue()
        ran.append(x)

    broker, dlq = get_broker(fuzz_kind, queue_name), get_broker(fuzz_kind, f'{queue_name}_dlq')
    published = 0

    @settings(max_examples=EXAMPLES_PER_KIND, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=bodies)
    @example(body='[' * 100_000 + ']' * 100_000)          # nested too deep to decode: RecursionError
    @example(body='{"x": 1, "extra": {"eta": "soon"}}')   # a TypeError outside the guarded decode, once
    @example(body=b'{"x": "\xff"}')                       # not UTF-8
    @example(body='{"x": "requeue"}')
    def one_body(body: str | bytes) -> None:
        nonlocal published
        published += 1
        broker.publish(body)  # type: ignore[arg-type]  # bytes, as another program's client sends them
        assert wait_until(lambda: outcomes.ended() == published, 15), \
            f'{body!r} did not end: {dict(outcomes.statuses)} after {published} published'

    work.consume()
    try:
        one_body()
    finally:
        work.stop(grace=5)
    statuses = outcomes.statuses
    assert statuses['unsettled'] == 0
    dead = dlq.count()
    # Counted apart from the middleware: the calls that ran, the DLQ, and what the broker keeps for later.
    assert len(ran) + dead + statuses['delayed'] + statuses['expired'] == published, dict(statuses)
    assert dead == statuses['malformed'] + statuses['dead_lettered']
    assert broker.count() == 0
