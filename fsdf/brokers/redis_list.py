"""REDIS: a Redis list, popped in batches; the fastest kind, and at-most-once.

A message leaves Redis when a consumer takes it: if that consumer's process is killed, the
messages it had taken (running or prefetched) are lost. A graceful stop gives prefetched messages
back. Use REDIS_ACK_ABLE, RedisBrpopLpush or REDIS_STREAM when every message must run.
"""
from __future__ import annotations

from typing import Optional, cast

from fsdf.brokers.base import Delivery
from fsdf.brokers.redis_base import RedisBroker


class RedisListBroker(RedisBroker):
    """A Redis list; RPOP with a count takes a batch in one round trip, nothing to ack."""

    guarantee = 'at-most-once: a message leaves Redis when it is taken; fastest'
    at_least_once = False

    def _take(self, max_count: int) -> list[Delivery]:
        bodies = cast(Optional[list[bytes]], self._raw.rpop(self.queue_name, max_count))
        return [Delivery(body) for body in bodies or ()]

    def _take_blocking(self, max_count: int, wait: float) -> list[Delivery]:
        popped = self._raw.brpop([self.queue_name], wait)
        return [Delivery(popped[1])] if popped else []

    def ack(self, delivery: Delivery) -> None:
        """Nothing to do: the message left Redis when it was taken."""
