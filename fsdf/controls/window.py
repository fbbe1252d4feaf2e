"""Do-not-run window: between two local times of day nothing is fetched, so messages wait in the broker."""
from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Callable, Optional, Sequence

from fsdf.controls.base import ConsumerContext, Middleware

MAX_WAIT_SECONDS = 1.0  # waits are this short so a stop is noticed soon


def parse_time_of_day(text: str) -> dt.time:
    """``'HH:MM:SS'`` or ``'HH:MM'`` as a time; ValueError otherwise."""
    for fmt in ('%H:%M:%S', '%H:%M'):
        try:
            return dt.datetime.strptime(text, fmt).time()
        except (TypeError, ValueError):
            pass
    raise ValueError(f'do_not_run_by_specify_time needs HH:MM:SS times, got {text!r}')


class DoNotRunWindow(Middleware):
    """Blocks fetching while the local time is in ``[start, end)``; a window may span midnight."""

    def __init__(self, window: Sequence[str], clock: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        self.start, self.end = (parse_time_of_day(window[0]), parse_time_of_day(window[1]))
        self.clock = clock
        self._stopping = threading.Event()
        self._logger: Optional[logging.Logger] = None

    def on_start(self, context: ConsumerContext) -> None:
        self._stopping = context.stopping
        self._logger = context.logger

    def contains(self, moment: dt.time) -> bool:
        """Whether a time of day is inside the window."""
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end  # across midnight

    def seconds_left(self, now: dt.datetime) -> float:
        """Seconds from ``now`` (inside the window) until the window ends."""
        end = dt.datetime.combine(now.date(), self.end)
        if end <= now:
            end += dt.timedelta(days=1)
        return (end - now).total_seconds()

    def before_fetch(self, wanted: int) -> int:
        now = self.clock()
        if not self.contains(now.time()):
            return wanted
        if self._logger is not None:
            self._logger.info('inside the do-not-run window %s-%s: nothing starts until %s',
                              self.start, self.end, self.end)
        while self.contains(now.time()) and not self._stopping.is_set():
            self._stopping.wait(min(MAX_WAIT_SECONDS, self.seconds_left(now)))
            now = self.clock()
        return 0 if self._stopping.is_set() else wanted
