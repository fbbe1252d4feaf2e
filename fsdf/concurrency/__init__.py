"""Pools that run calls: one module per concurrency mode behind ``WorkerPool``."""
from __future__ import annotations

from fsdf.concurrency.base import WorkerPool
from fsdf.concurrency.single_thread import InlinePool
from fsdf.concurrency.thread_pool import ShrinkableThreadPool
from fsdf.enums import ConcurrentModeEnum


def make_pool(mode: ConcurrentModeEnum, concurrent_num: int, name: str) -> WorkerPool:
    """A new pool for a concurrency mode, or a clear error for modes not built yet."""
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
        try:
            return GeventPool(concurrent_num) if library == 'gevent' else EventletPool(concurrent_num)
        except ImportError as exc:
            raise NotImplementedError(f'concurrent_mode {library.upper()} needs {library}: '
                                      f'pip install "fsdf[{library}]"') from exc
    raise ValueError(f'unknown concurrent_mode {mode!r}')


__all__ = ['InlinePool', 'ShrinkableThreadPool', 'WorkerPool', 'make_pool']
