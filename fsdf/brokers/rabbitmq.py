"""What the RabbitMQ brokers share; each client module only says how to make the AMQP calls.

A queue is a durable RabbitMQ queue of the same name (``x-max-priority`` 10), messages are
persistent, and every publish waits for the broker's confirm. Brokers of one URL publish through
a :class:`PublisherPool` shared in the runtime (a session is used by one thread at a time, so a
process holds as many publishing connections as it publishes concurrently, not one per queue, and
a queue's ``_dlq`` sibling publishes through the same ones); each broker that consumes holds one
consuming connection of its own. Settled
messages queue up in ``_settles`` and are acked in batches (one socket write for a thread-safe
client): with a thread-safe client (AMQPStorm) by whichever pool thread finds the settle lock
free; otherwise (pika) by a pool thread only when the fetch thread is not using the connection,
else by the fetch thread within a few milliseconds, so such a client is never entered by two
threads. Prefetch (``basic.qos``) grows to the most the consumer has held at once (messages
it holds unsettled plus the batch it asks for): its concurrency, and for short calls the pool's
small prefetch margin, so RabbitMQ keeps every worker busy while acks travel. When a connection
drops, the next call opens a new one and consumes again; acks for messages of the dead
connection are dropped (RabbitMQ has already put those messages back).

Delayed messages wait in a delay queue ``fsdf.delay.<queue>.<ms>``: every message in it has the
same delay (the queue's ``x-message-ttl``), and when it expires RabbitMQ dead-letters it through
the default exchange to ``<queue>``. One queue per delay, because RabbitMQ expires messages only
at the head of a queue: with per-message ``expiration`` in a shared queue, a message due in an
hour would hold back one due in a second behind it; with one TTL per queue, head-first is also
due-first. Delays are rounded up (to 0.1 s under a minute, 1 s beyond), so a message is never
early and at most that late, and the number of delay queues stays bounded by the distinct
delays in flight. Each delay queue deletes itself (``x-expires``) a minute after its last
message has expired. ``count`` and ``purge`` see only the queue itself, not delayed messages.
"""
from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional, TypeVar

from fsdf.brokers.base import Body, Broker, Delivery
from fsdf.config import settings
from fsdf.secrets import redact
from fsdf.runtime import default_runtime

MAX_PRIORITY = 10
QUEUE_ARGUMENTS = {'x-max-priority': MAX_PRIORITY}
RECONNECT_DEADLINE_SECONDS = 60.0  # how long a publish keeps trying while RabbitMQ is away
RECONNECT_PAUSE_SECONDS = 0.5
PUMP_SLICE_SECONDS = 0.01  # the longest an ack waits while the fetch thread waits for messages
DELAY_QUEUE_LINGER_MS = 60_000  # an unused delay queue outlives its last message's expiry by this much
# Publishing connections per URL and client: threads beyond this many publishing at once wait for a free one.
MAX_PUBLISHING_SESSIONS = 8
T = TypeVar('T')

OnMessage = Callable[[Body, int], None]


class AmqpSession(ABC):
    """One connection and channel through one client library; the calls a broker needs, nothing more."""

    connection_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """Exceptions that mean the connection or channel is gone and a new session is needed."""
    thread_safe: ClassVar[bool] = False
    """True if any thread may settle while another thread pumps the same session."""

    @abstractmethod
    def __init__(self, url: str, confirm: bool) -> None:
        """Connect and open a channel (in confirm mode if ``confirm``)."""

    @abstractmethod
    def declare(self, queue: str, arguments: dict) -> None:
        """Declare a durable queue with these arguments."""

    @abstractmethod
    def publish(self, queue: str, body: str, priority: Optional[int]) -> None:
        """Publish one persistent message to the default exchange; return once the broker confirmed it."""

    @abstractmethod
    def publish_batch(self, queue: str, bodies: list[str]) -> None:
        """Publish persistent messages in one AMQP transaction; return once it is committed."""

    @abstractmethod
    def count(self, queue: str) -> int:
        """Messages ready in the queue."""

    @abstractmethod
    def purge(self, queue: str) -> None:
        """Remove every ready message."""

    @abstractmethod
    def consume(self, queue: str, prefetch: int, on_message: OnMessage) -> None:
        """Start consuming with manual acks; deliveries go to ``on_message(body, delivery_tag)``."""

    @abstractmethod
    def set_prefetch(self, prefetch: int) -> None:
        """Change the consumer's prefetch count.

        Channel-wide (``global``) qos, in ``consume`` too: RabbitMQ applies a per-consumer qos only to
        consumers started after it, so the prefetch of a running consumer would never grow. Each
        consuming channel has one consumer, so channel-wide is the same limit.
        """

    @abstractmethod
    def pump(self, seconds: float) -> None:
        """Read from the connection for about ``seconds``, calling ``on_message`` for each delivery."""

    @abstractmethod
    def settle(self, acks: list[int], requeues: list[int]) -> None:
        """Acknowledge some deliveries and give others back to the queue."""

    def wake_pump(self, fn: Callable[[], None]) -> bool:
        """From another thread: have the pumping thread run ``fn`` at once; False if this client cannot."""
        return False

    @abstractmethod
    def close(self) -> None:
        """Close the connection, ignoring errors."""


@dataclass(eq=False)
class Publishing:
    """A publishing session of a pool and the queues it has declared (a new session declares again)."""

    session: AmqpSession
    declared: set[str] = field(default_factory=set)


class PublisherPool:
    """The publishing sessions (confirm mode) of one URL and client, shared by the brokers of a runtime.

    :meth:`run` lends an idle session to one thread, opening one while fewer than
    ``MAX_PUBLISHING_SESSIONS`` exist, else waiting for one to come back; a session is never
    used by two threads at once, whatever the client's thread-safety. A connection error closes
    the session and every idle one (they lead to the same server, which has gone away) and is
    raised: the broker retries. After :meth:`close`, sessions are closed as they come back.
    """

    def __init__(self, session_class: type[AmqpSession], url: str) -> None:
        self.session_class = session_class
        self.url = url
        self._idle: list[Publishing] = []
        self._opened = 0  # sessions that exist: idle, lent, or being opened
        self._returned = threading.Condition()
        self._closed = False

    def run(self, call: Callable[[Publishing], T]) -> T:
        """``call(publishing)`` on a lent session; the session goes back unless its connection failed."""
        publishing = self._take()
        try:
            result = call(publishing)
        except (ConnectionError,) + self.session_class.connection_errors:
            self._discard(publishing)
            raise
        except BaseException:
            self._give_back(publishing)
            raise
        self._give_back(publishing)
        return result

    def _take(self) -> Publishing:
        with self._returned:
            while not self._idle and self._opened >= MAX_PUBLISHING_SESSIONS:
                self._returned.wait()
            if self._idle:
                return self._idle.pop()
            self._opened += 1
        try:
            return Publishing(open_session(self.session_class, self.url, confirm=True))
        except BaseException:
            with self._returned:
                self._opened -= 1
                self._returned.notify()
            raise

    def _give_back(self, publishing: Publishing) -> None:
        with self._returned:
            if not self._closed:
                self._idle.append(publishing)
                self._returned.notify()
                return
        self._discard(publishing)

    def _discard(self, publishing: Publishing) -> None:
        with self._returned:
            doomed, self._idle = [publishing, *self._idle], []
            self._opened -= len(doomed)
            self._returned.notify_all()
        for each in doomed:
            each.session.close()

    def close(self) -> None:
        """Close the idle sessions now and lent ones when they come back."""
        with self._returned:
            self._closed = True
            doomed, self._idle = self._idle, []
            self._opened -= len(doomed)
        for each in doomed:
            each.session.close()


def open_session(session_class: type[AmqpSession], url: str, confirm: bool) -> AmqpSession:
    """A new session, or ConnectionError (with the password hidden) if RabbitMQ cannot be reached."""
    try:
        return session_class(url, confirm)
    except session_class.connection_errors as exc:
        raise ConnectionError(f'RabbitMQ at {redact(url)} is not reachable: {redact(exc)}') from exc


class RabbitMQBroker(Broker):
    """A durable RabbitMQ queue with confirms, manual acks, bounded prefetch and reconnection."""

    guarantee = 'at-least-once, publisher confirms, persistent messages'
    publish_batch_size = 10_000  # one transaction each: a commit waits for the disk, so fewer is faster
    requeue_to_front = True  # RabbitMQ puts a rejected message back in its old place
    purge_includes_delayed = False  # they wait in delay queues this instance may not know of
    session_class: ClassVar[type[AmqpSession]]
    connection_errors = (ConnectionError,)  # what _with_publisher raises once its own reconnect failed
    groups_publishes = True  # one transaction of many messages: one commit's wait instead of a confirm each

    @classmethod
    def queue_name_problem(cls, name: str) -> Optional[str]:
        """RabbitMQ queue names: at most 255 bytes of UTF-8; 'amq.' is the server's own namespace."""
        if len(name.encode('utf-8')) > 255 or name.startswith('amq.'):
            return 'is not a RabbitMQ queue name (at most 255 bytes, not starting with "amq.")'
        return None

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self.url = settings.RABBITMQ_URL
        self._runtime = default_runtime()  # holds the shared publisher pool; released on close
        self._pool_lock = threading.Lock()
        self._pool: Optional[PublisherPool] = None
        self._consume_lock = threading.Lock()
        # Who may send settles: any thread with a thread-safe client, else whoever holds the connection.
        self._settle_lock = threading.Lock() if self.session_class.thread_safe else self._consume_lock
        self._consumer: Optional[AmqpSession] = None
        self._prefetch = 0
        self._unsettled = 0  # deliveries of the current session handed to the consumer and not yet settled
        self._unsettled_lock = threading.Lock()
        self._received: deque[Delivery] = deque()  # tagged (session, delivery tag): tags are per connection
        self._settles: deque[tuple[Delivery, bool]] = deque()  # (delivery, ack?) waiting to be sent
        self._wake_pending = False  # the pumping thread has been asked to send the waiting settles

    # -- sessions ------------------------------------------------------------------------
    def _open(self, confirm: bool) -> AmqpSession:
        session = open_session(self.session_class, self.url, confirm)
        try:
            session.declare(self.queue_name, QUEUE_ARGUMENTS)
        except self.session_class.connection_errors as exc:
            session.close()
            raise ConnectionError(f'RabbitMQ at {redact(self.url)} is not reachable: {redact(exc)}') from exc
        return session

    def _publishers(self) -> PublisherPool:
        """The runtime's publisher pool for this URL and client, taken on first use and released on close."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = self._runtime.acquire(self._pool_key(), lambda: PublisherPool(
                    self.session_class, self.url), PublisherPool.close)
            return self._pool

    def _pool_key(self) -> tuple[str, type[AmqpSession], str]:
        return ('rabbitmq-publishers', self.session_class, self.url)

    def _with_publisher(self, call: Callable[[AmqpSession], T]) -> T:
        """Run ``call`` on a publishing session, reconnecting until the deadline if RabbitMQ is away."""
        deadline = time.monotonic() + RECONNECT_DEADLINE_SECONDS
        pool = self._publishers()

        def on_session(publishing: Publishing) -> T:
            if self.queue_name not in publishing.declared:  # a new session: the queue may not exist yet
                publishing.session.declare(self.queue_name, QUEUE_ARGUMENTS)
                publishing.declared.add(self.queue_name)
            return call(publishing.session)
        while True:
            try:
                return pool.run(on_session)
            except (ConnectionError,) + self.session_class.connection_errors as exc:
                if time.monotonic() > deadline or self._closed.is_set():
                    raise ConnectionError(f'RabbitMQ at {redact(self.url)}: {redact(exc)}') from exc
                self.logger.warning('RabbitMQ connection lost (%s); reconnecting', redact(exc))
                time.sleep(RECONNECT_PAUSE_SECONDS)

    def _drop_consumer(self, exc: BaseException) -> None:
        """Forget the consuming session; its unacked messages are already back in the queue."""
        self.logger.warning('RabbitMQ consuming connection lost (%s); will reconnect and consume again', redact(exc))
        if self._consumer is not None:
            self._consumer.close()
        self._consumer = None
        self._received.clear()
        self._settles.clear()

    # -- publishing ----------------------------------------------------------------------
    def publish(self, body: str, priority: Optional[int] = None) -> None:
        if priority is not None:
            priority = max(0, min(int(priority), MAX_PRIORITY))
        self._with_publisher(lambda session: session.publish(self.queue_name, body, priority))

    def publish_many(self, bodies: list[str]) -> None:
        # One transaction per batch: one round trip instead of a confirm per message, the same guarantee.
        self._with_publisher(lambda session: session.publish_batch(self.queue_name, bodies))

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        ttl_ms = delay_ms(due - time.time())
        if ttl_ms <= 0:
            self.publish_many(bodies)
            return
        delay_queue = f'fsdf.delay.{self.queue_name}.{ttl_ms}'
        arguments = {'x-message-ttl': ttl_ms, 'x-expires': ttl_ms + DELAY_QUEUE_LINGER_MS,
                     'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': self.queue_name}

        def publish(session: AmqpSession) -> None:
            session.declare(delay_queue, arguments)  # declaring also renews the queue's x-expires lease
            session.publish_batch(delay_queue, bodies)
        self._with_publisher(publish)

    def count(self) -> int:
        return self._with_publisher(lambda session: session.count(self.queue_name))

    def purge(self) -> None:
        self._with_publisher(lambda session: session.purge(self.queue_name))

    # -- consuming -----------------------------------------------------------------------
    def _on_message(self, body: Body, tag: int) -> None:
        self._received.append(Delivery(body, (self._consumer, tag)))

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if self._closed.is_set():  # else it would open a consuming connection again
            return []
        try:
            return self._fetch(max_count, timeout)
        finally:
            if self._settles:  # left by a pool thread while we held the lock
                self._flush_if_free()

    def _fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        with self._consume_lock:
            try:
                self._flush_settles()
                if self._consumer is None:
                    self._consumer = self._open(confirm=False)
                    self._unsettled = 0
                    self._prefetch = max(1, max_count)
                    self._consumer.consume(self.queue_name, self._prefetch, self._on_message)
                elif max_count + self._unsettled > self._prefetch:
                    self._prefetch = max_count + self._unsettled
                    self._consumer.set_prefetch(self._prefetch)
                deadline = time.monotonic() + timeout  # counted from here: connecting is not waiting
                while not self._received:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed.is_set():
                        return []
                    self._consumer.pump(min(PUMP_SLICE_SECONDS, remaining))
                    self._flush_settles()
            except self.session_class.connection_errors as exc:
                self._drop_consumer(exc)
                raise ConnectionError(f'RabbitMQ consuming connection lost: {redact(exc)}') from exc
            received = self._received
            taken = min(max_count, len(received))
            with self._unsettled_lock:
                self._unsettled += taken
            return [received.popleft() for _ in range(taken)]

    def _flush_settles(self) -> None:
        """Send the acks and requeues waiting in ``_settles`` (caller holds ``_settle_lock`` or the connection)."""
        settles, consumer = self._settles, self._consumer
        acks: list[int] = []
        requeues: list[int] = []
        while True:
            try:  # another thread may take the last one between a check and a pop
                delivery, is_ack = settles.popleft()
            except IndexError:
                break
            session, tag = delivery.tag
            if session is consumer:  # else from a connection that is gone: RabbitMQ has requeued it already
                (acks if is_ack else requeues).append(tag)
        if consumer is not None and (acks or requeues):  # with no consumer session, nothing was collected
            with self._unsettled_lock:
                self._unsettled -= len(acks) + len(requeues)
            consumer.settle(acks, requeues)

    def _settle(self, delivery: Delivery, is_ack: bool) -> None:
        self._settles.append((delivery, is_ack))
        self._flush_if_free()

    def _flush_if_free(self) -> None:
        """Send waiting settles unless another thread is sending them or holds the connection.

        Whoever sends looks again after letting go of the lock, so a settle queued by a thread
        that found the lock taken is never left behind. If the fetch thread holds a client that
        only it may use, it is woken (where the client allows) to send them without waiting out
        its pump slice.
        """
        settles, lock = self._settles, self._settle_lock
        while settles:
            if not lock.acquire(blocking=False):
                consumer = self._consumer
                if not self._wake_pending and consumer is not None and lock is self._consume_lock:
                    self._wake_pending = True  # before the call: the woken thread may clear it at once
                    try:
                        if not consumer.wake_pump(self._flush_in_pump):
                            self._wake_pending = False
                    except self.session_class.connection_errors:
                        self._wake_pending = False  # the fetch thread's pump notices the loss itself
                return
            try:
                self._flush_settles()
            except self.session_class.connection_errors as exc:
                if self.session_class.thread_safe:  # the fetch thread's next pump notices and reconnects
                    self.logger.debug('could not settle deliveries on a lost connection: %s', redact(exc))
                else:  # we hold the connection: drop it here
                    self._drop_consumer(exc)
            finally:
                lock.release()

    def _flush_in_pump(self) -> None:
        self._wake_pending = False  # first: a settle queued from here on asks for another wake
        self._flush_settles()

    def ack(self, delivery: Delivery) -> None:
        self._settle(delivery, True)

    def requeue(self, delivery: Delivery) -> None:
        self._settle(delivery, False)

    def close(self) -> None:
        super().close()
        with self._consume_lock:
            if self._consumer is not None:
                try:
                    self._flush_settles()
                except self.session_class.connection_errors:
                    pass
                self._consumer.close()
                self._consumer = None
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:  # the last broker of the URL to let go closes the pool's connections
            self._runtime.release(self._pool_key())


def delay_ms(seconds: float) -> int:
    """A delay rounded up to its delay queue's step: 100 ms under a minute, whole seconds beyond."""
    step = 100 if seconds < 60 else 1000
    return math.ceil(seconds * 1000 / step) * step if seconds > 0 else 0
