"""One asyncio event loop per process, in its own thread, shared by every consumer that needs one.

The loop belongs to the default :class:`fsdf.runtime.Runtime`, which stops it on close.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Coroutine

from fsdf.runtime import default_runtime

if TYPE_CHECKING:
    import asyncio


def shared_loop() -> asyncio.AbstractEventLoop:
    """The process's fsdf event loop, started on first use in a daemon thread."""
    return default_runtime().loop()


def run_on_shared_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on the shared loop from another thread and wait for its result."""
    import asyncio  # here, not at the top: a worker that never runs a coroutine does not import asyncio
    return asyncio.run_coroutine_threadsafe(coroutine, default_runtime().loop()).result()
