"""ZEROMQ: PUSH/PULL sockets and no server; messages live in the memory of the two processes.

Where a queue lives: a queue whose name is a port number (``"5555"``, the seed framework's shape) is
``tcp://ZEROMQ_HOST:5555`` (``ZEROMQ_HOST`` is ``127.0.0.1`` unless configured: ZeroMQ has no
authentication, so nothing listens beyond this machine by default); any other name is the unix socket
``ipc://<PERSIST_QUEUE_PATH>/zeromq/<name>`` (this machine only). The consumer's process binds a PULL
socket there on its first fetch; publishers connect PUSH sockets. So a queue has one consuming
process (a second one cannot bind: "Address already in use") and any number of publishing ones.

The guarantee is at-most-once, and plainly so:

- a message is in the publisher's send buffer, then the consumer's receive buffer, then its
  memory; a crash of either process loses what it holds; ack does nothing, nothing is redelivered;
- with no consumer bound, a publisher keeps up to ``SEND_HWM`` messages in its own memory (ZeroMQ's
  high-water mark) and hands them over when a consumer binds; past that a publish waits up to
  ``SEND_TIMEOUT_SECONDS`` for room, then raises ``TimeoutError``; the messages it holds are lost if the
  publisher exits before a consumer binds (at exit it waits up to ``LINGER_SECONDS`` to hand them over);
- delayed messages are sent at once and kept in the consumer's memory until due;
- ``requeue`` puts a message back in the consumer's memory, ahead of the rest;
- ``count`` is what the consumer process holds ready (requeued, due); messages in ZeroMQ's buffers
  cannot be counted, so a publisher process sees 0. ``purge`` drops what the consumer holds and has
  received; in a publisher process it can do nothing.
"""
from __future__ import annotations

import atexit
import heapq
import itertools
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Optional

import zmq

from fsdf.brokers.base import Broker, BrokerClosedError, Delivery
from fsdf.config import settings
from fsdf.runtime import default_runtime

SEND_HWM = 100_000  # messages a publisher keeps while no consumer takes them
RECEIVE_HWM = 1_000  # messages a consumer's socket takes ahead of its fetches (lost if it crashes)
SEND_TIMEOUT_SECONDS = 10.0
LINGER_SECONDS = 2.0
RECONNECT_SECONDS = 0.01  # a publisher retries a consumer not yet bound this often: one that binds gets them soon
WAIT_SLICE_SECONDS = 0.05  # a waiting fetch looks at delayed messages and close this often
IPC_PATH_LIMIT = 100  # a unix socket path is at most 107 bytes


def address(queue_name: str) -> str:
    """The ZeroMQ endpoint of a queue (see the module docstring)."""
    if queue_name.isdigit():
        return f'tcp://{settings.ZEROMQ_HOST}:{int(queue_name)}'
    folder = settings.path('PERSIST_QUEUE_PATH') / 'zeromq'
    folder.mkdir(parents=True, exist_ok=True)
    path = str(Path(folder) / queue_name)
    if len(path.encode()) > IPC_PATH_LIMIT:
        raise ValueError(f'the ZeroMQ socket path {path!r} is longer than {IPC_PATH_LIMIT} bytes: '
                         f'use a shorter queue name or PERSIST_QUEUE_PATH, or a port number as the name')
    return f'ipc://{path}'


def _context() -> zmq.Context:
    """The process's ZeroMQ context, kept in the runtime and ended with it (after the brokers close)."""
    return default_runtime().shared(('zeromq',), _new_context, _end)


def _new_context() -> zmq.Context:
    context = zmq.Context()
    # Closing a socket does not wait for what it holds; ending the context does, up to the linger. Without
    # this a publishing script that exits right after its pushes would drop what is still unsent.
    atexit.register(_end, context)
    return context


def _end(context: zmq.Context) -> None:
    """Close the context's sockets, handing over what publishers hold for up to ``LINGER_SECONDS``."""
    context.destroy(linger=int(LINGER_SECONDS * 1000))


class ZeroMQBroker(Broker):
    """A PUSH/PULL pair as a queue; see the module docstring for what it promises and what it cannot."""

    guarantee = 'at-most-once: messages live in process memory; a crash loses what a process holds'
    at_least_once = False
    requeue_to_front = True  # back to the front of the consumer's memory
    publishes_after_close = False  # its sockets are closed
    connection_errors = ()  # nothing to retry: a publish with no consumer queues in memory or times out

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self.address = address(queue_name)
        self._context = _context()
        self._push: Optional[zmq.Socket] = None
        self._push_lock = threading.Lock()
        self._pull: Optional[zmq.Socket] = None
        self._fetch_lock = threading.Lock()
        self._ready: deque[bytes] = deque()  # received or requeued, due, not yet fetched
        self._delayed: list[tuple[float, int, bytes]] = []  # heap of (due, arrival number, body)
        self._numbers = itertools.count()

    # -- publishing ------------------------------------------------------------------------
    def publish(self, body: str, priority: Optional[int] = None) -> None:
        self._send(b'', (body,))

    def publish_many(self, bodies: list[str]) -> None:
        self._send(b'', bodies)

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        self._send(repr(float(due)).encode(), bodies)

    def _send(self, due: bytes, bodies: Iterable[str]) -> None:
        """Send each body as the two frames ``[due, body]`` (due empty: at once)."""
        with self._push_lock:
            send, more = self._push_socket().send, zmq.SNDMORE
            try:
                for body in bodies:
                    # Two sends, as send_multipart makes them, without its checks of each frame: those were
                    # ~1.5 µs of a ~3 µs send_multipart. ZeroMQ checks the high-water mark at a message's
                    # first frame only, so the second cannot fail on it: a message goes whole or not at all.
                    send(due, more)
                    send(body.encode())
            except zmq.Again:
                raise TimeoutError(f'no consumer of ZeroMQ queue {self.queue_name!r} ({self.address}) took '
                                   f'messages for {SEND_TIMEOUT_SECONDS:.0f} s; this process holds '
                                   f'{SEND_HWM} unsent') from None

    def _push_socket(self) -> zmq.Socket:
        if self._closed.is_set():
            raise BrokerClosedError(f'the ZeroMQ broker of {self.queue_name!r} is closed')
        if self._push is None:
            socket = self._context.socket(zmq.PUSH)
            socket.setsockopt(zmq.SNDHWM, SEND_HWM)
            socket.setsockopt(zmq.SNDTIMEO, int(SEND_TIMEOUT_SECONDS * 1000))
            socket.setsockopt(zmq.LINGER, int(LINGER_SECONDS * 1000))
            socket.setsockopt(zmq.RECONNECT_IVL, int(RECONNECT_SECONDS * 1000))
            socket.connect(self.address)
            self._push = socket
        return self._push

    # -- consuming -------------------------------------------------------------------------
    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._fetch_lock:
            while not self._closed.is_set():
                socket = self._pull_socket()
                self._receive(socket, max_count, 0)
                self._release_due()
                if self._ready:
                    return [Delivery(self._ready.popleft()) for _ in range(min(max_count, len(self._ready)))]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._receive(socket, max_count, min(remaining, WAIT_SLICE_SECONDS))
        return []

    def _pull_socket(self) -> zmq.Socket:
        if self._pull is None:
            socket = self._context.socket(zmq.PULL)
            socket.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
            socket.setsockopt(zmq.LINGER, 0)
            try:
                socket.bind(self.address)
            except zmq.ZMQError as exc:
                socket.close()
                raise RuntimeError(f'cannot bind ZeroMQ queue {self.queue_name!r} at {self.address}: {exc} '
                                   f'(one process consumes a ZeroMQ queue)') from exc
            self._pull = socket
        return self._pull

    def _receive(self, socket: zmq.Socket, max_count: int, wait: float) -> None:
        """Move what the socket has (waiting up to ``wait`` s for the first) into ready or delayed."""
        if wait > 0 and not socket.poll(int(wait * 1000)):
            return
        now = time.time()
        for _ in range(max_count):
            try:
                due, body = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if due and float(due) > now:
                heapq.heappush(self._delayed, (float(due), next(self._numbers), body))
            else:
                self._ready.append(body)

    def _release_due(self) -> None:
        now = time.time()
        while self._delayed and self._delayed[0][0] <= now:
            self._ready.append(heapq.heappop(self._delayed)[2])

    def ack(self, delivery: Delivery) -> None:
        """Nothing to do: the message left ZeroMQ when it was fetched."""

    def requeue(self, delivery: Delivery) -> None:
        self.requeue_many([delivery])

    def requeue_many(self, deliveries: Iterable[Delivery]) -> None:
        bodies = [delivery.body if isinstance(delivery.body, bytes) else delivery.body.encode()
                  for delivery in deliveries]
        self._ready.extendleft(reversed(bodies))

    def count(self) -> int:
        if self._closed.is_set():
            raise BrokerClosedError(f'the ZeroMQ broker of {self.queue_name!r} is closed')
        with self._fetch_lock:
            self._release_due()
            return len(self._ready)

    def purge(self) -> None:
        if self._closed.is_set():
            raise BrokerClosedError(f'the ZeroMQ broker of {self.queue_name!r} is closed')
        with self._fetch_lock:
            if self._pull is not None:
                while self._pull.poll(0):
                    self._pull.recv_multipart()
            self._ready.clear()
            self._delayed.clear()

    def close(self) -> None:
        if self._closed.is_set():
            return
        super().close()
        with self._push_lock:
            if self._push is not None:
                self._push.close()  # lingers LINGER_SECONDS to hand over what it holds
        with self._fetch_lock:
            if self._pull is not None:
                self._pull.close()
            self._ready.clear()
            self._delayed.clear()

    def __getstate__(self) -> Any:
        raise TypeError('a ZeroMQ broker holds sockets and cannot be copied to another process')
