"""``qps``: starts are paced at a rate whatever each call takes; the pool grows to hold it.

The governor gates the fetch loop: it lets the consumer fetch only as many messages as are
due to start now, so fetched messages start at once and the consumer never holds more than
about ``qps * BURST_SECONDS`` messages waiting for their turn. A slow call does not slow the
rate: the next message is fetched on time and the thread pool starts another thread for it.

How ``qps`` and ``concurrent_num`` interact: the rate can hold only while
``qps * call duration <= concurrent_num``. Beyond that every thread is busy, the consumer
cannot take the next message, and the rate falls to ``concurrent_num / call duration``;
the governor then logs one warning saying so and what ``concurrent_num`` would be needed.

The pacing itself is a :class:`Pacer`. :class:`LocalPacer` paces this consumer alone; a
distributed pacer (:class:`fsdf.controls.distributed_rate.RedisPacer`, one schedule in Redis
shared by every consumer of the queue) implements the same ``take`` and is passed to
:class:`RateGovernor` instead.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Optional

from fsdf.controls.base import ConsumerContext, Middleware, RunOutcome

BURST_SECONDS = 0.1      # credit kept after a pause, so starts never come in a burst larger than this
EARLY_SECONDS = 0.002    # a start due this soon is released now (saves a sleep per start at high rates)
MAX_WAIT_SECONDS = 1.0   # waits are this short so a stop is noticed soon
REPORT_AFTER_SECONDS = 2.0  # the rate is judged out of reach over windows at least this long


class Pacer(ABC):
    """Hands out start permits at a rate."""

    qps: float

    @abstractmethod
    def take(self, most: int, stopping: threading.Event) -> int:
        """Block until at least one start is due (or ``stopping`` is set: then 0); how many, at most ``most``."""

    def window_starts(self, given: int) -> int:
        """Starts that count against the rate since the last call, given this consumer's ``given``.

        A shared pacer counts every consumer's starts, so one consumer's small share is not taken
        for a rate out of reach.
        """
        return given


class LocalPacer(Pacer):
    """Paces starts of this consumer on a fixed schedule: start n is due at ``t0 + n / qps``.

    Scheduling from the ideal times (not from when the last start happened) keeps the long-run
    rate exact even though every sleep and fetch is a little late.
    """

    def __init__(self, qps: float) -> None:
        if qps <= 0:
            raise ValueError(f'qps must be > 0, got {qps}')
        self.qps = qps
        self.interval = 1.0 / qps
        self.max_credit = max(1.0, qps * BURST_SECONDS)
        self._next_due: Optional[float] = None

    def take(self, most: int, stopping: threading.Event) -> int:
        if most <= 0:
            return 0
        now = time.monotonic()
        if self._next_due is None:
            self._next_due = now
        while self._next_due - now > EARLY_SECONDS:
            if stopping.wait(min(MAX_WAIT_SECONDS, self._next_due - now)):
                return 0
            now = time.monotonic()
        # After a pause (empty queue, busy pool) keep only a little credit: no burst of catch-up starts.
        self._next_due = max(self._next_due, now - self.max_credit * self.interval)
        due = int((now + EARLY_SECONDS - self._next_due) * self.qps) + 1
        count = min(most, due)
        self._next_due += count * self.interval
        return count


class RateGovernor(Middleware):
    """Paces the fetch loop at ``qps`` starts a second through a :class:`Pacer`."""

    def __init__(self, qps: float, pacer: Optional[Pacer] = None) -> None:
        self.qps = qps
        self.pacer = pacer or LocalPacer(qps)
        self._stopping = threading.Event()
        self._context: Optional[ConsumerContext] = None
        self._mean_duration = 0.0
        self._window_seconds = max(REPORT_AFTER_SECONDS, 10.0 / qps)
        self._window_start: Optional[float] = None
        self._given = self._slot_bound = self._other = 0
        self.reported = False

    def on_start(self, context: ConsumerContext) -> None:
        self._context = context
        self._stopping = context.stopping
        # Shrink within seconds once calls get fast again, but keep a thread across the gap between starts.
        context.pool.shrink_idle_after(max(3.0, 3.0 / self.qps))

    def before_fetch(self, wanted: int) -> int:
        count = self.pacer.take(wanted, self._stopping)
        if not self.reported:
            self._check_reachable(wanted, count)
        return count

    def after_settle(self, outcome: RunOutcome) -> None:
        if outcome.finished and outcome.started:
            # A running mean with no lock: an occasional lost update only nudges an estimate.
            self._mean_duration += 0.05 * (outcome.finished - outcome.started - self._mean_duration)

    def _check_reachable(self, wanted: int, count: int) -> None:
        # Over a window: fewer starts than the rate, and mostly because the consumer could take no
        # more (count == wanted: every slot busy), not because the queue ran dry.
        now = time.monotonic()
        if self._window_start is None:
            self._window_start = now
            self.pacer.window_starts(0)
            return
        self._given += count
        if count and count == wanted:
            self._slot_bound += 1
        else:
            self._other += 1
        elapsed = now - self._window_start
        if elapsed < self._window_seconds:
            return
        starts = self.pacer.window_starts(self._given)
        if starts < 0.9 * self.qps * elapsed and self._slot_bound > self._other:
            self._report(starts / elapsed)
        self._window_start, self._given, self._slot_bound, self._other = now, 0, 0, 0

    def _report(self, achieved: float) -> None:
        self.reported = True
        context = self._context
        if context is None:
            return
        duration = self._mean_duration
        needed = int(self.qps * duration) + 1
        context.logger.warning(
            'qps=%s cannot be reached with concurrent_num=%d: calls take about %.2f s, so this rate needs '
            'about %d calls at once; it runs at about %.2f/s. Raise concurrent_num to %d or more.',
            self.qps, context.pool.max_workers, duration, needed, achieved, int(needed * 1.2) + 1)
