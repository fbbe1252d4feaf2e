"""Acks gathered from many threads and sent to the backend in one call (one DELETE, one delete_many).

The rule that makes it safe: ``add`` appends its id before trying the lock, and the thread holding
the lock looks at the deque again after releasing it. So when ``add`` returns, its id was sent, or
the thread sending holds the lock and will send it. If the process dies first, the message is
redelivered (at-least-once).
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable


class AckBatch:
    """Ids of settled messages not yet deleted on the backend, sent by ``send(ids)`` in batches."""

    def __init__(self, send: Callable[[list[Any]], None]) -> None:
        self._send = send
        self._ids: deque[Any] = deque()
        self._lock = threading.Lock()  # held by the one thread sending

    def add(self, message_id: Any) -> None:
        """Ack one message: sent now, or by the thread sending at this moment."""
        self._ids.append(message_id)
        self.flush()

    def flush(self, wait: bool = False) -> None:
        """Send what is gathered, unless another thread is sending now (``wait``: wait for it, then send).

        A failed send keeps its ids for the next ``add`` or ``flush`` and raises.
        """
        ids = self._ids
        while ids and self._lock.acquire(blocking=wait):
            batch = [ids.popleft() for _ in range(len(ids))]
            try:
                if batch:
                    self._send(batch)
            except BaseException:
                ids.extend(batch)
                raise
            finally:
                self._lock.release()


def run_ack_flusher(waiting: threading.Event, closed: threading.Event, flush: Callable[[], bool],
                    delay: float, retry_after: float) -> None:
    """The body of a broker's ack-flusher thread, until ``closed`` is set.

    Acks usually leave with the next fetch; this sends those no fetch carried: ``delay`` seconds after
    ``waiting`` is set (so acks wait a little for company), and ``retry_after`` seconds after a ``flush()``
    that returned False (the backend away: the acks are kept and the next try sends them).
    """
    while not closed.is_set():
        if not waiting.wait(1.0):
            continue
        closed.wait(delay)
        waiting.clear()  # before the flush: an ack after it sets it again
        if not flush():
            closed.wait(retry_after)
