"""``do_task_filtering`` keys in Redis, shared by every consumer of the queue on every machine.

One Redis key per filter entry, ``fsdf:filter:<queue>:<sha1 of the call's key>``, set with its
own expiry (none for 0 = forever), so each entry expires on Redis's clock on its own and nothing
needs sweeping. ``clear()`` scans for the queue's keys and unlinks them.
"""
from __future__ import annotations

import hashlib
import re

from fsdf.controls.filtering import FilterStore
from fsdf.redis_connection import redis_client

_CLEAR_BATCH = 1000
_GLOB_SPECIAL = re.compile(r'([*?\[\]\\])')


def filter_entry_prefix(queue_name: str) -> str:
    """The common start of every filter key of a queue."""
    return f'fsdf:filter:{queue_name}:'


class RedisFilterStore(FilterStore):
    """Filter keys of one queue in Redis, one key per entry with its own expiry."""

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        self._prefix = filter_entry_prefix(queue_name)
        self._redis = redis_client()

    def entry_key(self, key: str) -> str:
        """The Redis key that records one call."""
        return self._prefix + hashlib.sha1(key.encode('utf-8')).hexdigest()

    def seen(self, key: str) -> bool:
        return bool(self._redis.exists(self.entry_key(key)))

    def record(self, key: str, expire_seconds: float) -> None:
        # SET without an expiry also drops one an earlier record set: 0 means forever.
        self._redis.set(self.entry_key(key), '1', px=max(1, round(expire_seconds * 1000)) if expire_seconds else None)

    def clear(self) -> None:
        pattern = _GLOB_SPECIAL.sub(r'\\\1', self._prefix) + '*'
        batch: list[str] = []
        for name in self._redis.scan_iter(match=pattern, count=_CLEAR_BATCH):
            batch.append(name)
            if len(batch) >= _CLEAR_BATCH:
                self._redis.unlink(*batch)
                batch.clear()
        if batch:
            self._redis.unlink(*batch)
