"""Pause flags: one home for where a queue's pause lives and how a consumer reads it.

The flag lives in the run store (``queues.paused``), which every consumer of every broker reads;
for queues on a Redis broker it is also set in the Redis hash ``fsdf:paused_queues``, so consumers
on machines that each keep their own SQLite store still see it. A queue is paused if either says so.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

from fsdf.enums import BrokerEnum

if TYPE_CHECKING:
    from fsdf.records.store import RunStore
    from fsdf.records.writer import RecordWriter

REDIS_PAUSE_KEY = 'fsdf:paused_queues'
REDIS_KINDS = frozenset({BrokerEnum.REDIS, BrokerEnum.REDIS_ACK_ABLE, BrokerEnum.RedisBrpopLpush,
                         BrokerEnum.REDIS_STREAM})


def _is_redis(kind: Union[BrokerEnum, str, None]) -> bool:
    if kind is None:
        return False
    member = BrokerEnum[kind] if isinstance(kind, str) else BrokerEnum(kind)
    return member in REDIS_KINDS


def is_paused(queue: str, broker_kind: BrokerEnum, writer: 'RecordWriter') -> bool:
    """Whether a consumer of ``queue`` on ``broker_kind`` should fetch nothing now."""
    if _is_redis(broker_kind):
        from fsdf.redis_connection import redis_client
        if redis_client().hexists(REDIS_PAUSE_KEY, queue):
            return True
    return queue in writer.store().paused_queues()


def set_paused(queue: str, paused: bool, store: 'RunStore', broker_kind: Optional[str] = None) -> None:
    """Set or clear a queue's flag in the store, and in Redis when the queue's broker is Redis.

    ``broker_kind`` defaults to the kind the queue registered with (unknown: the store only).
    """
    if broker_kind is None:
        broker_kind = next((q['broker_kind'] for q in store.queues() if q['name'] == queue), None)
    store.set_paused(queue, paused)
    if _is_redis(broker_kind):
        from fsdf.redis_connection import redis_client
        client = redis_client()
        if paused:
            client.hset(REDIS_PAUSE_KEY, queue, '1')
        else:
            client.hdel(REDIS_PAUSE_KEY, queue)
