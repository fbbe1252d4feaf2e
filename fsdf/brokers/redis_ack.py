"""REDIS_ACK_ABLE: a Redis list; each consumer keeps what it took in its own unacked hash until it settles it.

Keys: the queue ``q`` (a list; ``LPUSH`` to publish), and per consumer ``fsdf:unacked:<q>:<consumer id>``
(a hash) and ``fsdf:inbox:<q>:<consumer id>`` (a list a blocking wait moves one message into).
``fsdf:unacked_seq:<q>`` numbers the takes.

One Lua call sends the buffered acks and takes up to N messages into the hash, so a message is
always in some Redis key: the queue, an inbox, or an unacked hash. The messages of one take are one
batch, one hash field ``b<batch>`` (their lengths and bodies); message ``i`` of it has the tag
``batch * 2**20 + i``. Acks name what they settle per batch: a batch whose every message is settled
loses its field, a batch partly settled gets its settled tags listed in ``a<batch>`` (made empty
with the batch; an earlier version's recovery script fails on such a hash rather than return a
batch as one message, see redis_ack_take.lua). Two fields a
take, not two hash operations a message, halves what a task costs Redis (issue 19). When the queue
is empty, ``BLMOVE`` waits for the next message and moves it into the inbox, which the next take
empties into the hash. A dead consumer's unsettled messages and inbox go back to the consuming end
of the queue, oldest first, in one Lua call.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterator, Optional, cast

import redis

from fsdf.brokers.base import Delivery
from fsdf.brokers.redis_base import lua
from fsdf.brokers.redis_lease import RedisLeaseBroker

BATCH_BITS = 20  # a tag is batch << BATCH_BITS | index: a take holds at most 2**20 messages (redis_ack_take.lua)


def _slices(batch: int, lengths: bytes) -> Iterator[tuple[int, int, int]]:
    """``(tag, start, end)`` of each message of a batch in its joined bodies, from the lengths joined by commas."""
    ends = list(itertools.accumulate(map(int, lengths.split(b','))))
    return zip(itertools.count(batch << BATCH_BITS), [0, *ends], ends)


class RedisAckBroker(RedisLeaseBroker):
    """A Redis list plus an unacked hash per consumer; a dead consumer's messages return."""

    reads_ahead = True

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self._unacked_key = self._key('unacked')
        self._inbox_key = self._key('inbox')
        self._take_keys = [queue_name, self._unacked_key, self._inbox_key, f'fsdf:unacked_seq:{queue_name}']
        self._take_script = self._redis.register_script(lua('settle.lua', 'redis_ack_take.lua'))
        self._settle_script = self._redis.register_script(lua('settle.lua') + 'settle(KEYS[1], ARGV[1])\n')
        self._return_script = self._redis.register_script(lua('chunked.lua', 'redis_ack_return.lua'))
        self._batch_sizes: dict[int, int] = {}  # batches taken and not yet known to be wholly settled -> size
        self._releasing: set[int] = set()  # tags being given back or dead-lettered (or that failed to be)
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
        reply = self._take_script(keys=self._take_keys, args=[max_count, self._settle_spec(acks)],
                                  client=self._fetcher)
        return self._deliveries(reply)

    def _send_take(self, max_count: int, acks: list[Any]) -> bool:
        # The same EVALSHA on the fetch connection, its reply read by _receive_take after the batch has run.
        connection = self._fetcher.connection
        if connection is None:
            return False
        try:
            connection.send_command('EVALSHA', self._take_script.sha, len(self._take_keys), *self._take_keys,
                                    max_count, self._settle_spec(acks))
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
        """The deliveries of a take script's reply: the batch's number, the lengths, the bodies joined by 0xFF."""
        batch, lengths, joined = reply
        if not lengths:
            return []
        size = self._batch_sizes[batch] = lengths.count(b',') + 1
        bodies = joined.split(b'\xff')  # in C: 2.5x cheaper than slicing by the lengths (issue 19)
        if len(bodies) != size:  # a body holds 0xFF itself (it is not UTF-8): each is one byte further on
            bodies = [joined[start + i:end + i] for i, (_, start, end) in enumerate(_slices(batch, lengths))]
        return list(map(Delivery, bodies, itertools.count(batch << BATCH_BITS)))

    # -- settling: what the hash is told -----------------------------------------------------
    def _settle_spec(self, tags: list[Any], may_end_batches: bool = True) -> str:
        """What settle.lua needs to settle ``tags``: per batch, the batch alone once none of its messages is held
        any more (its fields go), else the tags to list as settled. Each batch is looked at once per flush.
        ``may_end_batches=False`` only lists tags (a give-back's transaction: whether their batch is then wholly
        settled is judged by the next ack flush, see ``_released``)."""
        parts, releasing = [], list(self._releasing)  # a copy: other threads add to it
        for batch in set(map((BATCH_BITS).__rrshift__, tags)):
            first = batch << BATCH_BITS
            size = self._batch_sizes.get(batch)
            wanted = range(first, first + (size if size is not None else 1 << BATCH_BITS))
            if not may_end_batches or (releasing and any(tag in wanted for tag in releasing)):
                whole = False  # a give-back's own listing, or one under way (or failed): the batch keeps it
            else:  # a batch this consumer never saw whole (a lost reply) is settled by what returns it
                whole = size is None or self._held.isdisjoint(wanted)
            if whole:
                self._batch_sizes.pop(batch, None)  # sent again after a failure: unknown reads as whole
                parts.append(str(batch))
            else:
                parts.append(f'{batch}:' + ','.join(map(str, [tag for tag in tags if tag in wanted])))
        return ' '.join(parts)

    def _take_blocking(self, max_count: int, wait: float) -> list[Delivery]:
        # redis-py types the timeout as int; Redis >= 6 takes fractions of a second
        if self._fetcher.blmove(self.queue_name, self._inbox_key, wait, 'RIGHT', 'LEFT') is None:  # type: ignore[arg-type]
            return []
        return self._take(max_count)

    def _send_acks(self, tags: list[Any]) -> None:
        self._settle_script(keys=[self._unacked_key], args=[self._settle_spec(tags)])

    def _release(self, pipe: redis.client.Pipeline, deliveries: list[Delivery]) -> None:
        spec = self._settle_spec([d.tag for d in deliveries], may_end_batches=False)
        self._settle_script(keys=[self._unacked_key], args=[spec], client=pipe)

    def _give_back(self, deliveries: list[Delivery], to_front: bool) -> None:
        self._releasing_start(deliveries)
        super()._give_back(deliveries, to_front)  # if it fails, the tags stay releasing until the lease check
        self._released(deliveries)                # returns them (_return_lost): their batch keeps them meanwhile

    def dead_letter(self, delivery: Delivery, body: str) -> None:
        self._releasing_start([delivery])
        super().dead_letter(delivery, body)
        self._released([delivery])

    def _releasing_start(self, deliveries: list[Delivery]) -> None:
        with self._acks_lock:
            self._releasing.update([delivery.tag for delivery in deliveries])

    def _released(self, deliveries: list[Delivery]) -> None:
        # Acked again, so the next flush judges whether their batch is now wholly settled (an ack of a settled
        # message only lists it once more).
        tags = [delivery.tag for delivery in deliveries]
        with self._acks_lock:
            self._releasing.difference_update(tags)
            self._acks.extend(tags)
        self._acks_waiting.set()

    def _held_in_redis(self) -> dict[Any, bytes]:
        held: dict[Any, bytes] = {}
        fields = cast(dict[bytes, bytes], self._raw.hgetall(self._unacked_key))
        settled = {int(tag) for field, value in fields.items() if field[:1] == b'a' for tag in value.split(b',') if tag}
        for field, value in fields.items():
            if field[:1] == b'b':
                lengths, _, joined = value.partition(b':')
                held.update((tag, joined[start:end])
                            for tag, start, end in _slices(int(field[1:]), lengths) if tag not in settled)
            elif field[:1] != b'a':  # a message an earlier version took: its own field
                held[int(field)] = value
        return held

    def close(self) -> None:
        super().close()
        client, self._fetch_client = self._fetch_client, None
        if client is not None:
            client.close()
            client.connection_pool.disconnect()

    def _return_held(self, consumer_id: str) -> int:
        keys = [self.queue_name, self._key('unacked', consumer_id), self._key('inbox', consumer_id)]
        return self._return_script(keys=keys)
