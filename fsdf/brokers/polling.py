"""Waiting on a backend that cannot say when a message arrives, and moving due delayed messages at a bounded rate.

SQLite and MongoDB queues are written by other processes without a signal, so a consumer polls:
2 ms after an empty take, doubling to 50 ms while the queue stays empty. A message published to an
idle queue waits at most 50 ms, and an idle consumer costs 20 takes a second. Brokers that keep
delayed messages beside the queue (Redis, SQLite) move the due ones in from their fetch, at most
every ``PROMOTE_EVERY_SECONDS`` per consumer, so a busy consumer does not pay a round trip per fetch.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

FIRST_PAUSE_SECONDS = 0.002
LONGEST_PAUSE_SECONDS = 0.05
PROMOTE_EVERY_SECONDS = 0.1

T = TypeVar('T')


def poll(take: Callable[[], list[T]], timeout: float, closed: threading.Event) -> list[T]:
    """Call ``take`` until it returns something, ``timeout`` s pass, or ``closed`` is set; its last result.

    ``take`` runs at least once (a ``timeout`` of 0 is one try), unless ``closed`` is already set.
    Setting ``closed`` wakes a waiting poll at once.
    """
    if closed.is_set():
        return []
    deadline = time.monotonic() + timeout
    pause = FIRST_PAUSE_SECONDS
    while True:
        taken = take()
        if taken or closed.is_set():
            return taken
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return []
        closed.wait(min(pause, remaining))
        pause = min(pause * 2, LONGEST_PAUSE_SECONDS)


class DueThrottle:
    """Says when to move due delayed messages into the queue: at most once per ``every_seconds``.

    Times are epoch seconds (``time.time()``), the clock due times are written in. The first
    call is always ready.
    """

    __slots__ = ('every_seconds', '_next')

    def __init__(self, every_seconds: float = PROMOTE_EVERY_SECONDS) -> None:
        self.every_seconds = every_seconds
        self._next = 0.0

    def ready(self, now: float) -> bool:
        """True if ``every_seconds`` have passed since it last said True (then the period starts again)."""
        if now < self._next:
            return False
        self._next = now + self.every_seconds
        return True
