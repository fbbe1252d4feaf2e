"""``is_send_consumer_heartbeat_to_redis``: the consumer reports itself to the Redis registry every few seconds.

Each beat writes, through :func:`fsdf.redis_registry.beat`, the consumer's host, pid, queue,
broker kind, start time, concurrency, qps, its run counters (JSON) and their per-second rates
over the last ``RATE_WINDOW_SECONDS`` (JSON), so a dashboard or another process sees every
consumer of a queue and how fast it goes. It works with any broker kind, embedded ones
included (asking for it is asking for Redis). The entry uses the broker's consumer id, so a
lease broker's own beats and these describe one consumer.

On stop the consumer is removed from the registry, unless its broker keeps its leases in that
same registry (the Redis lease brokers): there the broker decides when the entry goes, since
removing it would hide the messages it still holds from the consumers that recover them.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from fsdf import redis_registry
from fsdf.controls.base import ConsumerContext, Middleware
from fsdf.enums import BrokerEnum
from fsdf.log import EveryNSeconds
from fsdf.redis_connection import redis_client
from fsdf.stats import RATE_WINDOW_SECONDS

BEAT_SECONDS = 3.0  # well inside liveness.STALE_AFTER_SECONDS
LEASES_IN_REGISTRY = frozenset({BrokerEnum.REDIS_ACK_ABLE, BrokerEnum.RedisBrpopLpush, BrokerEnum.REDIS_STREAM})


class RedisHeartbeat(Middleware):
    """Beats a consumer's details and counters into the Redis registry from a daemon thread."""

    def __init__(self, every_seconds: float = BEAT_SECONDS) -> None:
        self.every_seconds = every_seconds
        self._run = 0  # which start of the consumer the live beating thread belongs to
        self._errors = EveryNSeconds(30)

    def on_start(self, context: ConsumerContext) -> None:
        self._run += 1
        started = time.time()
        threading.Thread(target=self._beat_until_stopped, args=(context, self._run, started), daemon=True,
                         name=f'fsdf-heartbeat-{context.queue_name}').start()

    def details(self, context: ConsumerContext, started: float) -> dict[str, Any]:
        """What one beat reports about the consumer."""
        return {
            'broker_kind': context.broker_kind.name,
            'start_time': started,
            'concurrent_mode': context.options.concurrent_mode.name,
            'concurrency': context.pool.max_workers,
            'qps': context.options.qps,
            'counters': context.counters.snapshot(),
            'rates': {name: round(rate, 3) for name, rate in context.counters.rates(RATE_WINDOW_SECONDS).items()},
        }

    def _beat_until_stopped(self, context: ConsumerContext, run: int, started: float) -> None:
        client, queue, consumer_id = redis_client(), context.queue_name, context.consumer_id
        while run == self._run:
            with self._failures_logged(context):
                redis_registry.beat(client, queue, consumer_id, self.details(context, started))
            if context.stopping.wait(self.every_seconds):
                break
        if run == self._run and BrokerEnum(context.broker_kind) not in LEASES_IN_REGISTRY:
            with self._failures_logged(context):
                redis_registry.forget(client, queue, consumer_id)

    @contextmanager
    def _failures_logged(self, context: ConsumerContext) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # Redis away: beat again next time; consuming goes on regardless
            if self._errors.ready(time.monotonic()):
                context.logger.warning('heartbeat to Redis for %r failed (will retry): %s', context.queue_name, exc)
