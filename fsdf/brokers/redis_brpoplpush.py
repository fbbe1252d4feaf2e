"""RedisBrpopLpush: a Redis list; each consumer moves what it takes into its own processing list.

Keys: the queue ``q`` (a list; ``LPUSH`` to publish) and per consumer
``fsdf:processing:<q>:<consumer id>`` (a list of the bodies it holds). A take moves up to N
messages from the queue into the processing list in one Lua call, which also sends the buffered
acks (``LREM`` of each acked body); when the queue is empty, ``BLMOVE`` waits and moves one. A
dead consumer's processing list goes back to the consuming end of the queue, oldest nearest it.
"""
from __future__ import annotations

from typing import Any, cast

import redis

from fsdf.brokers.base import Delivery
from fsdf.brokers.redis_base import lua
from fsdf.brokers.redis_lease import RedisLeaseBroker

class RedisBrpopLpushBroker(RedisLeaseBroker):
    """A Redis list plus a processing list per consumer; a dead consumer's messages return."""

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self._processing_key = self._key('processing')
        self._take_script = self._redis.register_script(lua('chunked.lua', 'brpoplpush_take.lua'))
        self._return_script = self._redis.register_script(lua('chunked.lua', 'brpoplpush_return.lua'))

    def _take_and_ack(self, max_count: int, acks: list[Any]) -> list[Delivery]:
        bodies = self._take_script(keys=[self.queue_name, self._processing_key], args=[max_count, *acks],
                                   client=self._raw)
        return [Delivery(body, body) for body in bodies]

    def _take_blocking(self, max_count: int, wait: float) -> list[Delivery]:
        # redis-py types the timeout as int; Redis >= 6 takes fractions of a second
        body = self._raw.blmove(self.queue_name, self._processing_key, wait, 'RIGHT', 'LEFT')  # type: ignore[arg-type]
        if body is None:
            return []
        return [Delivery(body, body), *self._take(max_count - 1)]

    def _send_acks(self, tags: list[Any]) -> None:
        self._take_script(keys=[self.queue_name, self._processing_key], args=[0, *tags])

    def _release(self, pipe: redis.client.Pipeline, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            pipe.lrem(self._processing_key, -1, delivery.tag)

    def _held_in_redis(self) -> dict[Any, bytes]:
        return {body: body for body in cast(list[bytes], self._raw.lrange(self._processing_key, 0, -1))}

    def _return_held(self, consumer_id: str) -> int:
        return self._return_script(keys=[self.queue_name, self._key('processing', consumer_id)])
