"""The NATS broker's clients: one shared per URL on a loop thread; own ones for threads that publish often.

nats-py is asyncio-only. :class:`Connection` runs one client on an event loop of its own in a daemon
thread (per URL, kept in the runtime); sync callers hand it coroutines. :class:`ThreadConnections` gives
a thread that publishes again within ``OWN_IDLE_SECONDS`` its own client, on a loop the thread runs itself
for each call (:class:`OwnConnection`), which spares a push the hop to the loop thread and back (~70 µs of
CPU, docs/benchmarks.md). The broker (fsdf/brokers/nats_jetstream.py) decides which one a call uses.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, Awaitable, Callable, Coroutine, Optional, TypeVar

import nats
import nats.errors

from fsdf.runtime import default_runtime

T = TypeVar('T')
REQUEST_SECONDS = 10.0  # a publish, count or purge whose answer takes longer raises nats' TimeoutError
# A thread's own client unused this long is closed at its next use or by another thread's sweep: its loop
# does not run between calls, so it answers no server PING meanwhile (nats-server's default: one every
# 2 minutes, the connection dropped after 2 unanswered), and a thread that publishes rarely needs none.
OWN_IDLE_SECONDS = 30.0
MAX_OWN_CONNECTIONS = 16  # per URL; further threads publish through the shared client
OWN_CLOSE_SECONDS = 2.0  # the longest closing one thread's client may take (its server may be gone)


class Connection:
    """One nats-py client with its own event loop in a daemon thread; sync callers run coroutines on it."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name='fsdf-nats', daemon=True)
        self.thread.start()
        try:
            self.client = self.run(connect(url, reconnect=True))
        except BaseException:
            self._stop_loop()
            raise
        self.js = self.client.jetstream(timeout=REQUEST_SECONDS)

    @classmethod
    def of(cls, url: str) -> 'Connection':
        """The process's one connection to ``url``, kept in the runtime and closed with it."""
        return default_runtime().shared(('nats', url), lambda: cls(url), cls.close)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the connection's loop and return its result (from any other thread)."""
        if threading.current_thread() is self.thread:
            coroutine.close()
            raise RuntimeError('a blocking NATS call from the NATS loop itself would never return')
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        """Flush and close the client, then stop the loop."""
        try:
            self.run(self.client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


def connect(url: str, reconnect: bool, closed_cb: Callable[[], Awaitable[None]] | None = None,
             ) -> Coroutine[Any, Any, nats.NATS]:
    """nats-py's connect with fsdf's options; ``reconnect`` False: a lost connection closes the client."""
    return nats.connect(url, allow_reconnect=reconnect, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                        connect_timeout=5, error_cb=_quiet, disconnected_cb=_nothing, reconnected_cb=_nothing,
                        closed_cb=closed_cb or _nothing)


class OwnConnection:
    """One thread's nats-py client, on a loop that thread runs itself for each call (nothing runs between
    calls). ``lock`` is held while the loop runs, so another thread closes it only between calls."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        self.thread = threading.current_thread()
        self.last_used = time.monotonic()
        self.closed = False
        self.call: Optional[asyncio.Task[Any]] = None  # the call the loop runs now
        try:
            self.client = self.loop.run_until_complete(connect(url, reconnect=False, closed_cb=self._lost))
        except BaseException:
            self.loop.close()
            raise
        self.js = self.client.jetstream(timeout=REQUEST_SECONDS)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on this thread's loop (the caller holds ``lock``); a connection lost meanwhile
        raises ConnectionClosedError at once (nats-py would leave the call waiting for its timeout)."""
        call = self.call = self.loop.create_task(coroutine)
        try:
            return self.loop.run_until_complete(call)
        except asyncio.CancelledError:
            if self.client.is_closed:
                raise nats.errors.ConnectionClosedError from None
            raise
        finally:
            self.call = None

    async def _lost(self) -> None:
        """nats-py's closed callback: end the call waiting on the connection."""
        if self.call is not None:
            self.call.cancel()

    def idle(self, now: float) -> bool:
        return now - self.last_used >= OWN_IDLE_SECONDS

    def close(self, wait: float = REQUEST_SECONDS) -> bool:
        """Close the client and its loop unless a call holds it past ``wait`` seconds; whether it is closed."""
        if not self.lock.acquire(timeout=wait):
            return False
        try:
            self.shut()
            return True
        finally:
            self.lock.release()

    def shut(self) -> None:
        """Close the client and its loop (the caller holds ``lock``); a second call does nothing."""
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.run_until_complete(asyncio.wait_for(self.client.close(), OWN_CLOSE_SECONDS))
        except Exception:  # noqa: BLE001 - its connection is broken already: the socket closes with the loop
            pass
        finally:
            self.loop.close()


class ThreadConnections:
    """The own clients of the threads that publish often to one URL; see the module docstring.

    A thread gets one at a publish that comes within ``OWN_IDLE_SECONDS`` of its previous one (a thread
    that publishes once never opens one), unless ``MAX_OWN_CONNECTIONS`` are open. One unused for
    ``OWN_IDLE_SECONDS`` is closed: by its thread at its next publish, or when another thread opens one;
    a dead thread's at the next opening; all of them when the runtime closes.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = threading.local()  # .own: this thread's OwnConnection; .last: its last publish (monotonic)
        self.lock = threading.Lock()
        self.open: list[OwnConnection] = []
        self.closed = False
        self.pid = os.getpid()  # a forked child shares these sockets with its parent: it must not touch them

    @classmethod
    def of(cls, url: str) -> 'ThreadConnections':
        """The process's registry for ``url``, kept in the runtime (under a ``'nats'`` key) and closed with it."""
        return default_runtime().shared(('nats', url, 'threads'), lambda: cls(url), cls.close)

    def publish(self, subject: str, payload: bytes) -> bool:
        """Publish through this thread's own client and wait for the stream's ack; False: this thread has
        none (then nothing was sent). Any error drops the client (the next publish opens another)."""
        own = self._own()
        if own is None:
            return False
        with own.lock:
            if own.closed:  # swept between _own and here
                return False
            own.last_used = time.monotonic()
            try:
                own.run(own.js.publish(subject, payload))
            except BaseException:
                self._drop(own)
                raise
        return True

    def _own(self) -> Optional[OwnConnection]:
        """This thread's client, opened if it publishes often enough; None: use the shared client."""
        if self.pid != os.getpid():
            return None  # a forked child
        local, now = self.local, time.monotonic()
        own: Optional[OwnConnection] = getattr(local, 'own', None)
        if own is not None and not own.closed and not own.idle(now):
            return own
        last, local.last = getattr(local, 'last', None), now
        if own is not None:  # idle or swept: the server may have dropped it
            local.own = None
            self._forget(own)
            own.close()
            return None
        if last is None or now - last >= OWN_IDLE_SECONDS or asyncio._get_running_loop() is not None:
            return None  # a first or rare publish, or one from an event loop's thread (its loop would clash)
        local.own = self._open(now)
        return local.own

    def _open(self, now: float) -> Optional[OwnConnection]:
        """A new client for this thread, after closing the dead threads' and the idle ones; None at the cap."""
        with self.lock:
            stale = [own for own in self.open if not own.thread.is_alive() or own.idle(now)]
            if self.closed or len(self.open) - len(stale) >= MAX_OWN_CONNECTIONS:
                return None
            own = OwnConnection(self.url)
            self.open = [each for each in self.open if each not in stale] + [own]
        for each in stale:
            each.close(wait=0)  # one in use right now stays open: its thread closes it once idle
        return own

    def _drop(self, own: OwnConnection) -> None:
        """Forget and close this thread's client (the caller holds ``own.lock``)."""
        self.local.own = None
        self._forget(own)
        own.shut()

    def _forget(self, own: OwnConnection) -> None:
        with self.lock:
            if own in self.open:
                self.open.remove(own)

    def close(self) -> None:
        """Close every thread's client (one in a call is waited for, up to ``REQUEST_SECONDS``)."""
        with self.lock:
            self.closed, doomed, self.open = True, self.open, []
        if self.pid != os.getpid():
            return  # a forked child: closing would write to its parent's connections
        for own in doomed:
            own.close()


async def _quiet(exc: Exception) -> None:
    """nats-py reports connection errors here while it reconnects; the calls that fail raise them."""


async def _nothing() -> None:
    """A callback that does nothing (nats-py logs the events itself otherwise)."""
