"""Group commit: one-message publishes from many threads share round trips to the broker.

A publish that finds none in flight sends its message at once, alone: one thread pays two
uncontended lock operations and nothing else. Publishes that arrive while one is in flight wait in
line; when the round trip in flight ends, the first in line sends every waiting message (up to
``max_batch``) with one ``send_many`` and wakes the others, while the next line forms behind it.
So 50 threads pushing to Redis send about one ``LPUSH`` of many values per round trip instead of
50 round trips.

What a caller can rely on: a call returns only once its own message is on the broker (the round
trip that carried it returned), and raises what that round trip raised: every caller of a failed
batch gets the error, so each one's publisher retries or reports it (a batch that failed may have
been partly stored, which at-least-once publishing allows; nothing is reported published that was
not sent). One thread's messages keep its order (it waits for each); messages of different
threads go in arrival order within a batch.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional


class _Waiting:
    """One publish waiting in line: its body, a lock released when it is done (or must lead), its outcome."""

    __slots__ = ('body', 'woken', 'error', 'batch')

    def __init__(self, body: str) -> None:
        self.body = body
        self.woken = threading.Lock()
        self.woken.acquire()  # released by whoever sends this body, or hands this call the next batch
        self.error: Optional[BaseException] = None
        self.batch: Optional[list[_Waiting]] = None  # set on the one call chosen to send the next batch


class GroupCommit:
    """Sends one body at a time through ``send_one`` when alone, and bodies that queued up meanwhile,
    in order, through ``send_many`` (at most ``max_batch`` per call). Thread-safe; see the module docstring."""

    def __init__(self, send_one: Callable[[str], None], send_many: Callable[[list[str]], None],
                 max_batch: int) -> None:
        self._send_one, self._send_many, self._max_batch = send_one, send_many, max_batch
        self._lock = threading.Lock()
        self._in_flight = False  # a round trip is under way; new publishes wait in line
        self._line: list[_Waiting] = []

    def publish(self, body: str) -> None:
        """Put ``body`` on the broker, alone or with others; returns once it is there, else raises."""
        lock = self._lock  # acquire/release rather than ``with``: this is every publish's cost when alone
        lock.acquire()
        if self._in_flight:
            waiting = _Waiting(body)
            self._line.append(waiting)
            lock.release()
            self._wait(waiting)
            return
        self._in_flight = True  # this call sends now, alone
        lock.release()
        try:
            self._send_one(body)
        finally:
            lock.acquire()
            if self._line:
                self._hand_on()
            else:
                self._in_flight = False
                lock.release()

    def _wait(self, waiting: _Waiting) -> None:
        try:
            waiting.woken.acquire()
        except BaseException:  # interrupted (KeyboardInterrupt in the main thread) while in line
            with self._lock:
                if waiting in self._line:  # not taken: leave the line; the caller knows it was not published
                    self._line.remove(waiting)
                    raise
            waiting.woken.acquire()  # taken into a batch, or handed the next one: see it through first
            self._send_if_leading(waiting)
            raise
        self._send_if_leading(waiting)
        if waiting.error is not None:
            raise waiting.error

    def _send_if_leading(self, waiting: _Waiting) -> None:
        """If ``waiting`` was handed the next batch, send it (its own body is the first)."""
        batch = waiting.batch
        if batch is None:
            return
        try:
            self._send_many([each.body for each in batch])
        except BaseException as exc:
            for each in batch:
                each.error = exc
        finally:
            self._lock.acquire()
            self._hand_on()  # the next line starts its round trip before this one's callers wake
            for each in batch[1:]:
                each.woken.release()

    def _hand_on(self) -> None:
        """The round trip in flight ended (the caller holds the lock, which this releases): give the calls
        in line to the first of them, or stand idle."""
        if not self._line:
            self._in_flight = False
            self._lock.release()
            return
        batch = self._line[:self._max_batch]
        del self._line[:self._max_batch]
        self._lock.release()
        batch[0].batch = batch
        batch[0].woken.release()
