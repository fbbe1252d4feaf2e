"""REDIS_ACK_ABLE: a Redis list; each consumer keeps what it took in its own unacked hash until it acks.

Keys: the queue ``q`` (a list; ``LPUSH`` to publish), and per consumer ``fsdf:unacked:<q>:<consumer id>``
(a hash: a unique number per taken message -> its body) and ``fsdf:inbox:<q>:<consumer id>`` (a
list a blocking wait moves one message into). ``fsdf:unacked_seq:<q>`` numbers taken messages.

One Lua call sends the buffered acks (``HDEL``) and takes up to N messages into the hash, so a
message is always in some Redis key: the queue, an inbox, or an unacked hash. When the queue is
empty, ``BLMOVE`` waits for the next message and moves it into the inbox, which the next take
empties into the hash. A dead consumer's hash and inbox go back to the consuming end of the
queue, oldest first, in one Lua call.
"""
from __future__ import annotations

from typing import Any

import redis

from fsdf.brokers.base import Delivery
from fsdf.brokers.redis_base import LUA_CHUNKED
from fsdf.brokers.redis_lease import RedisLeaseBroker

# KEYS: queue, unacked hash, inbox, sequence. ARGV: max count, then the numbers to ack.
# Returns {number before the first taken, {bodies}}.
_TAKE_LUA = LUA_CHUNKED + """
chunked('HDEL', KEYS[2], ARGV, 2)
local wanted = tonumber(ARGV[1])
local bodies = redis.call('LRANGE', KEYS[3], 0, -1)
if #bodies > 0 then redis.call('DEL', KEYS[3]) end
if #bodies < wanted then
  local more = redis.call('RPOP', KEYS[1], wanted - #bodies)
  if more then for _, body in ipairs(more) do bodies[#bodies + 1] = body end end
end
if #bodies == 0 then return {0, {}} end
local first = redis.call('INCRBY', KEYS[4], #bodies) - #bodies
local fields = {}
for i, body in ipairs(bodies) do
  fields[2 * i - 1] = first + i
  fields[2 * i] = body
end
chunked('HSET', KEYS[2], fields, 1)
return {first, bodies}
"""

# KEYS: queue, unacked hash, inbox. Everything goes back to the consuming end, oldest nearest it.
_RETURN_LUA = LUA_CHUNKED + """
local flat = redis.call('HGETALL', KEYS[2])
local held = {}
for i = 1, #flat, 2 do held[#held + 1] = {tonumber(flat[i]), flat[i + 1]} end
table.sort(held, function(a, b) return a[1] > b[1] end)
local bodies = redis.call('LRANGE', KEYS[3], 0, -1)
for _, entry in ipairs(held) do bodies[#bodies + 1] = entry[2] end
chunked('RPUSH', KEYS[1], bodies, 1)
redis.call('DEL', KEYS[2], KEYS[3])
return #bodies
"""


class RedisAckBroker(RedisLeaseBroker):
    """A Redis list plus an unacked hash per consumer; a dead consumer's messages return."""

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self._unacked_key = self._key('unacked')
        self._inbox_key = self._key('inbox')
        self._take_keys = [queue_name, self._unacked_key, self._inbox_key, f'fsdf:unacked_seq:{queue_name}']
        self._take_script = self._redis.register_script(_TAKE_LUA)
        self._return_script = self._redis.register_script(_RETURN_LUA)

    def _take_and_ack(self, max_count: int, acks: list[Any]) -> list[Delivery]:
        first, bodies = self._take_script(keys=self._take_keys, args=[max_count, *acks])
        return [Delivery(body, first + i) for i, body in enumerate(bodies, 1)]

    def _take_blocking(self, max_count: int, wait: float) -> list[Delivery]:
        if self._redis.blmove(self.queue_name, self._inbox_key, wait, 'RIGHT', 'LEFT') is None:
            return []
        return self._take(max_count)

    def _send_acks(self, tags: list[Any]) -> None:
        self._redis.hdel(self._unacked_key, *tags)

    def _release(self, pipe: redis.client.Pipeline, deliveries: list[Delivery]) -> None:
        pipe.hdel(self._unacked_key, *[d.tag for d in deliveries])

    def _held_in_redis(self) -> dict[Any, str]:
        return {int(field): body for field, body in self._redis.hgetall(self._unacked_key).items()}

    def _return_held(self, consumer_id: str) -> int:
        keys = [self.queue_name, self._key('unacked', consumer_id), self._key('inbox', consumer_id)]
        return self._return_script(keys=keys)
