"""THREADING: a bounded thread pool that grows only while work waits and shrinks when idle."""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Optional

from fsdf.concurrency.base import WorkerPool

logger = logging.getLogger('fsdf.pool')
# A full pool is refilled once this fraction of its calls are left: one fetch then brings a batch
# while the rest keep the threads busy, instead of one message per round trip as each slot frees.
LOW_WATER_FRACTION = 0.75
# Short calls: a finishing thread takes the next message from the pool's queue instead of sleeping
# until the fetch loop's next round trip brings one. Small pools too (issue 19): without it a pool of 8
# ran dramatiq's latency bench (1-10 ms calls) 1.2-1.5x slower than a raw loop on Redis, each freed thread
# waiting for a fetch. The consumer bounds the margin by what the pool starts within SHORT_CALL_SECONDS.
PREFETCH_FRACTION = 0.5
PREFETCH_FROM_WORKERS = 2


class ShrinkableThreadPool(WorkerPool):
    """Threads start only when a call arrives and none is idle (up to ``max_workers``),
    and a thread idle for ``keep_alive`` seconds exits.

    Waiting threads take calls in turn, so under a steady trickle of calls (a ``qps`` task whose
    calls got fast again) no thread ever waits ``keep_alive`` in one go. So the pool also counts
    its idle threads at each submit: those idle at every submit of a ``keep_alive`` window were
    not needed, and that many exit as they next become idle.
    """

    def __init__(self, max_workers: int, keep_alive: float = 30.0, name: str = 'fsdf-worker') -> None:
        if max_workers < 1:
            raise ValueError(f'max_workers must be >= 1, got {max_workers}')
        self.max_workers = max_workers
        self._keep_alive = keep_alive
        self.name = name
        self._work: queue.SimpleQueue[Optional[tuple[Callable[..., Any], tuple]]] = queue.SimpleQueue()
        # Idle threads, each a permit: a submit that takes one knows an idle thread will run its call.
        # A plain int under a plain lock: a Semaphore is Python code, and this runs twice per call.
        self._idle = 0
        self._lock = threading.Lock()
        self._threads = 0
        self._started = 0
        self._fewest_idle = 0  # fewest idle threads seen at a submit in this window
        self._window_end = time.monotonic() + keep_alive
        self._retire = 0  # surplus threads to exit as they next become idle

    @property
    def keep_alive(self) -> float:
        """Seconds an unneeded thread stays before it exits (can be lowered while the pool runs)."""
        return self._keep_alive

    @keep_alive.setter
    def keep_alive(self, seconds: float) -> None:
        self._keep_alive = seconds
        self._window_end = min(self._window_end, time.monotonic() + seconds)

    def shrink_idle_after(self, seconds: float) -> None:
        self.keep_alive = min(self.keep_alive, seconds)

    @property
    def resume_at(self) -> int:
        return int(self.max_workers * LOW_WATER_FRACTION)

    @property
    def prefetch_margin(self) -> int:
        return int(self.max_workers * PREFETCH_FRACTION) if self.max_workers >= PREFETCH_FROM_WORKERS else 0

    @property
    def idle_count(self) -> int:
        """Threads alive and waiting for a call."""
        return self._idle

    @property
    def thread_count(self) -> int:
        """Threads alive in the pool now."""
        return self._threads

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._work.put((fn, args))
        with self._lock:
            idle = self._idle
            if idle < self._fewest_idle:
                self._fewest_idle = idle
            if idle:
                self._idle = idle - 1
            elif self._threads >= self.max_workers:
                return
            else:
                self._threads += 1
                self._started += 1
                number = self._started
        if idle:
            if time.monotonic() >= self._window_end:
                self._end_window()
            return
        threading.Thread(target=self._run, name=f'{self.name}-{number}', daemon=True).start()

    def _end_window(self) -> None:
        self._retire, self._fewest_idle = self._fewest_idle, self._threads
        self._window_end = time.monotonic() + self.keep_alive

    def shutdown(self) -> None:
        for _ in range(self._threads):
            self._work.put(None)

    def _run(self) -> None:
        get = self._work.get
        while True:
            try:
                item = get(timeout=self.keep_alive)
            except queue.Empty:
                if self._take_idle():
                    break
                continue
            if item is None:
                self._take_idle()
                break
            fn, args = item
            try:
                fn(*args)
            except BaseException:  # fn handles its own errors; this keeps the thread alive regardless
                logger.exception('uncaught error in pool call %r', fn)
            with self._lock:
                self._idle += 1
            if self._retire > 0 and self._leave_as_surplus():
                return
        with self._lock:
            self._threads -= 1

    def _leave_as_surplus(self) -> bool:
        with self._lock:
            if self._retire <= 0 or not self._idle:
                return False
            self._idle -= 1
            self._retire -= 1
            self._threads -= 1
            return True

    def _take_idle(self) -> bool:
        """Take one idle permit for a thread about to exit; False if a submit took them all."""
        with self._lock:
            if not self._idle:
                return False
            self._idle -= 1
            return True
