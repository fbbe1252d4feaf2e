"""``function_timeout``: stop a call that runs too long, the way its pool can.

Each pool kind has a :class:`TimeoutStrategy` (a pool may set ``timeout_strategy``; threads, the
single-thread pool and a plain ``def`` under ASYNC use :class:`ThreadTimeout`). The green pools
bring their own (``gevent.Timeout``/``eventlet.Timeout`` in the greenlet); ASYNC cancels the
coroutine with ``asyncio.wait_for``. Those are cooperative and unchanged here.

:class:`ThreadTimeout` runs a call that has a timeout in a *call thread* (kept and reused while
calls end in time) and waits for it in the worker, so the worker, not the call, owns the message:

- at the deadline it raises an exception inside the call thread with CPython's
  ``PyThreadState_SetAsyncExc``; a call running Python code unwinds (``finally`` and ``with``
  blocks run) within STOP_GRACE_SECONDS and counts as timed out;
- a call still running then is blocked in C (``time.sleep``, a socket read without timeout, a
  long C computation) and cannot be stopped: its thread is *abandoned*. The worker raises
  FunctionTimeoutError at once, so the message is settled by the usual retry rules (retry or
  dead-letter) and the worker takes its next message. The abandoned thread ends when its C call
  returns; its late result or error is ignored and logged, never settled twice.
- abandoned threads still running are counted (:func:`abandoned_threads`); at
  ``settings.FUNCTION_TIMEOUT_MAX_ABANDONED`` no more are abandoned: a worker whose call times out
  then waits for it to return (the old behaviour, its slot held) and a warning says why, so a
  function that hangs in C on every call cannot fill the process with threads.

Calls without a timeout never come here and run in the worker itself. The price of a timeout is
a hand-over to the call thread and back, about 10 us per call, the cost of a bare two-thread lock
ping-pong in CPython (measured on 2 cores: trivial calls with a timeout ran at 13,000-19,000/s
against 35,000/s when the worker ran them under a watchdog); about 1% of a 1 ms call.

The interrupt derives from BaseException so a task's ``except Exception`` does not swallow it. The
call thread runs the call in a copy of the worker's context (``contextvars``), so the running task's
ids reach what it publishes; thread-local state of the worker is not visible to it.
"""
from __future__ import annotations

import contextvars
import functools
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional, TypeVar

from fsdf.config import settings
from fsdf.log import EveryNSeconds

if TYPE_CHECKING:
    from fsdf.concurrency.base import WorkerPool

T = TypeVar('T')

logger = logging.getLogger('fsdf.timeout')


def _set_async_exc(thread_id: int, exc_type: Optional[type[BaseException]]) -> None:
    """Raise ``exc_type`` in thread ``thread_id`` at its next bytecode (None: withdraw one not yet raised)."""
    import ctypes  # here: only a call that times out needs it, and importing it slows every worker's start
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               None if exc_type is None else ctypes.py_object(exc_type))


_NOT_RETURNED: Any = object()
# After its deadline, a call running Python code unwinds within a few switch intervals (5 ms each);
# one still running after this is blocked in C (or starved of the CPU on a loaded machine) and is abandoned.
STOP_GRACE_SECONDS = 0.2
CALL_THREAD_KEEP_ALIVE_SECONDS = 30.0
CAP_WARNING_EVERY_SECONDS = 60.0


class FunctionTimeoutError(Exception):
    """A call ran longer than its ``function_timeout`` and was stopped or abandoned (it counts as a failure)."""


class _Interrupt(BaseException):
    """Raised asynchronously inside a call that ran out of time; turned into FunctionTimeoutError."""


class TimeoutStrategy(ABC):
    """How one kind of pool stops a call that runs past its timeout."""

    @abstractmethod
    def run(self, timeout: float, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, stopped with FunctionTimeoutError after ``timeout`` seconds."""


class _TimedCall:
    """One call with a timeout, shared by the worker that waits for it and the call thread that runs it.

    ``lock`` orders the two sides at the deadline: the worker interrupts or abandons only a call not
    finished yet, and the call thread, once it marks the call finished, knows whether an interrupt was
    sent to it (and drops one not raised yet), so an interrupt never outlives its call.
    """

    __slots__ = ('fn', 'args', 'context', 'result', 'error', 'lock', 'done', 'thread_id', 'started',
                 'finished', 'interrupted', 'abandoned')

    def __init__(self, fn: Callable[..., Any], args: tuple) -> None:
        self.fn, self.args = fn, args
        self.context = contextvars.copy_context()  # the running task's ids reach what the call publishes
        self.result: Any = _NOT_RETURNED
        self.error: Optional[BaseException] = None
        self.lock = threading.Lock()
        self.done = threading.Lock()  # held until the call thread has finished the call
        self.done.acquire()
        self.thread_id = 0  # 0: no call thread has taken it yet
        self.started = 0.0  # time.monotonic() when a call thread took it; the deadline counts from here
        self.finished = self.interrupted = self.abandoned = False

    def execute(self) -> None:
        """Run the call in the current (call) thread; no interrupt meant for it is left once this returns."""
        try:
            with self.lock:
                self.thread_id = threading.get_ident()
                self.started = time.monotonic()
                skip = self.interrupted  # timed out before a thread took it: never run it
            if skip:
                self.error = _Interrupt()
            else:
                try:
                    self.result = self.context.run(self.fn, *self.args)
                except _Interrupt:
                    raise
                except BaseException as exc:
                    self.error = exc
            if self._mark_finished():  # sent as the call ended: drop it if not raised yet
                _set_async_exc(self.thread_id, None)
        except _Interrupt as exc:  # the one interrupt sent for this call: none can follow
            if self.result is _NOT_RETURNED and self.error is None:
                self.error = exc
            self._mark_finished()
        self.done.release()

    def _mark_finished(self) -> bool:
        with self.lock:
            self.finished = True
            return self.interrupted

    def interrupt(self) -> None:
        """At the deadline (worker side): raise _Interrupt in the call unless it has finished."""
        with self.lock:
            if not self.finished:
                self.interrupted = True
                if self.thread_id:
                    _set_async_exc(self.thread_id, _Interrupt)

    def outcome(self, timeout: float) -> Any:
        """The call's return value, its exception, or FunctionTimeoutError if the interrupt stopped it."""
        if self.result is not _NOT_RETURNED:
            return self.result  # a call that returned is a success, even just past its deadline
        if isinstance(self.error, _Interrupt):
            raise timed_out(self.fn, timeout) from None
        raise self.error  # type: ignore[misc]  # finished without a result: it raised


class _CallThreads:
    """Threads that run calls with a timeout: started when none is idle, reused while calls end, and
    gone after ``keep_alive`` s idle. A worker waits for at most one call, so the live threads are the
    running workers' calls plus the abandoned ones (capped by ThreadTimeout)."""

    def __init__(self, on_abandoned_end: Callable[[_TimedCall], None], keep_alive: float) -> None:
        self._calls: queue.SimpleQueue[_TimedCall] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # idle threads, each a permit: a start that takes one knows a thread will run its call
        self._started = 0
        self._on_abandoned_end = on_abandoned_end
        self.keep_alive = keep_alive

    def start(self, call: _TimedCall) -> None:
        self._calls.put(call)
        with self._lock:
            if self._idle:
                self._idle -= 1
                return
            self._started += 1
            number = self._started
        # A daemon: an abandoned call blocked in C must not keep the process from exiting.
        threading.Thread(target=self._serve, name=f'fsdf-call-{number}', daemon=True).start()

    def _serve(self) -> None:
        get = self._calls.get
        while True:
            try:
                call = get(timeout=self.keep_alive)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # none taken by a start: this thread is not needed
                        self._idle -= 1
                        return
                continue
            call.execute()
            if call.abandoned:  # stable once finished: the worker abandons only unfinished calls
                self._on_abandoned_end(call)
            with self._lock:
                self._idle += 1


class ThreadTimeout(TimeoutStrategy):
    """Runs a call in a call thread and waits for it; interrupts it at the deadline, abandons it if it
    stays blocked in C (see the module's notes)."""

    def __init__(self, keep_alive: float = CALL_THREAD_KEEP_ALIVE_SECONDS) -> None:
        self._threads = _CallThreads(self._abandoned_call_ended, keep_alive)
        self._count_lock = threading.Lock()
        self.abandoned = 0
        """Abandoned call threads still blocked in their call."""
        self.abandoned_total = 0
        """Calls abandoned since this strategy was made."""
        self._cap_warnings = EveryNSeconds(CAP_WARNING_EVERY_SECONDS)

    def run(self, timeout: float, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        call = _TimedCall(functools.partial(fn, **kwargs) if kwargs else fn, args)
        self._threads.start(call)
        if not self._ended_in_time(call, timeout):
            call.interrupt()
            if not call.done.acquire(timeout=STOP_GRACE_SECONDS) and self._abandon(call, timeout):
                raise timed_out(fn, timeout, 'abandoned (blocked in C code)')
        return call.outcome(timeout)

    @staticmethod
    def _ended_in_time(call: _TimedCall, timeout: float) -> bool:
        """Wait for the call to end, at most ``timeout`` s from when its thread started it."""
        wait = min(timeout, threading.TIMEOUT_MAX)
        while not call.done.acquire(timeout=wait):
            started = call.started  # 0.0: not taken yet (a thread still starting); wait on
            wait = min(started + timeout - time.monotonic() if started else timeout, threading.TIMEOUT_MAX)
            if wait <= 0:
                return False
        return True

    def _abandon(self, call: _TimedCall, timeout: float) -> bool:
        """Leave a call blocked in C to its thread; False (after waiting for it) if it finished or at the cap."""
        with call.lock:
            if not call.finished:
                call.abandoned = self._count_abandoned(call, timeout)
        if not call.abandoned:
            call.done.acquire()  # finished a moment ago, or at the cap: this worker waits for it
            return False
        logger.warning('call of %s blocked past function_timeout=%s s (in C code: a sleep, a socket read without a '
                       'timeout ...): its thread is abandoned, the message settled as timed out; %d abandoned '
                       'threads still blocked', _name(call.fn), timeout, self.abandoned)
        return True

    def _count_abandoned(self, call: _TimedCall, timeout: float) -> bool:
        cap = settings.FUNCTION_TIMEOUT_MAX_ABANDONED
        with self._count_lock:
            if self.abandoned < cap:
                self.abandoned += 1
                self.abandoned_total += 1
                return True
        if self._cap_warnings.ready(time.monotonic()):
            logger.warning('%d calls past function_timeout are abandoned and still blocked in C code '
                           '(FUNCTION_TIMEOUT_MAX_ABANDONED=%d): the worker running %s now waits for its call to '
                           'return, holding its slot. The function blocks without a timeout of its own; give its '
                           'socket or HTTP calls one.', cap, cap, _name(call.fn))
        return False

    def _abandoned_call_ended(self, call: _TimedCall) -> None:
        with self._count_lock:
            self.abandoned -= 1
        what = 'result' if call.result is not _NOT_RETURNED else f'error {type(call.error).__name__}'
        logger.info('abandoned call of %s ended after %.1f s; its %s is ignored', _name(call.fn),
                    time.monotonic() - call.started, what)


THREAD_TIMEOUT = ThreadTimeout()


def abandoned_threads() -> int:
    """Threads abandoned past ``function_timeout`` by fsdf's thread strategy and still blocked in their call."""
    return THREAD_TIMEOUT.abandoned


def timeout_strategy_for(pool: WorkerPool) -> TimeoutStrategy:
    """The way a pool stops calls that run too long: its ``timeout_strategy``, else the thread one."""
    return pool.timeout_strategy or THREAD_TIMEOUT


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, '__qualname__', None) or repr(fn)


def timed_out(fn: Callable[..., Any], timeout: float, how: str = 'stopped') -> FunctionTimeoutError:
    """The error a strategy raises for a call of ``fn`` stopped (or abandoned) after ``timeout`` seconds."""
    return FunctionTimeoutError(f'{_name(fn)} ran longer than function_timeout={timeout} s and was {how}')


async def cancel_after(call: Awaitable[T], timeout: Optional[float], fn: Callable[..., Any]) -> T:
    """Await ``call`` (a run of ``fn``), cancelled with FunctionTimeoutError after ``timeout`` s (None: no limit)."""
    if not timeout:
        return await call
    import asyncio  # already loaded when a coroutine runs; not at the top, so workers without one skip it
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await call
    except TimeoutError:
        if scope.expired():  # ours, not a TimeoutError the task raised itself
            raise timed_out(fn, timeout) from None
        raise
