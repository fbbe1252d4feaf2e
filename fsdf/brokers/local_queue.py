"""LOCAL_PYTHON_QUEUE: an in-process queue; fast, shared by the threads of one process only.

A queue's messages live in the default runtime (see fsdf.runtime): a fresh runtime starts with empty queues."""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from typing import Iterable, Optional, cast

from fsdf.brokers.base import Body, Broker, Delivery, waited
from fsdf.runtime import default_runtime


class _Channel:
    """A deque with a condition, so a fetch can take a whole batch under one lock."""

    def __init__(self) -> None:
        self.items: deque[Body] = deque()
        self.ready = threading.Condition(threading.Lock())
        self.delayed: list[tuple[float, int, Body]] = []  # heap of (due, order, body)
        self.order = itertools.count()

    def promote_due(self, now: float) -> None:
        """Move due delayed messages to the queue (caller holds ``ready``)."""
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            self.items.append(heapq.heappop(delayed)[2])


class LocalQueueBroker(Broker):
    """In-process queue; nothing survives the process."""

    guarantee = 'in-process only; nothing survives exit'
    at_least_once = False  # a taken message lives only in its consumer

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self._channel = default_runtime().shared(('local-queue', queue_name), _Channel)

    def publish(self, body: str, priority: Optional[int] = None) -> None:
        channel = self._channel
        with channel.ready:
            channel.items.append(body)
            channel.ready.notify()

    def publish_many(self, bodies: list[str]) -> None:
        channel = self._channel
        with channel.ready:
            channel.items.extend(bodies)
            channel.ready.notify(len(bodies))

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        channel = self._channel
        with channel.ready:
            for body in bodies:
                heapq.heappush(channel.delayed, (due, next(channel.order), body))
            channel.ready.notify()

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if self._closed.is_set():
            return []
        channel = self._channel
        deadline = None
        with channel.ready:
            if channel.delayed:
                channel.promote_due(time.time())
            while not channel.items:
                if deadline is None:
                    deadline = time.monotonic() + timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if channel.delayed:  # wake up when the next delayed message is due
                    remaining = min(remaining, max(0.0, channel.delayed[0][0] - time.time()))
                channel.ready.wait(remaining)
                if channel.delayed:
                    channel.promote_due(time.time())
            pop = channel.items.popleft
            return [Delivery(pop()) for _ in range(min(max_count, len(channel.items)))]

    def ack(self, delivery: Delivery) -> None:
        """Nothing to do: a fetched message has already left the queue."""

    def requeue(self, delivery: Delivery) -> None:
        self.publish(cast(str, delivery.body))  # this queue holds only the str bodies published to it

    def requeue_many(self, deliveries: Iterable[Delivery]) -> None:
        bodies = [delivery.body for delivery in deliveries]
        channel = self._channel
        with channel.ready:
            channel.items.extendleft(reversed(bodies))
            channel.ready.notify(len(bodies))

    def count(self) -> int:
        return len(self._channel.items)

    def oldest_age(self) -> Optional[float]:
        channel = self._channel
        with channel.ready:
            head = channel.items[0] if channel.items else None
        return 0.0 if head is None else waited(head)

    def count_delayed(self) -> Optional[int]:
        """The channel's heap of delayed messages: each joins the queue when a fetch finds it due."""
        with self._channel.ready:
            return len(self._channel.delayed)

    def purge(self) -> None:
        with self._channel.ready:
            self._channel.items.clear()
            self._channel.delayed.clear()
