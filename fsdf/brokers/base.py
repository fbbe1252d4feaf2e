"""The one small interface every broker implements, and the behaviour they share."""
from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Optional, Union

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


class Broker(ABC):
    """A queue on one backend: publish, fetch a batch, ack, requeue, dead-letter, count, purge, close.

    One instance serves every publisher and consumer of its queue in a process. Brokers that
    lend messages to consumers (at-least-once) set ``lease_check_seconds``: while the process
    consumes, a background thread then calls :meth:`beat` and :meth:`recover_abandoned` on
    that period, so a dead consumer's messages return to the queue.
    """

    guarantee: ClassVar[str] = ''
    """The delivery guarantee, as the README's broker table states it."""
    lease_check_seconds: ClassVar[float] = 0
    publish_batch_size: ClassVar[int] = 1000
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """What the backend's client raises while the server is unreachable: publishers retry on these."""
    """The most messages one ``publish_many`` call carries; a publisher splits bigger batches."""

    @classmethod
    def queue_name_problem(cls, name: str) -> Optional[str]:
        """What this backend forbids in ``name`` beyond fsdf's own rule (fsdf/names.py), or None."""
        return None

    def __init__(self, queue_name: str) -> None:
        # Checked here too, so no path (get_broker, sibling, a dead-letter queue) skips the rule.
        self.queue_name = check_queue_name(queue_name, type(self))
        self.consumer_id = f'{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}'
        self.logger = logging.getLogger(f'fsdf.broker.{queue_name}')
        self._dlq: Optional[Broker] = None
        self._dlq_lock = threading.Lock()
        self._lease_thread: Optional[threading.Thread] = None
        self._closed = threading.Event()

    # -- the interface -------------------------------------------------------------------
    @abstractmethod
    def publish(self, body: str, priority: Optional[int] = None) -> None:
        """Put one message on the queue; returns once the broker has it."""

    def publish_many(self, bodies: list[str]) -> None:
        """Put many messages on the queue, in as few round trips as the backend allows."""
        for body in bodies:
            self.publish(body)

    def publish_delayed(self, body: str, due: float) -> None:
        """Keep a message on the broker side until ``due`` (epoch seconds), then queue it."""
        self.publish_delayed_many([body], due)

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        """Keep messages on the broker side until ``due``; consumers never hold them before then."""
        raise NotImplementedError(f'{type(self).__name__} does not support delayed messages yet')

    @abstractmethod
    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        """Take up to ``max_count`` messages, waiting up to ``timeout`` s for the first one."""

    @abstractmethod
    def ack(self, delivery: Delivery) -> None:
        """The message is settled: remove it for good."""

    @abstractmethod
    def requeue(self, delivery: Delivery) -> None:
        """Give a taken message back to the queue, to be fetched again."""

    @abstractmethod
    def count(self) -> int:
        """Messages waiting in the queue (not counting ones taken by consumers)."""

    @abstractmethod
    def purge(self) -> None:
        """Remove every waiting message."""

    def close(self) -> None:
        """Release connections, the dead-letter queue's too; the broker is not used again."""
        self._closed.set()
        with self._dlq_lock:
            dlq, self._dlq = self._dlq, None
        if dlq is not None:
            dlq.close()

    # -- shared behaviour ----------------------------------------------------------------
    def requeue_many(self, deliveries: Iterable[Delivery]) -> None:
        """Give several taken messages back."""
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
        """Move a taken message to the dead-letter queue with ``body`` (which says why), then ack it."""
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
