"""GEVENT and EVENTLET: greenlets bounded by ``concurrent_num``, in a process the user has monkey-patched.

As with the seed framework, the user patches at the very top of the script
(``from gevent import monkey; monkey.patch_all()`` or ``eventlet.monkey_patch()``). Without the
patch, blocking calls would block every greenlet at once, so fsdf refuses to start instead.
``function_timeout`` is the library's own ``Timeout``, raised inside the greenlet that runs too long.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Optional, TypeVar

from fsdf.concurrency.base import WorkerPool
from fsdf.concurrency.timeout import TimeoutStrategy, timed_out

logger = logging.getLogger('fsdf.pool')
T = TypeVar('T')


class GreenTimeout(TimeoutStrategy):
    """Stops a call in a greenlet with its library's ``Timeout`` (any blocking point can be interrupted)."""

    def __init__(self, timeout_class: type[BaseException]) -> None:
        self._timeout_class: type[Any] = timeout_class  # gevent.Timeout or eventlet.Timeout: context managers

    def run(self, timeout: float, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        # gevent.Timeout and eventlet.Timeout derive from BaseException: a task's `except Exception` keeps out.
        with self._timeout_class(timeout) as timer:
            try:
                return fn(*args, **kwargs)
            except self._timeout_class as exc:
                if exc is not timer:  # a Timeout of the task's own
                    raise
                raise timed_out(fn, timeout) from None


class GeventPool(WorkerPool):
    """Runs each call in a greenlet of a ``gevent.pool.Pool`` of ``max_workers``."""

    def __init__(self, max_workers: int) -> None:
        import gevent
        from gevent import monkey, pool
        if not monkey.is_module_patched('socket') or not monkey.is_module_patched('threading'):
            raise RuntimeError('concurrent_mode GEVENT needs gevent\'s monkey patch: put '
                               '"from gevent import monkey; monkey.patch_all()" at the very top of your main script')
        self.max_workers = max_workers
        self.timeout_strategy = GreenTimeout(gevent.Timeout)
        self._pool = pool.Pool(max_workers)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._pool.spawn(_logged, fn, args)


class EventletPool(WorkerPool):
    """Runs each call in a green thread of an ``eventlet.GreenPool`` of ``max_workers``."""

    def __init__(self, max_workers: int) -> None:
        import eventlet
        from eventlet import patcher
        if not patcher.is_monkey_patched('socket') or not patcher.is_monkey_patched('thread'):
            raise RuntimeError('concurrent_mode EVENTLET needs eventlet\'s monkey patch: put '
                               '"import eventlet; eventlet.monkey_patch()" at the very top of your main script')
        self.max_workers = max_workers
        self.timeout_strategy = GreenTimeout(eventlet.Timeout)
        self._pool = eventlet.GreenPool(max_workers)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._pool.spawn_n(_logged, fn, args)


def green_spawn() -> Optional[Callable[..., Any]]:
    """``spawn`` of the green library this process is monkey-patched with; None in a plain process."""
    gevent_monkey = sys.modules.get('gevent.monkey')
    if gevent_monkey is not None and gevent_monkey.is_module_patched('threading'):
        import gevent
        return gevent.spawn
    eventlet_patcher = sys.modules.get('eventlet.patcher')
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched('thread'):
        import eventlet
        return eventlet.spawn
    return None


def _logged(fn: Callable[..., Any], args: tuple) -> None:
    try:
        fn(*args)
    except BaseException:  # fn handles its own errors; this keeps a stray one from killing the hub
        logger.exception('uncaught error in pool call %r', fn)
