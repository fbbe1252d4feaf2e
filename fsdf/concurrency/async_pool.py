"""ASYNC: ``async def`` calls as tasks on one shared event loop, bounded with high and low water marks.

The consumer stops fetching when ``max_workers`` calls are in flight (the high mark) and starts
again only when they have fallen to ``resume_at`` (the low mark), so the loop is never flooded
with tasks and fetches come in batches rather than one by one.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine

from fsdf.concurrency.base import WorkerPool
from fsdf.concurrency.event_loop import shared_loop

LOW_WATER_FRACTION = 0.8


class AsyncPool(WorkerPool):
    """Runs submitted coroutine functions as tasks on the shared loop."""

    runs_coroutines = True

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self.loop = shared_loop()
        self._tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones

    @property
    def resume_at(self) -> int:
        return int(self.max_workers * LOW_WATER_FRACTION)

    def submit(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        self.loop.call_soon_threadsafe(self._start, fn, args)

    def _start(self, fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple) -> None:
        task = self.loop.create_task(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
