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
from typing import TYPE_CHECKING, Any, Iterator

from fsdf import redis_registry
from fsdf.controls.base import Control
from fsdf.enums import BrokerEnum
from fsdf.log import EveryNSeconds
from fsdf.redis_connection import redis_client
from fsdf.stats import RATE_WINDOW_SECONDS

if TYPE_CHECKING:
    from fsdf.consumer import Consumer

BEAT_SECONDS = 3.0  # well inside liveness.STALE_AFTER_SECONDS
LEASES_IN_REGISTRY = frozenset({BrokerEnum.REDIS_ACK_ABLE, BrokerEnum.RedisBrpopLpush, BrokerEnum.REDIS_STREAM})


class RedisHeartbeat(Control):
    """Beats a consumer's details and counters into the Redis registry from a daemon thread."""

    def __init__(self, every_seconds: float = BEAT_SECONDS) -> None:
        self.every_seconds = every_seconds
        self._run = 0  # which start of the consumer the live beating thread belongs to
        self._errors = EveryNSeconds(30)

    def on_start(self, consumer: 'Consumer') -> None:
        self._run += 1
        started = time.time()
        threading.Thread(target=self._beat_until_stopped, args=(consumer, self._run, started), daemon=True,
                         name=f'fsdf-heartbeat-{consumer.queue_name}').start()

    def details(self, consumer: 'Consumer', started: float) -> dict[str, Any]:
        """What one beat reports about the consumer."""
        return {
            'broker_kind': consumer.broker_kind.name,
            'start_time': started,
            'concurrent_mode': consumer.options.concurrent_mode.name,
            'concurrency': consumer.pool.max_workers,
            'qps': consumer.options.qps,
            'counters': consumer.counters.snapshot(),
            'rates': {name: round(rate, 3) for name, rate in consumer.counters.rates(RATE_WINDOW_SECONDS).items()},
        }

    def _beat_until_stopped(self, consumer: 'Consumer', run: int, started: float) -> None:
        client, queue, consumer_id = redis_client(), consumer.queue_name, consumer.broker.consumer_id
        while run == self._run:
            with self._failures_logged(consumer):
                redis_registry.beat(client, queue, consumer_id, self.details(consumer, started))
            if consumer._stopping.wait(self.every_seconds):
                break
        if run == self._run and BrokerEnum(consumer.broker_kind) not in LEASES_IN_REGISTRY:
            with self._failures_logged(consumer):
                redis_registry.forget(client, queue, consumer_id)

    @contextmanager
    def _failures_logged(self, consumer: 'Consumer') -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # Redis away: beat again next time; consuming goes on regardless
            if self._errors.ready(time.monotonic()):
                consumer.logger.warning('heartbeat to Redis for %r failed (will retry): %s', consumer.queue_name, exc)
