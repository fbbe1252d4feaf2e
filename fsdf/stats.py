"""Counters of what a consumer did with its messages, cheap enough for the hot path."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


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
    settled: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        """Add to one counter (thread-safe)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith('_')}
