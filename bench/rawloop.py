"""The hand-written consume loop the benchmarks compare fsdf with; stdlib only and quick to import, so a
raw worker timed from its spawn (bench/start_latency.py) pays for nothing but the loop itself."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


def dispatch(take: Callable[[], list], run: Callable[[Any], None], concurrency: int, stop: threading.Event) -> None:
    """A hand-written consume loop: a ThreadPoolExecutor fed by ``take`` (a batch, maybe empty), at most
    ``concurrency`` calls running or queued in the pool, until ``stop`` is set."""
    slots = threading.BoundedSemaphore(concurrency)

    def run_and_release(item: Any) -> None:
        try:
            run(item)
        finally:
            slots.release()

    with ThreadPoolExecutor(concurrency) as pool:
        while not stop.is_set():
            for item in take():
                slots.acquire()
                pool.submit(run_and_release, item)
