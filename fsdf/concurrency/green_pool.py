"""GEVENT and EVENTLET: greenlets bounded by ``concurrent_num``, in a process the user has monkey-patched.

As with the seed framework, the user patches at the very top of the script
(``from gevent import monkey; monkey.patch_all()`` or ``eventlet.monkey_patch()``). Without the
patch, blocking calls would block every greenlet at once, so fsdf refuses to start instead.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from fsdf.concurrency.base import WorkerPool

logger = logging.getLogger('fsdf.pool')


class GeventPool(WorkerPool):
    """Runs each call in a greenlet of a ``gevent.pool.Pool`` of ``max_workers``."""

    def __init__(self, max_workers: int) -> None:
        from gevent import monkey, pool
        if not monkey.is_module_patched('socket') or not monkey.is_module_patched('threading'):
            raise RuntimeError('concurrent_mode GEVENT needs gevent\'s monkey patch: put '
                               '"from gevent import monkey; monkey.patch_all()" at the very top of your main script')
        self.max_workers = max_workers
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
        self._pool = eventlet.GreenPool(max_workers)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._pool.spawn_n(_logged, fn, args)


def _logged(fn: Callable[..., Any], args: tuple) -> None:
    try:
        fn(*args)
    except BaseException:  # fn handles its own errors; this keeps a stray one from killing the hub
        logger.exception('uncaught error in pool call %r', fn)
