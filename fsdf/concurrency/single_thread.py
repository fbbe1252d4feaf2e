"""SINGLE_THREAD: each call runs in the consumer's fetch thread, one at a time."""
from __future__ import annotations

from typing import Any, Callable

from fsdf.concurrency.base import WorkerPool


class InlinePool(WorkerPool):
    """Runs each call at once in the submitting thread."""

    max_workers = 1
    runs_inline = True
    # While calls are short the consumer fetches up to this many more at once (as many as start within
    # consumer.SHORT_CALL_SECONDS): they run one after another in the fetch thread anyway, and a fetch
    # (and an offset commit) per few calls would cost more than short calls themselves.
    prefetch_margin = 255

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)
