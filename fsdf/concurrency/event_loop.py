"""One asyncio event loop per process, in its own thread, shared by every consumer that needs one."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, Optional

_loop: Optional[asyncio.AbstractEventLoop] = None
_lock = threading.Lock()


def shared_loop() -> asyncio.AbstractEventLoop:
    """The process's fsdf event loop, started on first use in a daemon thread."""
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name='fsdf-event-loop', daemon=True).start()
            _loop = loop
        return _loop


def run_on_shared_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on the shared loop from another thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, shared_loop()).result()
