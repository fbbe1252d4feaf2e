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
    raise NotImplementedError(f'concurrent_mode {ConcurrentModeEnum(mode).name} is not built in fsdf yet; '
                              f'use THREADING or SINGLE_THREAD')


__all__ = ['InlinePool', 'ShrinkableThreadPool', 'WorkerPool', 'make_pool']
