"""The one small interface every broker implements, and the behaviour they share."""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Optional, Union

from fsdf.group_commit import GroupCommit
from fsdf.hosts import HOST
from fsdf.names import check_queue_name
from fsdf.secrets import redact

Body = Union[str, bytes]
# Set as the interpreter exits: lease threads stop before logging and the backends' clients shut down.
_exiting = threading.Event()
atexit.register(_exiting.set)


@dataclass(slots=True, eq=False)
class Delivery:
    """One fetched message: its raw body and the broker's handle for acking it (hashed by identity)."""

    body: Body
    tag: Any = None


def waited(body: Optional[Body], stored: Optional[float] = None) -> Optional[float]:
    """Seconds since a waiting message became fetchable (see :meth:`Broker.oldest_age`), None if unknown.

    ``body``: the message at the head of the queue; ``stored``: the broker's own time for its entry.
    """
    from fsdf.message import waiting_since  # fsdf.message imports this module
    since = waiting_since(body, stored)
    return None if since is None else max(0.0, time.time() - since)


class BrokerClosedError(RuntimeError):
    """A call that needs the backend reached a broker after its ``close()`` on a broker that cannot reopen."""


class Broker(ABC):
    """A queue on one backend: publish, fetch a batch, ack, requeue, dead-letter, count, purge, close.

    One instance serves every publisher and consumer of its queue in a process. Brokers that
    lend messages to consumers (at-least-once) set ``lease_check_seconds``: while the process
    consumes, a background thread then calls :meth:`beat` and :meth:`recover_abandoned` on
    that period, so a dead consumer's messages return to the queue.

    Each method's docstring is its promise to every kind, checked on each by
    ``tests/test_broker_interface.py``. Where a backend cannot keep one, the class says so in
    one of the ClassVars below (the README's table "What the broker methods promise" shows them);
    nothing else differs between kinds. Words used there: *waiting* messages can be fetched now;
    *delayed* ones were published with a due time still to come; *taken* ones were fetched and are
    not yet settled (acked, requeued or dead-lettered).
    """

    guarantee: ClassVar[str] = ''
    """The delivery guarantee, as the README's broker table states it."""
    lease_check_seconds: ClassVar[float] = 0
    publish_batch_size: ClassVar[int] = 1000
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """What the backend's client raises while the server is unreachable: publishers retry on these."""
    """The most messages one ``publish_many`` call carries; a publisher splits bigger batches."""
    at_least_once: ClassVar[bool] = True
    """A message taken and never settled (its consumer died or closed) is delivered again; False: it is lost."""
    fifo: ClassVar[bool] = True
    """One publisher's messages are fetched in the order it published them; False: in about that order
    (Kafka: per partition; MongoDB: by publish time, so one ``publish_many`` batch in any order)."""
    requeue_to_front: ClassVar[bool] = False
    """``requeue`` puts the message ahead of the waiting ones (its old place); False: behind them."""
    requeue_many_to_front: ClassVar[bool] = True
    """``requeue_many`` puts the messages ahead of the waiting ones, in their order; False: behind them."""
    count_includes_taken: ClassVar[bool] = False
    """``count`` also counts taken messages until they settle (Kafka: the group's lag); False: waiting only."""
    purge_includes_delayed: ClassVar[bool] = True
    """``purge`` removes delayed messages too; False: they stay and arrive when due."""
    purge_while_consuming: ClassVar[bool] = True
    """``purge`` works while consumers of the queue run; False: it raises then and removes nothing."""
    groups_publishes: ClassVar[bool] = False
    """One-message publishes from several threads of a process go out together, many per ``publish_many``
    (group commit, fsdf/group_commit.py); set where that call costs about one round trip however many it
    carries. Each publish still returns once its message is on the broker."""
    publishes_after_close: ClassVar[bool] = True
    """After ``close``, publishing, ``count`` and ``purge`` still work (they reconnect), so a publisher
    holding the instance carries on; False: they raise :class:`BrokerClosedError`."""

    @classmethod
    def queue_name_problem(cls, name: str) -> Optional[str]:
        """What this backend forbids in ``name`` beyond fsdf's own rule (fsdf/names.py), or None."""
        return None

    def __init__(self, queue_name: str) -> None:
        # Checked here too, so no path (get_broker, sibling, a dead-letter queue) skips the rule.
        self.queue_name = check_queue_name(queue_name, type(self))
        self.consumer_id = f'{HOST}:{os.getpid()}:{os.urandom(4).hex()}'  # 32 random bits, as uuid4().hex[:8]
        self.logger = logging.getLogger(f'fsdf.broker.{queue_name}')
        self._dlq: Optional[Broker] = None
        self._dlq_lock = threading.Lock()
        self._lease_thread: Optional[threading.Thread] = None
        self._closed = threading.Event()
        # The publishers of this queue in this process share it (the consume side never uses it).
        self.publish_group = (GroupCommit(self.publish, self.publish_many, self.publish_batch_size)
                              if self.groups_publishes else None)

    # -- the interface -------------------------------------------------------------------
    @abstractmethod
    def publish(self, body: str, priority: Optional[int] = None) -> None:
        """Put one message on the queue, behind the waiting ones; returns once the broker has it.

        ``priority`` (0-10, higher first) is honoured by RabbitMQ only; the others ignore it.
        """

    def publish_many(self, bodies: list[str]) -> None:
        """Put many messages on the queue in their order, in as few round trips as the backend allows."""
        for body in bodies:
            self.publish(body)

    def publish_delayed(self, body: str, due: float) -> None:
        """Keep a message on the broker side until ``due`` (epoch seconds), then queue it."""
        self.publish_delayed_many([body], due)

    @abstractmethod
    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        """Keep messages on the broker side until ``due`` (epoch seconds), then queue them.

        Never fetched before ``due``; a consumer of the queue fetches them soon after it (within a
        second while one runs: each kind moves due messages itself, at most every 0.1 to 0.25 s).
        Not in ``count`` until due. A ``due`` in the past queues them at once.
        """

    @abstractmethod
    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        """Take up to ``max_count`` messages, waiting up to ``timeout`` s for the first one.

        Returns at once with what is waiting, else with the first to arrive, else ``[]`` after
        ``timeout``. The messages are taken: no other fetch gets them until they are requeued or
        their consumer dies (at-least-once kinds). After ``close``: ``[]`` at once, taking nothing.
        """

    reads_ahead: ClassVar[bool] = False
    """Whether ``fetch_ahead_send`` can start a take (a consumer skips asking when it cannot)."""

    def fetch_ahead_send(self, max_count: int) -> bool:
        """Start a take of up to ``max_count`` waiting messages without waiting for its reply; False if this kind
        cannot (the default) or is closed. A True must be followed by ``fetch_ahead_receive`` in the same thread
        before any other fetch: a single-thread consumer runs its batch meanwhile, so the round trip overlaps it.
        """
        return False

    def fetch_ahead_receive(self) -> list[Delivery]:
        """The messages the take ``fetch_ahead_send`` started got (taken as by ``fetch``, never waiting for one)."""
        raise NotImplementedError(f'{type(self).__name__} does not read ahead')

    @abstractmethod
    def ack(self, delivery: Delivery) -> None:
        """The message is settled: remove it for good (a few kinds send acks in batches, within 0.1 s)."""

    def ack_many(self, deliveries: list[Delivery]) -> None:
        """``ack`` each message (kinds that buffer acks take the whole list at once)."""
        for delivery in deliveries:
            self.ack(delivery)

    @abstractmethod
    def requeue(self, delivery: Delivery) -> None:
        """Give a taken message back, to be fetched again: ahead of the waiting ones if
        ``requeue_to_front``, else behind them."""

    @abstractmethod
    def count(self) -> int:
        """Messages waiting: never delayed ones before they are due; taken ones only if ``count_includes_taken``."""

    def oldest_age(self) -> Optional[float]:
        """Seconds the oldest waiting message has waited (Sidekiq's "latency"); None where the kind cannot tell.

        Waited since it became fetchable: its publish time, or its due time for a delayed one (the
        message's own ``publish_time``/``eta`` where it carries them, else the broker's time for the
        entry). ``0.0`` when nothing waits. Delayed messages before they are due and taken ones do not
        count. A kind tells only where it is cheap and exact (one peek at the head, one indexed row):
        the Redis kinds, LOCAL_PYTHON_QUEUE, PERSISTQUEUE, SQLACHEMY and MONGOMQ; the others (RabbitMQ,
        Kafka, NATS, ZeroMQ, KOMBU) cannot look at a waiting message without taking it, and return None.
        """
        return None

    def count_delayed(self) -> Optional[int]:
        """Delayed messages (a countdown or eta, a delayed retry) held back and not yet waiting; None where the
        kind cannot tell.

        Counted until they join the waiting ones: the SQL and MongoDB kinds move them at their due time;
        the Redis kinds, PERSISTQUEUE and LOCAL_PYTHON_QUEUE when a consumer of the queue next fetches, so
        a due one may count here a little past its due time (and with no consumer, until one starts).
        Where fsdf holds them in a countable place: the Redis kinds (one ZCARD), LOCAL_PYTHON_QUEUE,
        PERSISTQUEUE, SQLACHEMY and MONGOMQ (an indexed count). The others hold them where they cannot be
        counted (RabbitMQ and KOMBU in the backend's own delay, NATS in naks, ZeroMQ and Kafka in a
        consumer's memory) and return None.
        """
        return None

    @abstractmethod
    def purge(self) -> None:
        """Remove every waiting message; taken ones stay with their consumers, and delayed ones go too
        if ``purge_includes_delayed``. If not ``purge_while_consuming``, it raises while consumers run."""

    def close(self) -> None:
        """Stop consuming and release connections, the dead-letter queue's too; calling it again is harmless.

        Messages this instance took and did not settle come back as a dead consumer's would
        (at-least-once kinds): at once, or at another consumer's next lease check. Afterwards
        ``fetch`` returns ``[]`` at once; an ``ack`` or ``requeue`` of an earlier delivery may be
        ignored or raise (its message comes back all the same); publishing, ``count`` and ``purge``
        work if ``publishes_after_close``, else raise :class:`BrokerClosedError`.
        """
        self._closed.set()
        with self._dlq_lock:
            dlq, self._dlq = self._dlq, None
        if dlq is not None:
            dlq.close()

    # -- shared behaviour ----------------------------------------------------------------
    def requeue_many(self, deliveries: Iterable[Delivery]) -> None:
        """Give several taken messages back (prefetched ones a consumer did not start, say): ahead of
        the waiting ones and in their order if ``requeue_many_to_front``, else behind them."""
        for delivery in deliveries:
            self.requeue(delivery)

    @property
    def dlq(self) -> 'Broker':
        """The dead-letter queue ``<queue>_dlq``: an ordinary queue of the same kind."""
        if self._dlq is None:
            # Two threads dead-lettering at once must not both open it (SQLite: "database is locked").
            with self._dlq_lock:
                if self._dlq is None:
                    self._dlq = self.sibling(f'{self.queue_name}_dlq')
        return self._dlq

    def sibling(self, queue_name: str) -> 'Broker':
        """Another queue on the same backend and connection settings."""
        return type(self)(queue_name)

    def dead_letter(self, delivery: Delivery, body: str) -> None:
        """Move a taken message to the dead-letter queue with ``body`` (which says why), then ack it.

        The dead-letter queue is :attr:`dlq`; the message is there before it leaves this queue, so a
        failure in between leaves it in both (at-least-once), never in neither.
        """
        self.dlq.publish(body)
        self.ack(delivery)

    def start_leases(self) -> None:
        """Start beating and recovering abandoned messages, if this broker lends messages."""
        if self.lease_check_seconds and self._lease_thread is None:
            try:
                self.beat()
                self.recover_abandoned()
            except Exception as exc:  # the backend is away: start all the same, the lease loop catches up
                self.logger.error('could not reach the broker of %r (%s); it starts when the broker is back',
                                  self.queue_name, redact(exc))
            self._lease_thread = threading.Thread(
                target=self._lease_loop, name=f'fsdf-lease-{self.queue_name}', daemon=True)
            self._lease_thread.start()

    def beat(self) -> None:
        """Say this consumer is alive (brokers with leases override this)."""

    def recover_abandoned(self) -> int:
        """Return messages held by dead consumers to the queue; how many (brokers with leases override)."""
        return 0

    def _lease_loop(self) -> None:
        while not self._closed.wait(self.lease_check_seconds) and not _exiting.is_set():
            try:
                self.beat()
                recovered = self.recover_abandoned()
                if recovered:
                    self.logger.warning('returned %d messages of dead consumers to %r', recovered, self.queue_name)
            except Exception as exc:  # the backend may be briefly away; try again next period
                self.logger.warning('lease check on %r failed: %s', self.queue_name, redact(exc))
