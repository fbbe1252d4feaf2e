"""SINGLE_THREAD: each call runs in the consumer's fetch thread, one at a time."""
from __future__ import annotations

from typing import Any, Callable

from fsdf.concurrency.base import WorkerPool


class InlinePool(WorkerPool):
    """Runs each call at once in the submitting thread."""

    max_workers = 1
    # While calls are short the consumer fetches this many more at once: they run one after another
    # in the fetch thread anyway, and one fetch (and one offset commit) per call would cost more than
    # a short call itself.
    prefetch_margin = 15

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)
