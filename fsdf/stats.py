"""Counters of what a consumer did with its messages, cheap enough for the hot path."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields

RATE_WINDOW_SECONDS = 10.0
_NOT_COUNTERS = frozenset({'lock', '_samples'})


@dataclass
class RunCounters:
    """Per-queue totals since the consumer started; ``settled`` counts every decided message."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    requeued: int = 0
    dead_lettered: int = 0
    malformed: int = 0
    expired: int = 0
    filtered: int = 0
    skipped: int = 0
    """Skipped by a user's middleware (its ``skip_reason``); fsdf's own skips count as expired or filtered."""
    settled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """Held while counters change; the consume path takes it directly to bump two counters at once."""
    # Totals seen by earlier rates() calls: the rates come from these, so the hot path pays nothing.
    _samples: deque = field(default_factory=lambda: deque([(time.monotonic(), {})]), repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        """Add to one counter (thread-safe)."""
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict."""
        with self.lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_COUNTERS}

    def rates(self, window: float = RATE_WINDOW_SECONDS) -> dict[str, float]:
        """Per-second rate of each counter over about the last ``window`` seconds (a dashboard polls this).

        The first call covers the time since the counters were created.
        """
        now, totals = time.monotonic(), self.snapshot()
        samples = self._samples
        with self.lock:
            while len(samples) > 1 and samples[1][0] <= now - window:
                samples.popleft()  # keep one sample at or before the window's start
            then, before = samples[0]
            samples.append((now, totals))
        elapsed = max(now - then, 1e-9)
        return {name: (value - before.get(name, 0)) / elapsed for name, value in totals.items()}
