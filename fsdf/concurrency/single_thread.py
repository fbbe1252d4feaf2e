"""SINGLE_THREAD: each call runs in the consumer's fetch thread, one at a time."""
from __future__ import annotations

from typing import Any, Callable

from fsdf.concurrency.base import WorkerPool


class InlinePool(WorkerPool):
    """Runs each call at once in the submitting thread."""

    max_workers = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)
