"""``function_timeout``: stop a call that runs too long, the way its pool can.

Each pool kind has a :class:`TimeoutStrategy` (a pool may set ``timeout_strategy``; threads and
the single-thread pool use :class:`ThreadTimeout`). The green pools bring their own
(``gevent.Timeout``/``eventlet.Timeout`` in the greenlet); ASYNC cancels the coroutine with
``asyncio.wait_for``.

:class:`ThreadTimeout` raises an exception inside the running thread with CPython's
``PyThreadState_SetAsyncExc``, sent by one watchdog thread for every call (no thread per call).
The call unwinds like any exception (``finally`` and ``with`` blocks run) and the pool thread
goes on to its next call, so no runaway thread is left behind. The limit, honestly: the
exception is raised only when the thread runs Python bytecode. A call blocked in C code
(``time.sleep``, a socket read without timeout, a long C computation) is stopped only when that
C call returns; it still counts as timed out then. The interrupt derives from BaseException so
a task's ``except Exception`` does not swallow it.
"""
from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import threading
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional, TypeVar

if TYPE_CHECKING:
    from fsdf.concurrency.base import WorkerPool

T = TypeVar('T')

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_NOT_RETURNED: Any = object()


class FunctionTimeoutError(Exception):
    """A call ran longer than its ``function_timeout`` and was stopped (it counts as a failure)."""


class _Interrupt(BaseException):
    """Raised asynchronously inside a call that ran out of time; turned into FunctionTimeoutError."""


class TimeoutStrategy(ABC):
    """How one kind of pool stops a call that runs past its timeout."""

    @abstractmethod
    def run(self, timeout: float, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, stopped with FunctionTimeoutError after ``timeout`` seconds."""


class _Watch:
    """One armed call: the thread running it and when it runs out of time."""

    __slots__ = ('thread_id', 'deadline', 'done', 'fired')

    def __init__(self, thread_id: int, deadline: float) -> None:
        self.thread_id = thread_id
        self.deadline = deadline
        self.done = False
        self.fired = False


class _Watchdog:
    """One daemon thread that interrupts every call whose deadline passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._finished_in_heap = 0
        self._thread: Optional[threading.Thread] = None

    def arm(self, timeout: float) -> _Watch:
        watch = _Watch(threading.get_ident(), time.monotonic() + timeout)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name='fsdf-timeout-watchdog', daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
            if self._heap[0][2] is watch:
                self._wake.notify()
        return watch

    def disarm(self, watch: _Watch) -> None:
        """The call is over: never interrupt it, and drop an interrupt sent but not raised yet."""
        with self._lock:
            if watch.done:
                return
            if not watch.fired:  # still in the heap: counted, so the heap is compacted now and then
                self._finished_in_heap += 1
            watch.done = True
            if watch.fired:
                _set_async_exc(ctypes.c_ulong(watch.thread_id), None)
            if self._finished_in_heap > 1000 and self._finished_in_heap * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._finished_in_heap = 0

    def _loop(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                heap = self._heap
                while heap and (heap[0][2].done or heap[0][0] <= now):
                    watch = heapq.heappop(heap)[2]
                    if watch.done:
                        self._finished_in_heap -= 1
                    else:
                        watch.fired = True
                        _set_async_exc(ctypes.c_ulong(watch.thread_id), ctypes.py_object(_Interrupt))
                self._wake.wait(heap[0][0] - now if heap else None)


class ThreadTimeout(TimeoutStrategy):
    """Stops a call in an OS thread by raising an exception inside it (see the module's notes)."""

    def __init__(self) -> None:
        self._watchdog = _Watchdog()

    def run(self, timeout: float, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        watchdog = self._watchdog
        watch = watchdog.arm(timeout)
        result: Any = _NOT_RETURNED
        try:
            try:
                result = fn(*args, **kwargs)
            finally:
                watchdog.disarm(watch)  # drops an interrupt that came too late to stop the call
        except _Interrupt:
            watchdog.disarm(watch)  # again: the interrupt may have come inside the first disarm
            if result is _NOT_RETURNED:
                raise timed_out(fn, timeout) from None
        return result  # a call that returned is a success, even if it returned just past its deadline


THREAD_TIMEOUT = ThreadTimeout()


def timeout_strategy_for(pool: WorkerPool) -> TimeoutStrategy:
    """The way a pool stops calls that run too long: its ``timeout_strategy``, else the thread one."""
    return pool.timeout_strategy or THREAD_TIMEOUT


def timed_out(fn: Callable[..., Any], timeout: float) -> FunctionTimeoutError:
    """The error a strategy raises for a call of ``fn`` stopped after ``timeout`` seconds."""
    name = getattr(fn, '__qualname__', repr(fn))
    return FunctionTimeoutError(f'{name} ran longer than function_timeout={timeout} s and was stopped')


async def cancel_after(call: Awaitable[T], timeout: Optional[float], fn: Callable[..., Any]) -> T:
    """Await ``call`` (a run of ``fn``), cancelled with FunctionTimeoutError after ``timeout`` s (None: no limit)."""
    if not timeout:
        return await call
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await call
    except TimeoutError:
        if scope.expired():  # ours, not a TimeoutError the task raised itself
            raise timed_out(fn, timeout) from None
        raise
