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

import itertools
from typing import Any, Optional, cast

import redis

from fsdf.brokers.base import Delivery
from fsdf.brokers.redis_base import lua
from fsdf.brokers.redis_lease import RedisLeaseBroker

class RedisAckBroker(RedisLeaseBroker):
    """A Redis list plus an unacked hash per consumer; a dead consumer's messages return."""

    reads_ahead = True

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self._unacked_key = self._key('unacked')
        self._inbox_key = self._key('inbox')
        self._take_keys = [queue_name, self._unacked_key, self._inbox_key, f'fsdf:unacked_seq:{queue_name}']
        self._take_script = self._redis.register_script(lua('chunked.lua', 'redis_ack_take.lua'))
        self._return_script = self._redis.register_script(lua('chunked.lua', 'redis_ack_return.lua'))
        self._fetch_client: Optional[redis.Redis] = None
        self._ahead_connection: Optional[redis.connection.AbstractConnection] = None  # a take sent, reply unread

    @property
    def _fetcher(self) -> redis.Redis:
        """The fetch thread's own connection, kept until close: a take then skips the pool's checkout and its
        poll of the socket (a tenth of redis-py's cost per command). Its own pool, made with the shared
        pool's settings, so closing it under a fetch in flight fails that fetch, never another user's command."""
        client = self._fetch_client
        if client is None:
            shared = self._raw.connection_pool
            pool = redis.ConnectionPool(connection_class=shared.connection_class, max_connections=1,
                                        **shared.connection_kwargs)
            client = self._fetch_client = redis.Redis(connection_pool=pool, single_connection_client=True)
        return client

    def _take_and_ack(self, max_count: int, acks: list[Any]) -> list[Delivery]:
        # Sent and read on the fetch connection directly: redis-py's command path around it (the script
        # object, retry wrapper, option parsing) cost a quarter of a take's client time (issue 19).
        try:
            if self._send_take(max_count, acks):
                return self._receive_take(max_count, acks)
        except self.connection_errors:  # a dropped connection: once more through redis-py, which reconnects
            pass                        # and retries once, as every fsdf command does (a lost reply: see lease)
        return self._take_by_script(max_count, acks)

    def _take_by_script(self, max_count: int, acks: list[Any]) -> list[Delivery]:
        """The take through redis-py's script object: it loads the script if Redis has not got it."""
        # The acks go as one argument and the bodies come back joined: redis-py packs and parses each
        # element of a command and its reply in Python, which was a fifth of a no-op task's cost.
        reply = self._take_script(keys=self._take_keys, args=[max_count, ' '.join(map(str, acks))],
                                  client=self._fetcher)
        return self._deliveries(reply)

    def _send_take(self, max_count: int, acks: list[Any]) -> bool:
        # The same EVALSHA on the fetch connection, its reply read by _receive_take after the batch has run.
        connection = self._fetcher.connection
        if connection is None:
            return False
        try:
            connection.send_command('EVALSHA', self._take_script.sha, len(self._take_keys), *self._take_keys,
                                    max_count, ' '.join(map(str, acks)))
        except BaseException:  # part of a command may have gone: the connection must not be reused as it is
            connection.disconnect()
            raise
        self._ahead_connection = connection  # close() may drop the client meanwhile: then the read fails
        return True

    def _receive_take(self, max_count: int, acks: list[Any]) -> list[Delivery]:
        connection, self._ahead_connection = self._ahead_connection, None
        if connection is None:
            raise RuntimeError('no read-ahead take was sent')
        try:
            reply = connection.read_response()  # disconnects itself on an error other than Redis's own reply
        except redis.exceptions.NoScriptError:  # the script was never loaded (or Redis restarted): it ran nothing
            return self._take_by_script(max_count, acks)
        return self._deliveries(reply)

    def _deliveries(self, reply: list[Any]) -> list[Delivery]:
        """The deliveries of a take script's reply: the first number, the lengths, the bodies joined."""
        first, lengths, joined = reply
        if not lengths:
            return []
        ends = list(itertools.accumulate(map(int, lengths.split(b','))))
        return [Delivery(joined[start:end], tag)
                for tag, start, end in zip(itertools.count(first + 1), [0, *ends], ends)]

    def _take_blocking(self, max_count: int, wait: float) -> list[Delivery]:
        # redis-py types the timeout as int; Redis >= 6 takes fractions of a second
        if self._fetcher.blmove(self.queue_name, self._inbox_key, wait, 'RIGHT', 'LEFT') is None:  # type: ignore[arg-type]
            return []
        return self._take(max_count)

    def _send_acks(self, tags: list[Any]) -> None:
        self._redis.hdel(self._unacked_key, *tags)

    def _release(self, pipe: redis.client.Pipeline, deliveries: list[Delivery]) -> None:
        pipe.hdel(self._unacked_key, *[d.tag for d in deliveries])

    def _held_in_redis(self) -> dict[Any, bytes]:
        held = cast(dict[bytes, bytes], self._raw.hgetall(self._unacked_key))
        return {int(field): body for field, body in held.items()}

    def _held_tags_in_redis(self) -> set[Any]:
        return {int(field) for field in cast(list[bytes], self._raw.hkeys(self._unacked_key))}

    def _held_bodies_in_redis(self, tags: set[Any]) -> dict[Any, bytes]:
        wanted = list(tags)
        bodies = cast(list[Optional[bytes]], self._raw.hmget(self._unacked_key, wanted))
        return {tag: body for tag, body in zip(wanted, bodies) if body is not None}

    def close(self) -> None:
        super().close()
        client, self._fetch_client = self._fetch_client, None
        if client is not None:
            client.close()
            client.connection_pool.disconnect()

    def _return_held(self, consumer_id: str) -> int:
        keys = [self.queue_name, self._key('unacked', consumer_id), self._key('inbox', consumer_id)]
        return self._return_script(keys=keys)
