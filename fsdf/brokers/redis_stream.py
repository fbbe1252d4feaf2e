"""REDIS_STREAM: a Redis stream read through a consumer group named after the queue.

The queue ``q`` is a stream; another program publishes with ``XADD q * msg '{"a": 1, "b": 2}'``
(an entry without a ``msg`` field is dead-lettered with its fields kept). fsdf reads it with the
group ``q`` (created at the stream's start, so entries added before any consumer count too),
each consumer under its consumer id. A taken entry stays in the group's pending entries until
it is acked (``XACK``, batched). A dead consumer's pending entries are claimed (``XCLAIM``) and
added to the stream again, in one Lua call. Consumers trim the stream of entries that every
reader of the group has acked, so it does not grow forever (another group reading the same
stream would lose entries it has not read: give other readers their own stream).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional, cast

import redis

from fsdf._compat import redis_commands
from fsdf.brokers.base import Delivery, waited
from fsdf.brokers.redis_base import lua
from fsdf.brokers.redis_lease import RedisLeaseBroker

# KEYS: stream. ARGV: bodies. One call adds them all (a pipeline of XADDs costs a reply each).
_ADD_MANY_LUA = "for i = 1, #ARGV do redis.call('XADD', KEYS[1], '*', 'msg', ARGV[i]) end"

# KEYS: stream. ARGV: last delivered id. Entries after it (used when Redis cannot tell the lag).
_COUNT_AFTER_LUA = "return #redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')"


class RedisStreamBroker(RedisLeaseBroker):
    """A Redis stream with a consumer group; a dead consumer's pending entries are claimed back."""

    guarantee = "at-least-once: a dead consumer's pending entries are claimed back within seconds"
    push_one_lua = "local function push_one(key, body) redis.call('XADD', key, '*', 'msg', body) end\n"
    requeue_many_to_front = False  # a stream has one end to add to

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self._group = queue_name
        self._return_script = self._redis.register_script(lua('stream_return.lua'))
        self._purge_script = self._redis.register_script(lua('stream_purge.lua'))
        self._count_after = self._redis.register_script(_COUNT_AFTER_LUA)
        self._add_many = self._redis.register_script(_ADD_MANY_LUA)
        self._ensure_group()

    def _ensure_group(self) -> None:
        try:
            self._redis.xgroup_create(self.queue_name, self._group, id='0', mkstream=True)
        except redis.ResponseError as exc:
            if 'BUSYGROUP' not in str(exc):
                raise

    # -- publishing ----------------------------------------------------------------------
    def publish(self, body: str, priority: Optional[int] = None) -> None:
        redis_commands.send(self._redis, 'XADD', self.queue_name, '*', 'msg', body)

    def _push(self, pipe: redis.Redis, bodies: list[str]) -> None:
        self._add_many(keys=[self.queue_name], args=bodies, client=pipe)

    _push_front = _push  # a stream has one end to add to

    # -- consuming -----------------------------------------------------------------------
    def _take_and_ack(self, max_count: int, acks: list[Any]) -> list[Delivery]:
        with self._raw.pipeline(transaction=False) as pipe:
            if acks:
                pipe.xack(self.queue_name, self._group, *acks)
            pipe.xreadgroup(self._group, self.consumer_id, {self.queue_name: '>'}, count=max_count)
            return self._deliveries(lambda: pipe.execute()[-1])

    def _take_blocking(self, max_count: int, wait: float) -> list[Delivery]:
        return self._deliveries(lambda: self._raw.xreadgroup(
            self._group, self.consumer_id, {self.queue_name: '>'}, count=max_count, block=int(wait * 1000)))

    def _deliveries(self, read: Callable[[], Any]) -> list[Delivery]:
        """Run ``read`` (an XREADGROUP) and turn its entries into deliveries."""
        reply = self._with_group(read)
        if not reply:
            return []
        return [Delivery(_body_of(fields), entry_id) for entry_id, fields in reply[0][1]]

    def _with_group(self, call: Callable[[], Any]) -> Any:
        """Run ``call``; if the stream or its group was deleted meanwhile, create them again and return None."""
        try:
            return call()
        except redis.ResponseError as exc:
            if 'NOGROUP' not in str(exc):
                raise
        self.logger.warning('stream %r or its group was deleted; creating them again', self.queue_name)
        self._ensure_group()
        return None

    def _send_acks(self, tags: list[Any]) -> None:
        self._redis.xack(self.queue_name, self._group, *tags)

    def _release(self, pipe: redis.client.Pipeline, deliveries: list[Delivery]) -> None:
        pipe.xack(self.queue_name, self._group, *[d.tag for d in deliveries])

    def _return_held(self, consumer_id: str) -> int:
        return self._return_script(keys=[self.queue_name], args=[self._group, consumer_id, self.consumer_id])

    def _held_in_redis(self) -> dict[Any, bytes]:
        reply = self._with_group(lambda: self._raw.xreadgroup(
            self._group, self.consumer_id, {self.queue_name: '0'}, count=100_000))
        return {entry_id: _body_of(fields) for entry_id, fields in reply[0][1]} if reply else {}

    def recover_abandoned(self) -> int:
        recovered = super().recover_abandoned()
        self._trim()
        return recovered

    def _trim(self) -> None:
        """Remove the entries every consumer of the group has taken and acked."""
        pending = self._with_group(lambda: self._redis.xpending(self.queue_name, self._group))
        if pending is None:
            return
        oldest_pending = pending['min']
        floor = oldest_pending or self._group_info().get('last-delivered-id')
        if floor and floor != '0-0':
            self._redis.xtrim(self.queue_name, minid=floor, approximate=False)

    def _group_info(self) -> dict[str, Any]:
        try:
            groups = self._redis.xinfo_groups(self.queue_name)
        except redis.ResponseError:  # no such stream
            return {}
        return next((g for g in groups if g['name'] == self._group), {})

    # -- the queue as a whole ------------------------------------------------------------
    def count(self) -> int:
        group = self._group_info()
        if not group:
            return 0
        if group['lag'] is not None:
            return group['lag']
        return self._count_after(keys=[self.queue_name], args=[group['last-delivered-id']])

    def oldest_age(self) -> Optional[float]:
        """The first entry after the group's last delivered one; an entry id starts with its add time in ms."""
        last = self._group_info().get('last-delivered-id') or '0-0'
        entries = self._raw.xrange(self.queue_name, min='(' + str(last), max='+', count=1)
        if not entries:
            return 0.0
        entry_id, fields = cast(tuple[bytes, dict[bytes, bytes]], entries[0])  # read raw: bytes
        return waited(_body_of(fields), int(entry_id.split(b'-')[0]) / 1000)

    def purge(self) -> None:
        self._ensure_group()
        self._purge_script(keys=[self.queue_name], args=[self._group])
        self._redis.delete(self._delayed_key)
        self._trim()


def _body_of(fields: Optional[dict[bytes, bytes]]) -> bytes:
    """The message of a stream entry (read as bytes): its ``msg`` field; for an entry without one, a
    text that is not JSON, so the entry is dead-lettered whole, with its fields (bytes that are not
    UTF-8 shown as escapes)."""
    body = fields.get(b'msg') if fields else None
    if body is not None:
        return body
    shown = {k.decode('utf-8', 'backslashreplace'): v.decode('utf-8', 'backslashreplace')
             for k, v in (fields or {}).items()}
    return f'stream entry without a "msg" field: {json.dumps(shown, ensure_ascii=False)}'.encode()
