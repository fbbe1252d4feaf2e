"""RedisBrpopLpush: a Redis list; each consumer moves what it takes into its own processing list.

Keys: the queue ``q`` (a list; ``LPUSH`` to publish) and per consumer
``fsdf:processing:<q>:<consumer id>`` (a list of the bodies it holds). A take moves up to N
messages from the queue into the processing list in one Lua call, which also sends the buffered
acks (``LREM`` of each acked body); when the queue is empty, ``BLMOVE`` waits and moves one. A
dead consumer's processing list goes back to the consuming end of the queue, oldest nearest it.
"""
from __future__ import annotations

from typing import Any

import redis

from fsdf.brokers.base import Delivery
from fsdf.brokers.redis_base import LUA_CHUNKED
from fsdf.brokers.redis_lease import RedisLeaseBroker

# KEYS: queue, processing list. ARGV: max count, then the bodies to ack. Returns the bodies taken.
_TAKE_LUA = LUA_CHUNKED + """
for i = 2, #ARGV do redis.call('LREM', KEYS[2], -1, ARGV[i]) end
local wanted = tonumber(ARGV[1])
if wanted < 1 then return {} end
local bodies = redis.call('RPOP', KEYS[1], wanted)
if not bodies then return {} end
chunked('LPUSH', KEYS[2], bodies, 1)
return bodies
"""

# KEYS: queue, processing list. The processing list holds the newest on the left, so pushing it
# from left to right onto the consuming end leaves the oldest nearest that end.
_RETURN_LUA = LUA_CHUNKED + """
local bodies = redis.call('LRANGE', KEYS[2], 0, -1)
chunked('RPUSH', KEYS[1], bodies, 1)
redis.call('DEL', KEYS[2])
return #bodies
"""


class RedisBrpopLpushBroker(RedisLeaseBroker):
    """A Redis list plus a processing list per consumer; a dead consumer's messages return."""

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self._processing_key = self._key('processing')
        self._take_script = self._redis.register_script(_TAKE_LUA)
        self._return_script = self._redis.register_script(_RETURN_LUA)

    def _take_and_ack(self, max_count: int, acks: list[Any]) -> list[Delivery]:
        bodies = self._take_script(keys=[self.queue_name, self._processing_key], args=[max_count, *acks])
        return [Delivery(body, body) for body in bodies]

    def _take_blocking(self, max_count: int, wait: float) -> list[Delivery]:
        body = self._redis.blmove(self.queue_name, self._processing_key, wait, 'RIGHT', 'LEFT')
        if body is None:
            return []
        return [Delivery(body, body), *self._take(max_count - 1)]

    def _send_acks(self, tags: list[Any]) -> None:
        self._take_script(keys=[self.queue_name, self._processing_key], args=[0, *tags])

    def _release(self, pipe: redis.client.Pipeline, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            pipe.lrem(self._processing_key, -1, delivery.tag)

    def _held_in_redis(self) -> dict[Any, str]:
        return {body: body for body in self._redis.lrange(self._processing_key, 0, -1)}

    def _return_held(self, consumer_id: str) -> int:
        return self._return_script(keys=[self.queue_name, self._key('processing', consumer_id)])
