"""ASYNC: ``async def`` calls as tasks on one shared event loop, bounded with high and low water marks.

The consumer stops fetching when ``max_workers`` calls are in flight (the high mark) and starts
again only when they have fallen to ``resume_at`` (the low mark), so the loop is never flooded
with tasks and fetches come in batches rather than one by one. A plain ``def`` under ASYNC runs
in the pool's own thread executor of ``max_workers`` threads (asyncio's default executor has
only a handful), so it is bounded by ``concurrent_num`` like everything else; those are fsdf's
threads (``OwnThreadExecutor``), so they keep running calls after the main thread has ended.
"""
from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Callable, Coroutine, Optional, TypeVar

from fsdf.concurrency.base import WorkerPool
from fsdf.concurrency.event_loop import shared_loop
from fsdf.concurrency.executor import OwnThreadExecutor

LOW_WATER_FRACTION = 0.8
T = TypeVar('T')


class AsyncPool(WorkerPool):
    """Runs submitted coroutine functions as tasks on the shared loop."""

    runs_coroutines = True

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self.loop = shared_loop()
        self._tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones
        self._executor: Optional[OwnThreadExecutor] = None

    @property
    def resume_at(self) -> int:
        return int(self.max_workers * LOW_WATER_FRACTION)

    def submit(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        self.loop.call_soon_threadsafe(self._start, fn, args)

    def submit_many(self, fn: Callable[[Any], Coroutine[Any, Any, Any]], items: list[Any]) -> None:
        # One wake-up of the loop for a fetched batch: each call_soon_threadsafe writes to the loop's
        # self-pipe and hands the GIL over, which under load was most of the fetch thread's time.
        self.loop.call_soon_threadsafe(self._start_many, fn, items)

    def _start(self, fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple) -> None:
        task = self.loop.create_task(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_many(self, fn: Callable[[Any], Coroutine[Any, Any, Any]], items: list[Any]) -> None:
        for item in items:
            self._start(fn, (item,))

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Await a blocking ``fn(*args)`` run in the pool's threads, in the caller's context."""
        if self._executor is None:  # only created on the loop's thread, so no lock
            # fsdf's own threads: concurrent.futures' pool refuses work once the main thread has ended.
            self._executor = OwnThreadExecutor(self.max_workers, name='fsdf-async-sync')
        context = contextvars.copy_context()
        return await self.loop.run_in_executor(self._executor, context.run, fn, *args)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
