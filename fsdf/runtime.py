"""Process-wide state in one object: brokers, shared clients, result stores, the event loop, running consumers.

A :class:`Runtime` holds what a process shares between its queues: the one broker instance per
(kind, queue), clients and connections shared per backend (a Redis pool per URL, a Kafka producer
per bootstrap list, RabbitMQ publishing sessions per URL, in-process queues...), the shared
asyncio loop and the consumers that a signal must stop. Everything is made on first use.
:meth:`Runtime.close` shuts it all down in order: stop consumers, close brokers, close shared
resources (newest first, so a resource made from another goes before it), stop the loop. A closed
runtime is empty and can be used again: the next call makes things anew.

The decorator API uses :func:`default_runtime`; the module functions that predate this
(``get_broker``, ``redis_client``, ``shared_loop``, ``shutdown.register``...) are thin wrappers
over it. Tests swap in a fresh runtime with :func:`set_default_runtime`.

This module imports no client library: a backend passes ``make`` and ``close`` callables.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Hashable, Optional, Protocol, TypeVar

if TYPE_CHECKING:
    import asyncio

    from fsdf.brokers.base import Broker
    from fsdf.enums import BrokerEnum

T = TypeVar('T')
LOOP_STOP_SECONDS = 5.0  # how long close() waits for the loop thread to finish its current callback


class Stoppable(Protocol):
    """What the runtime needs of a consumer."""

    def stop(self, grace: float | None = None) -> None:
        """Stop gracefully."""


@dataclass(eq=False)
class _Shared:
    """One shared resource, how to close it, and how many holders have not released it (None: not counted)."""

    value: Any
    close: Optional[Callable[[Any], None]]
    holders: Optional[int]


class Runtime:
    """The process-wide state of fsdf; see the module docstring. Every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: making a broker may make a shared resource
        self._brokers: dict[tuple[BrokerEnum, str], Broker] = {}
        self._shared: dict[Hashable, _Shared] = {}  # insertion order = creation order
        self._consumers: set[Stoppable] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None

    # -- brokers -------------------------------------------------------------------------
    def broker(self, kind: BrokerEnum, queue_name: str) -> Broker:
        """The one open broker of this runtime for a queue (publishers and consumers share it)."""
        from fsdf.brokers import broker_class
        from fsdf.enums import BrokerEnum
        key = (BrokerEnum(kind), queue_name)
        with self._lock:
            broker = self._brokers.get(key)
            if broker is None or broker._closed.is_set():
                broker = self._brokers[key] = broker_class(kind)(queue_name)
            return broker

    def brokers(self) -> dict[tuple[BrokerEnum, str], Broker]:
        """A snapshot of the brokers made so far, by (kind, queue)."""
        with self._lock:
            return dict(self._brokers)

    # -- shared resources ----------------------------------------------------------------
    def shared(self, key: Hashable, make: Callable[[], T], close: Optional[Callable[[T], None]] = None) -> T:
        """The resource under ``key``, made by ``make()`` on first use and kept until :meth:`close`."""
        entry = self._shared.get(key)  # a dict read is atomic: no lock on the common path
        if entry is None:
            with self._lock:
                entry = self._shared.get(key)
                if entry is None:
                    entry = self._shared[key] = _Shared(make(), close, None)
        return entry.value

    def acquire(self, key: Hashable, make: Callable[[], T], close: Optional[Callable[[T], None]] = None) -> T:
        """Like :meth:`shared`, but counted: the last :meth:`release` of ``key`` closes and drops it."""
        with self._lock:
            entry = self._shared.get(key)
            if entry is None:
                entry = self._shared[key] = _Shared(make(), close, 0)
            entry.holders = (entry.holders or 0) + 1
            return entry.value

    def release(self, key: Hashable) -> None:
        """One holder of ``key`` lets go; with none left the resource is closed (a missing key is ignored)."""
        with self._lock:
            entry = self._shared.get(key)
            if entry is None or entry.holders is None:
                return
            entry.holders -= 1
            if entry.holders > 0:
                return
            del self._shared[key]
        _close_quietly(entry)

    def close_shared(self, matches: Callable[[Hashable], bool]) -> int:
        """Close and drop the shared resources whose key ``matches`` (their server is going away); how many."""
        with self._lock:
            doomed = [key for key in self._shared if matches(key)]
            entries = [self._shared.pop(key) for key in doomed]
        for entry in entries:
            _close_quietly(entry)
        return len(entries)

    def holds(self, key: Hashable) -> bool:
        """True while a resource is kept under ``key``."""
        return key in self._shared

    # -- the event loop ------------------------------------------------------------------
    def loop(self) -> asyncio.AbstractEventLoop:
        """The runtime's asyncio loop, started on first use in a daemon thread."""
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                import asyncio  # here: only processes that run coroutines pay for importing asyncio
                loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(target=loop.run_forever, name='fsdf-event-loop', daemon=True)
                self._loop_thread.start()
                self._loop = loop
            return self._loop

    # -- consumers -----------------------------------------------------------------------
    def register(self, consumer: Stoppable) -> None:
        """Track a started consumer, so :meth:`stop_consumers` and :meth:`close` stop it."""
        with self._lock:
            self._consumers.add(consumer)

    def unregister(self, consumer: Stoppable) -> None:
        """Forget a stopped consumer."""
        with self._lock:
            self._consumers.discard(consumer)

    def consumers(self) -> list[Stoppable]:
        """The consumers registered and not yet stopped."""
        with self._lock:
            return list(self._consumers)

    def stop_consumers(self, grace: float | None = None, consumers: Optional[list[Stoppable]] = None) -> None:
        """Stop these consumers (default: every registered one) in parallel; returns when all have stopped."""
        threads = [threading.Thread(target=c.stop, args=(grace,), daemon=True)
                   for c in (self.consumers() if consumers is None else consumers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # -- closing -------------------------------------------------------------------------
    def close(self, grace: float | None = None) -> None:
        """Stop consumers, close brokers, close shared resources newest first, stop the loop.

        Afterwards the runtime is empty; using it again makes everything anew.
        """
        self.stop_consumers(grace)
        with self._lock:
            brokers, self._brokers = list(self._brokers.values()), {}
            self._consumers.clear()
        for broker in brokers:
            try:
                broker.close()
            except Exception as exc:  # one broker's server being away must not keep the rest open
                broker.logger.warning('closing the broker of %r failed: %s', broker.queue_name, exc)
        with self._lock:
            shared, self._shared = list(self._shared.values()), {}
        for entry in reversed(shared):
            _close_quietly(entry)
        self._stop_loop()

    def _stop_loop(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._loop_thread = self._loop, self._loop_thread, None, None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(LOOP_STOP_SECONDS)
            if not thread.is_alive():
                loop.close()


def _close_quietly(entry: _Shared) -> None:
    """Close a shared resource; a failure (its server is gone) is no reason to keep the others open."""
    if entry.close is None:
        return
    try:
        entry.close(entry.value)
    except Exception:  # noqa: BLE001 - best effort, like closing a socket to a dead peer
        pass


_default = Runtime()
_default_lock = threading.Lock()


def default_runtime() -> Runtime:
    """The runtime the decorator API and the module-level helpers use."""
    return _default


def set_default_runtime(runtime: Runtime) -> Runtime:
    """Make ``runtime`` the default (tests use a fresh one each); returns the one it replaces, unclosed."""
    global _default
    with _default_lock:
        previous, _default = _default, runtime
    return previous
