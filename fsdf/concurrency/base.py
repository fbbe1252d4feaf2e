"""The interface every pool implements: run submitted calls, at most ``max_workers`` at once."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from fsdf.concurrency.timeout import TimeoutStrategy


class WorkerPool(ABC):
    """Runs submitted calls with bounded concurrency; a consumer never submits more than it can run."""

    max_workers: int
    runs_coroutines = False
    """True for pools whose submitted functions are coroutine functions (ASYNC)."""
    runs_inline = False
    """True for the pool that runs each call in the consumer's fetch thread (SINGLE_THREAD): the consumer
    then runs a fetched batch itself, in order, instead of submitting message by message."""

    @property
    def resume_at(self) -> int:
        """Once full, the consumer fetches again when in-flight calls fall to this (the low water mark)."""
        return self.max_workers - 1

    @property
    def prefetch_margin(self) -> int:
        """Messages a consumer may hold beyond ``max_workers`` while calls are short, so no worker waits for a fetch."""
        return 0

    timeout_strategy: Optional['TimeoutStrategy'] = None
    """How this pool stops a call that runs past ``function_timeout``; None: the thread strategy."""

    def shrink_idle_after(self, seconds: float) -> None:
        """Let workers idle for ``seconds`` exit sooner than the pool's own keep-alive (pools without idle
        workers to retire ignore this)."""

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` soon; exceptions are the caller's to handle inside ``fn``."""

    def submit_many(self, fn: Callable[[Any], Any], items: list[Any]) -> None:
        """Run ``fn(item)`` soon for each item (pools that can hand a batch over at once do so)."""
        for item in items:
            self.submit(fn, item)

    def shutdown(self) -> None:
        """Let idle workers exit; running calls finish on their own."""
