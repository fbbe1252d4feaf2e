"""The consumer side of records and live state, as middleware.

:class:`RunRecorder` hands every settled run to the process's writer (``after_settle``, one append).
:class:`LiveState` runs one thread per consumer that, every ``PAUSE_POLL_SECONDS``, reads the
queue's pause flag; every ``BEAT_SECONDS`` registers the consumer in the store; and every
``RUN_STATS_LOG_SECONDS`` (a setting, 60 by default) logs the queue's speed and time left. Its
``before_fetch`` lets nothing be fetched while the queue is paused (running calls finish).
Neither touches the store from a worker: a slow or absent store slows only these threads.
"""
from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from fsdf.controls.base import ConsumerContext, Middleware
from fsdf.log import EveryNSeconds
from fsdf.records import pause
from fsdf.records.model import HOST, SCRIPT
from fsdf.records.writer import RecordWriter, chunk_sums
from fsdf.secrets import redact
from fsdf.stats import RATE_WINDOW_SECONDS

if TYPE_CHECKING:
    from fsdf.controls.base import RunOutcome

PAUSE_POLL_SECONDS = 1.0  # a pause or resume is seen within this plus one fetch wait (FETCH_WAIT_SECONDS)
BEAT_SECONDS = 3.0
STALE_AFTER_SECONDS = 15.0
"""A consumer whose last beat is older than this is shown as gone."""


class RunRecorder(Middleware):
    """Hands each settled run to the writer: the full record, or only its status for the rollups.

    Its ``after_settle`` is the only per-message cost of records: a length check and an append.
    """

    def __init__(self, writer: RecordWriter, queue: str, function: str, save_records: bool, save_result: bool,
                 expire_seconds: float) -> None:
        self.writer = writer
        self.queue = queue
        self.function = function
        self.save_records = save_records
        self.save_result = save_result
        self.expire_seconds = expire_seconds
        self._buffer = writer.buffer
        self._capacity = writer.capacity
        self._thread_id = threading.get_ident if save_records else _no_thread

    def after_settle(self, outcome: 'RunOutcome') -> None:
        buffer = self._buffer  # RecordWriter.add, inlined
        if len(buffer) >= self._capacity:
            self.writer.dropped += 1
        buffer.append((self, outcome, self._thread_id()))

    def after_settle_many(self, outcomes: list['RunOutcome']) -> None:
        """A chunk's runs in one ``extend``: a call per message was a tenth of a no-op task's cost.

        Without records, a chunk whose runs all succeeded within one second goes as one entry holding its
        sums (:func:`fsdf.records.writer.chunk_sums`): the writer's loop per run was a fifth of a no-op task's
        cost, counting statistics alone (issue 19)."""
        buffer = self._buffer
        if not self.save_records:
            sums = chunk_sums(outcomes)
            if sums is not None:
                if len(buffer) >= self._capacity:
                    self.writer.dropped += 1
                buffer.append((self, sums, 0))
                return
        thread_id = self._thread_id()
        overflow = len(buffer) + len(outcomes) - self._capacity  # the deque drops that many of the oldest
        if overflow > 0:
            self.writer.dropped += overflow
        buffer.extend([(self, outcome, thread_id) for outcome in outcomes])

    def on_stop(self, context: ConsumerContext) -> None:
        """The drain (a stop, SIGTERM) writes what this process buffered before it exits."""
        if not self.writer.flush():
            context.logger.warning('run records of %r not all written at stop: the store is not taking them',
                                   context.queue_name)


def _no_thread() -> int:
    """The thread id of a run whose record is not kept: not looked up."""
    return 0


class LiveState(Middleware):
    """Registry beats, the pause gate and the minute log line of one consumer."""

    def __init__(self, writer: RecordWriter, log_seconds: float) -> None:
        self.writer = writer
        self.log_seconds = log_seconds
        self._not_paused = threading.Event()
        self._not_paused.set()
        self._stop = threading.Event()
        self._errors = EveryNSeconds(30)
        self._started = 0.0

    # -- hooks ---------------------------------------------------------------------------
    def on_start(self, context: ConsumerContext) -> None:
        self._stop.clear()
        self._started = time.time()
        self.writer.note_queue(context.queue_name, context.broker_kind.name)
        threading.Thread(target=self._tick, args=(context, self._started), daemon=True,
                         name=f'fsdf-live-{context.queue_name}').start()

    def before_fetch(self, wanted: int) -> int:
        if self._not_paused.is_set():
            return wanted
        self._not_paused.wait(PAUSE_POLL_SECONDS)
        return wanted if self._not_paused.is_set() else 0

    def on_stop(self, context: ConsumerContext) -> None:
        self._stop.set()
        self._not_paused.set()
        self.writer.beat(context.consumer_id, {**self.details(context, self._started), 'stopped': True})

    # -- the consumer's thread -----------------------------------------------------------
    def _tick(self, context: ConsumerContext, started: float) -> None:
        next_beat = next_log = time.monotonic()
        next_log += self.log_seconds
        settled_at_log = context.counters.settled
        while not self._stop.is_set():
            now = time.monotonic()
            self._read_pause(context)
            if now >= next_beat:
                next_beat = now + BEAT_SECONDS
                self.writer.beat(context.consumer_id, self.details(context, started))
            if now >= next_log:
                settled = context.counters.settled
                self._log_speed(context, settled - settled_at_log, now - next_log + self.log_seconds)
                settled_at_log, next_log = settled, now + self.log_seconds
            self._stop.wait(PAUSE_POLL_SECONDS)

    def _read_pause(self, context: ConsumerContext) -> None:
        try:
            paused = pause.is_paused(context.queue_name, context.broker_kind, self.writer)
        except Exception as exc:  # store away: keep the last known state
            if self._errors.ready(time.monotonic()):
                context.logger.warning('reading the pause flag of %r failed (will retry): %s',
                                       context.queue_name, redact(exc))
            return
        if paused and self._not_paused.is_set():
            self._not_paused.clear()
            context.logger.info('queue %r is paused: fetching nothing until it is resumed', context.queue_name)
        elif not paused and not self._not_paused.is_set():
            self._not_paused.set()
            context.logger.info('queue %r is resumed', context.queue_name)

    def details(self, context: ConsumerContext, started: float) -> dict[str, Any]:
        """What one beat registers about the consumer."""
        counters = context.counters
        return {
            'consumer_id': context.consumer_id, 'queue': context.queue_name,
            'broker_kind': context.broker_kind.name, 'host': HOST, 'pid': os.getpid(), 'script': SCRIPT,
            'start_time': started, 'beat_time': time.time(),
            'concurrent_mode': context.options.concurrent_mode.name, 'concurrency': context.pool.max_workers,
            'qps': context.options.qps, 'paused': not self._not_paused.is_set(),
            'counters': {**counters.snapshot(), 'in_flight': context.in_flight(),
                         'records_dropped': self.writer.dropped},
            'rates': {name: round(rate, 3) for name, rate in counters.rates(RATE_WINDOW_SECONDS).items()},
        }

    def _log_speed(self, context: ConsumerContext, runs: int, seconds: float) -> None:
        from fsdf.records.queries import queue_rate, waiting_messages
        rate = runs / seconds if seconds > 0 else 0.0
        waiting = waiting_messages(context.queue_name, context.broker_kind)
        line = f'queue {context.queue_name!r}: {runs} runs in the last {seconds:.0f} s ({rate:.2f}/s)'
        if waiting is not None:
            total_rate = self._queue_rate(context, rate, queue_rate)
            line += f', {waiting} waiting'
            if waiting == 0:
                line += ', nothing left'
            elif total_rate > 0:
                line += f', about {format_seconds(waiting / total_rate)} left at {total_rate:.2f}/s over all consumers'
        context.logger.info(line)

    def _queue_rate(self, context: ConsumerContext, own_rate: float, queue_rate: Any) -> float:
        """The queue's rate over all its live consumers (the registry), at least this consumer's own."""
        try:
            return max(own_rate, queue_rate(context.queue_name, store=self.writer.store()))
        except Exception:  # registry unreadable: this consumer's own rate is the honest fallback
            return own_rate


def format_seconds(seconds: float) -> str:
    """A duration for people: ``42 s``, ``7 min``, ``3.5 h``, ``2.1 days``."""
    if seconds < 90:
        return f'{seconds:.0f} s'
    if seconds < 5400:
        return f'{seconds / 60:.0f} min'
    if seconds < 2 * 86400:
        return f'{seconds / 3600:.1f} h'
    return f'{seconds / 86400:.1f} days'


def consumer_middleware(queue_name: str, function_name: str, options: Any, writer_url: Optional[str] = None
                        ) -> tuple[list[Middleware], list[Middleware]]:
    """(middleware to put first, middleware to put last) for a consumer, per its options and the settings.

    Full records when ``function_result_status_persistance_conf.is_save_status`` (or ``is_save_result``);
    the rollup counters, registry, pause gate and minute line unless ``RUN_STATISTICS`` is off. With
    both off, nothing: a consumer pays nothing for records it does not keep.
    """
    from fsdf.config import settings
    from fsdf.controls import keeps_records
    from fsdf.records.store import default_store_url
    from fsdf.records.writer import writer_for
    if not keeps_records(options):
        return [], []
    conf = options.function_result_status_persistance_conf
    save_records = bool(conf.is_save_status or conf.is_save_result)
    writer = writer_for(writer_url or default_store_url())
    first: list[Middleware] = [LiveState(writer, settings.RUN_STATS_LOG_SECONDS)] if settings.RUN_STATISTICS else []
    last: list[Middleware] = [RunRecorder(writer, queue_name, function_name, save_records, bool(conf.is_save_result),
                        conf.expire_seconds)]
    return first, last
