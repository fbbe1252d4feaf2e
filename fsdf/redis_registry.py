"""The consumer registry in Redis: who consumes which queue, and when each last said it was alive.

Keys (all under ``fsdf:``, SPEC §7)::

    fsdf:consumers:<queue>   sorted set: consumer id -> epoch seconds of its last beat
    fsdf:consumer:<id>       hash: host, pid, queue, broker, start_time, concurrency, qps and the
                             run counters; expires a while after the consumer stops beating

Brokers that lend messages (REDIS_ACK_ABLE, RedisBrpopLpush, REDIS_STREAM) beat here and read
it to find dead consumers whose messages must return; ``is_send_consumer_heartbeat_to_redis``
beats here for any broker; a dashboard reads both keys.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Optional, cast

import redis

from fsdf.brokers import liveness
from fsdf.hosts import HOST

INFO_TTL_SECONDS = 300      # how long a silent consumer's details stay readable


def consumers_key(queue_name: str) -> str:
    """The sorted set of a queue's consumers by last beat."""
    return f'fsdf:consumers:{queue_name}'


def consumer_key(consumer_id: str) -> str:
    """The hash that describes one consumer."""
    return f'fsdf:consumer:{consumer_id}'


def beat(client: redis.Redis, queue_name: str, consumer_id: str, info: Optional[dict[str, Any]] = None) -> None:
    """Record that a consumer is alive now, with its details (host and pid are always added)."""
    now = time.time()
    fields = {'host': HOST, 'pid': os.getpid(), 'queue': queue_name, 'last_beat': now, **(info or {})}
    flat: dict[Any, str | int | float] = {
        k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in fields.items()}
    with client.pipeline(transaction=False) as pipe:
        pipe.zadd(consumers_key(queue_name), {consumer_id: now})
        pipe.hset(consumer_key(consumer_id), mapping=flat)
        pipe.expire(consumer_key(consumer_id), INFO_TTL_SECONDS)
        pipe.execute()


def forget(client: redis.Redis, queue_name: str, consumer_id: str) -> None:
    """Remove a consumer that stopped cleanly."""
    with client.pipeline(transaction=False) as pipe:
        pipe.zrem(consumers_key(queue_name), consumer_id)
        pipe.delete(consumer_key(consumer_id))
        pipe.execute()


def dead_consumers(client: redis.Redis, queue_name: str, stale_after: Optional[float] = None) -> list[str]:
    """Consumers of the queue that ``liveness.is_dead`` finds dead (``stale_after``: its default unless given)."""
    now = time.time()
    # the client decodes replies (decode_responses=True): members are str, scores float
    beats = cast(list[tuple[str, float]], client.zrange(consumers_key(queue_name), 0, -1, withscores=True))
    return sorted(consumer_id for consumer_id, last_beat in beats
                  if liveness.is_dead(*liveness.host_and_pid(consumer_id), last_beat, now, stale_after))


def live_consumers(client: redis.Redis, queue_name: str, stale_after: Optional[float] = None) -> list[str]:
    """Consumers of the queue that beat within ``stale_after`` seconds (default ``liveness.STALE_AFTER_SECONDS``)."""
    if stale_after is None:
        stale_after = liveness.STALE_AFTER_SECONDS
    return cast(list[str], client.zrangebyscore(consumers_key(queue_name), time.time() - stale_after, '+inf'))


def consumer_info(client: redis.Redis, consumer_id: str) -> dict[str, str]:
    """The details a consumer last reported."""
    return cast(dict[str, str], client.hgetall(consumer_key(consumer_id)))

