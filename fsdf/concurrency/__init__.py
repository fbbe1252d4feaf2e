"""Pools that run calls: one module per concurrency mode behind ``WorkerPool``."""
from __future__ import annotations

from fsdf._optional import import_optional
from fsdf.concurrency.base import WorkerPool
from fsdf.concurrency.single_thread import InlinePool
from fsdf.concurrency.thread_pool import ShrinkableThreadPool
from fsdf.enums import ConcurrentModeEnum


def make_pool(mode: ConcurrentModeEnum, concurrent_num: int, name: str) -> WorkerPool:
    """A new pool for a concurrency mode; MissingDependencyError if its green library is not installed."""
    if mode == ConcurrentModeEnum.THREADING:
        return ShrinkableThreadPool(concurrent_num, name=name)
    if mode == ConcurrentModeEnum.SINGLE_THREAD:
        return InlinePool()
    if mode == ConcurrentModeEnum.ASYNC:
        from fsdf.concurrency.async_pool import AsyncPool
        return AsyncPool(concurrent_num)
    if mode in (ConcurrentModeEnum.GEVENT, ConcurrentModeEnum.EVENTLET):
        from fsdf.concurrency.green_pool import EventletPool, GeventPool
        library = ConcurrentModeEnum(mode).name.lower()
        import_optional(library, library, f'concurrent_mode {library.upper()} runs calls on {library}')
        return GeventPool(concurrent_num) if library == 'gevent' else EventletPool(concurrent_num)
    raise ValueError(f'unknown concurrent_mode {mode!r}')


__all__ = ['InlinePool', 'ShrinkableThreadPool', 'WorkerPool', 'make_pool']
