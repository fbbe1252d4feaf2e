"""What the at-least-once Redis kinds share: batched acks, heartbeats, and returning a dead consumer's messages.

Each consumer keeps the messages it took in its own bookkeeping key under ``fsdf:`` (a hash, a
list, or the stream's pending entries) until it acks them. Acks are buffered and sent together:
with the next fetch, or by a small flusher thread within ``ACK_FLUSH_SECONDS``, or on close; an
ack that cannot be sent (Redis away) stays buffered and is sent when Redis is back.

Every consumer beats into the registry (``fsdf.redis_registry``) every ``lease_check_seconds``
and looks for consumers of its queue whose process is gone (same host) or that stopped beating
(``liveness.STALE_AFTER_SECONDS``); their messages, running or prefetched, go back to the queue.

A consumer also checks its own bookkeeping: a message held there that it does not know of (the
reply to a take was lost when Redis went away, or a requeue or dead-letter failed) goes back to
the queue once two checks in a row have seen it, so no message waits for a live consumer's death.
"""
from __future__ import annotations

import atexit
import math
import threading
import time
from typing import Any, Optional

from fsdf import redis_registry
from fsdf.brokers import liveness
from fsdf.brokers.ack_batch import run_ack_flusher
from fsdf.brokers.base import Delivery
from fsdf.brokers.redis_base import RedisBroker
from fsdf.log import EveryNSeconds
from fsdf.secrets import redact

ACK_FLUSH_SECONDS = 0.02  # acks wait this long for company before the flusher sends them
ACK_RETRY_SECONDS = 1.0   # pause after a failed ack flush (Redis away)


class RedisLeaseBroker(RedisBroker):
    """A Redis queue whose consumers hold taken messages under ``fsdf:`` until they ack them."""

    guarantee = "at-least-once: a dead consumer's messages return within seconds"
    lease_check_seconds = 2.0

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self._acks: list[Any] = []
        self._acks_lock = threading.Lock()
        # One flush at a time: close() must not find the buffer empty while the flusher thread is still
        # sending what it took, or it gives those acked messages back to the queue (seen in CI).
        self._flush_lock = threading.Lock()
        self._acks_waiting = threading.Event()
        self._flusher: Optional[threading.Thread] = None
        self._leases_lock = threading.Lock()
        self._started_at = time.time()
        self._beat_by = 0.0  # monotonic time by which the next beat is overdue
        self._beaten_at: Optional[float] = None
        self._beats_trusted_from = 0.0  # monotonic; before it, a stale beat is not taken for a death
        self._ack_errors = EveryNSeconds(10)
        self._held: set[Any] = set()      # tags handed out by fetch and not yet settled (guarded by _acks_lock)
        self._sending: list[Any] = []     # acks on their way to Redis
        self._unknown: set[Any] = set()   # tags in our bookkeeping we did not know of at the last check
        self._ahead: tuple[int, list[Any]] = (0, [])  # a read-ahead take under way: its count and the acks it sent

    # -- what each kind implements -------------------------------------------------------
    def _take_and_ack(self, max_count: int, acks: list[Any]) -> list[Delivery]:
        """Send ``acks`` and take up to ``max_count`` messages into this consumer's keeping, in one round trip."""
        raise NotImplementedError

    def _send_take(self, max_count: int, acks: list[Any]) -> bool:
        """Send what ``_take_and_ack`` sends without reading the reply; False if this kind cannot."""
        return False

    def _receive_take(self, max_count: int, acks: list[Any]) -> list[Delivery]:
        """Read the reply to ``_send_take``'s command (the same ``max_count`` and ``acks``)."""
        raise NotImplementedError

    def _send_acks(self, tags: list[Any]) -> None:
        """Remove settled messages from this consumer's bookkeeping, in one round trip."""
        raise NotImplementedError

    def _return_held(self, consumer_id: str) -> int:
        """Put every message ``consumer_id`` holds back in the queue, atomically; how many."""
        raise NotImplementedError

    def _held_in_redis(self) -> dict[Any, bytes]:
        """The messages this consumer's bookkeeping holds: tag -> body."""
        raise NotImplementedError

    def _held_tags_in_redis(self) -> set[Any]:
        """The tags of the messages this consumer's bookkeeping holds (kinds that can, without the bodies)."""
        return set(self._held_in_redis())

    def _held_bodies_in_redis(self, tags: set[Any]) -> dict[Any, bytes]:
        """The bodies of those of ``tags`` this consumer's bookkeeping still holds: tag -> body."""
        held = self._held_in_redis()
        return {tag: held[tag] for tag in tags if tag in held}

    # -- acks ----------------------------------------------------------------------------
    def ack(self, delivery: Delivery) -> None:
        with self._acks_lock:
            self._acks.append(delivery.tag)
            self._held.discard(delivery.tag)
        if not self._acks_waiting.is_set():
            self._acks_waiting.set()

    def ack_many(self, deliveries: list[Delivery]) -> None:
        tags = [delivery.tag for delivery in deliveries]
        with self._acks_lock:
            self._acks.extend(tags)
            self._held.difference_update(tags)
        if not self._acks_waiting.is_set():
            self._acks_waiting.set()

    def _take_acks(self) -> list[Any]:
        """The buffered acks, to send now (hand them back with ``_keep_acks`` if sending fails)."""
        with self._acks_lock:
            acks, self._acks = self._acks, []
        return acks

    def _keep_acks(self, acks: list[Any]) -> None:
        with self._acks_lock:
            self._acks[:0] = acks
        self._acks_waiting.set()

    def flush_acks(self) -> bool:
        """Send the buffered acks now, after any flush under way; False if Redis could not be reached (they stay
        buffered)."""
        with self._flush_lock:
            return self._flush_acks()

    def _flush_acks(self) -> bool:
        acks = self._sending = self._take_acks()
        if not acks:
            return True
        try:
            self._send_acks(acks)
        except Exception as exc:  # Redis away (or anything else): keep the acks, the flusher must live on
            self._keep_acks(acks)
            if self._ack_errors.ready(time.monotonic()):
                self.logger.error('could not ack %d messages of %r (will retry): %s', len(acks), self.queue_name,
                                  redact(exc))
            return False
        finally:
            self._sending = []
        return True

    def _flush_loop(self) -> None:
        run_ack_flusher(self._acks_waiting, self._closed, self.flush_acks, ACK_FLUSH_SECONDS, ACK_RETRY_SECONDS)

    # -- consuming -----------------------------------------------------------------------
    def _key(self, what: str, consumer_id: Optional[str] = None) -> str:
        """A bookkeeping key of one consumer of this queue: ``fsdf:<what>:<queue>:<consumer id>``."""
        return f'fsdf:{what}:{self.queue_name}:{consumer_id or self.consumer_id}'

    def _take(self, max_count: int) -> list[Delivery]:
        acks = self._take_acks()
        try:
            return self._take_and_ack(max_count, acks)
        except BaseException:
            self._keep_acks(acks)
            raise

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if self._closed.is_set():  # taking now would hold messages nobody beats for
            return []
        if self._lease_thread is None:  # whoever takes messages must beat, or they would never come back
            self.start_leases()
        elif time.monotonic() > self._beat_by:  # the lease thread fell behind (Redis was away): beat first
            self.beat()
        taken = super().fetch(max_count, timeout)
        if taken:
            with self._acks_lock:
                self._held.update([delivery.tag for delivery in taken])
        return taken

    def fetch_ahead_send(self, max_count: int) -> bool:
        # A closed broker, one that must beat first or never started its leases: the plain fetch handles those.
        if max_count < 1 or self._closed.is_set() or self._lease_thread is None or time.monotonic() > self._beat_by:
            return False
        self._promote_due()
        acks = self._take_acks()
        try:
            sent = self._send_take(max_count, acks)
        except BaseException:
            self._keep_acks(acks)
            raise
        if not sent:
            self._keep_acks(acks)
            return False
        self._ahead = (max_count, acks)
        return True

    def fetch_ahead_receive(self) -> list[Delivery]:
        (max_count, acks), self._ahead = self._ahead, (0, [])
        try:
            taken = self._receive_take(max_count, acks)
        except BaseException:  # sent again with the next take (an ack sent twice is harmless)
            self._keep_acks(acks)
            raise
        if taken:
            with self._acks_lock:
                self._held.update([delivery.tag for delivery in taken])
        return taken

    def _give_back(self, deliveries: list[Delivery], to_front: bool) -> None:
        self._forget(deliveries)  # if this fails, the check of our own bookkeeping returns them
        super()._give_back(deliveries, to_front)

    def dead_letter(self, delivery: Delivery, body: str) -> None:
        self._forget([delivery])
        super().dead_letter(delivery, body)

    def _forget(self, deliveries: list[Delivery]) -> None:
        with self._acks_lock:
            for delivery in deliveries:
                self._held.discard(delivery.tag)

    def start_leases(self) -> None:
        """Start the lease thread (``Broker.start_leases``) and the ack flusher, once."""
        with self._leases_lock:
            if self._lease_thread is not None:
                return
            super().start_leases()
            self._flusher = threading.Thread(target=self._flush_loop, name=f'fsdf-acks-{self.queue_name}',
                                             daemon=True)
            self._flusher.start()
            atexit.register(self.flush_acks)

    def beat(self) -> None:
        redis_registry.beat(self._redis, self.queue_name, self.consumer_id,
                            {'start_time': self._started_at, 'broker': type(self).__name__})
        now = time.monotonic()
        if self._beaten_at is not None and now - self._beaten_at > liveness.STALE_AFTER_SECONDS / 2:
            # Redis was away a while: every consumer's beat looks stale now. Give them time to beat
            # again before taking a stale beat for a death (a dead process on this host still counts).
            self._beats_trusted_from = now + liveness.STALE_AFTER_SECONDS
        self._beaten_at, self._beat_by = now, now + 2 * self.lease_check_seconds

    def recover_abandoned(self) -> int:
        recovered = 0
        stale_after = None if time.monotonic() >= self._beats_trusted_from else math.inf
        for consumer_id in redis_registry.dead_consumers(self._redis, self.queue_name, stale_after):
            if consumer_id == self.consumer_id:  # our own beat is late (Redis was away): we are alive
                continue
            recovered += self._return_held(consumer_id)
            redis_registry.forget(self._redis, self.queue_name, consumer_id)
        if self._lease_thread is None:
            # The check start_leases makes before the first fetch (a fetch starts the leases first): this consumer
            # has taken nothing, so its bookkeeping under its new id is empty. Not read: a round trip, and a
            # connection of its own, before the first task (issue 19).
            return recovered
        return recovered + self._return_lost()

    def _return_lost(self) -> int:
        """Give back messages our bookkeeping holds that this process does not know of; how many."""
        with self._acks_lock:
            known = self._held.union(self._acks, self._sending, self._ahead[1])
        # Every lease check reads the tags alone: the bodies of the few lost ones are read only when there are some.
        unknown = self._held_tags_in_redis() - known
        lost, self._unknown = unknown & self._unknown, unknown
        if not lost:
            return 0
        self._unknown -= lost
        held = self._held_bodies_in_redis(lost)  # one acked or given back meanwhile is no longer there
        if held:
            returned = [Delivery(body, tag) for tag, body in held.items()]
            super()._give_back(returned, to_front=True)
            self._released(returned)
        return len(held)

    def _released(self, deliveries: list[Delivery]) -> None:
        """Messages were given back or dead-lettered, their bookkeeping settled in the same transaction (kinds
        that must do more after that override this)."""

    def close(self) -> None:
        """Send the buffered acks, give back whatever this consumer still holds, leave the registry."""
        if self._lease_thread is not None:
            self.flush_acks()
            self._return_held(self.consumer_id)
            redis_registry.forget(self._redis, self.queue_name, self.consumer_id)
        super().close()
