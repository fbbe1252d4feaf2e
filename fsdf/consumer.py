"""The consume path, top to bottom: fetch a batch -> pool -> decode -> run with retries -> settle -> ack.

A consumer never holds more unsettled messages than its pool can run at once, so a crash or a
stop leaves little in flight, and prefetched messages that have not started are given back.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from fsdf import message, shutdown
from fsdf.brokers import Delivery, get_broker
from fsdf.concurrency import make_pool
from fsdf.config import settings
from fsdf.controls import RunOutcome, build_controls
from fsdf.exceptions import ExceptionForRequeue, MalformedMessageError
from fsdf.log import EveryNSeconds, get_logger
from fsdf.options import TaskOptions
from fsdf.publisher import Publisher
from fsdf.stats import RunCounters

FETCH_WAIT_SECONDS = 1.0  # how long one fetch blocks, so a stop is noticed within about a second
DRAIN_FETCH_WAIT_SECONDS = 0.1
EARLY_TOLERANCE_SECONDS = 0.05  # a message this close to its eta runs now


class Consumer:
    """Consumes one queue with one function; ``start()`` runs it in the background."""

    def __init__(self, queue_name: str, consuming_function: Callable[..., Any], options: TaskOptions) -> None:
        self.queue_name = queue_name
        self.function = consuming_function
        self.options = options
        self.broker_kind = options.broker_kind if options.broker_kind is not None else settings.DEFAULT_BROKER_KIND
        self.logger = get_logger(queue_name, options.log_level, options.logger_prefix, options.create_logger_file)
        self.signature = message.CallSignature(consuming_function, options.is_consuming_function_use_multi_params)
        self.broker = get_broker(self.broker_kind, queue_name)
        self.pool = options.specify_concurrent_pool or make_pool(
            options.concurrent_mode, options.concurrent_num, name=f'fsdf-{queue_name}')
        self.counters = RunCounters()
        self.controls = build_controls(self)
        self._publisher: Optional[Publisher] = None
        self._slots = threading.Condition()
        self._in_flight = 0           # fetched and not yet settled
        self._waiting: set[Delivery] = set()  # handed to the pool, not started
        self._stopping = threading.Event()
        self._stop_when_idle = False
        self._thread: Optional[threading.Thread] = None
        self._fetch_errors = EveryNSeconds(10)

    @property
    def publisher_of_same_queue(self) -> Publisher:
        """A publisher to this consumer's queue that checks calls against the function's signature."""
        if self._publisher is None:
            self._publisher = Publisher(self.queue_name, self.broker_kind, self.signature)
        return self._publisher

    # -- starting and stopping -----------------------------------------------------------
    def start_consuming_message(self) -> None:
        """Start consuming in a background thread and return at once (blocks with schedule_tasks_on_main_thread)."""
        if self._thread is not None and self._thread.is_alive():
            return
        for name in self.options.not_built_in_use():
            self.logger.warning('option %s is not built in this version of fsdf and has no effect yet', name)
        self._stopping.clear()
        self.broker.start_leases()
        for control in self.controls:
            control.on_start(self)
        shutdown.register(self)
        self.logger.info('consuming %r on %s with %s x%d', self.queue_name, self.broker_kind.name,
                         self.options.concurrent_mode.name, self.pool.max_workers)
        if self.options.schedule_tasks_on_main_thread:
            self._thread = threading.current_thread()
            self._fetch_loop()
            return
        # Not a daemon: a script that calls consume() and reaches its end keeps consuming.
        self._thread = threading.Thread(target=self._fetch_loop, name=f'fsdf-fetch-{self.queue_name}')
        self._thread.start()

    start = start_consuming_message

    def stop(self, grace: Optional[float] = None) -> None:
        """Stop fetching, give back what has not started, wait up to ``grace`` s for running calls."""
        grace = settings.SHUTDOWN_GRACE_SECONDS if grace is None else grace
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(FETCH_WAIT_SECONDS * 5)
        self._give_back_waiting()
        deadline = time.monotonic() + grace
        with self._slots:
            while self._in_flight and self._slots.wait(max(0.0, deadline - time.monotonic())):
                pass
            if self._in_flight:
                self.logger.warning('stopped with %d calls still running after %.0f s', self._in_flight, grace)
        shutdown.unregister(self)

    def drain(self, timeout: Optional[float] = None) -> int:
        """Consume until the queue is empty and every taken message is settled; how many were settled."""
        settled_before = self.counters.settled
        self._stop_when_idle = True
        try:
            self.start_consuming_message()
            if self._thread is not threading.current_thread():
                self._thread.join(timeout)
                if self._thread.is_alive():
                    self.logger.warning('drain of %r timed out after %s s', self.queue_name, timeout)
            self.stop()
        finally:
            self._stop_when_idle = False
        return self.counters.settled - settled_before

    # -- the fetch loop ------------------------------------------------------------------
    def _fetch_loop(self) -> None:
        wait = DRAIN_FETCH_WAIT_SECONDS if self._stop_when_idle else FETCH_WAIT_SECONDS
        seen_idle = False
        while not self._stopping.is_set():
            free = self._wait_for_free_slots()
            for control in self.controls:
                free = control.before_fetch(free)
            if not free or self._stopping.is_set():
                continue
            try:
                deliveries = self.broker.fetch(free, wait)
            except Exception as exc:  # broker away: keep trying, log once in a while
                if self._fetch_errors.ready(time.monotonic()):
                    self.logger.error('fetching from %r failed (will retry): %s', self.queue_name, exc)
                self._stopping.wait(1.0)
                continue
            if not deliveries:
                if self._stop_when_idle and not self._in_flight:
                    if seen_idle:  # idle twice in a row: nothing was requeued while we looked
                        break
                    seen_idle = True
                continue
            seen_idle = False
            if self._stopping.is_set():
                self.broker.requeue_many(deliveries)
                break
            with self._slots:
                self._in_flight += len(deliveries)
                self._waiting.update(deliveries)
            submit = self.pool.submit
            for delivery in deliveries:
                submit(self._run_delivery, delivery)

    def _wait_for_free_slots(self) -> int:
        with self._slots:
            while self._in_flight >= self.pool.max_workers and not self._stopping.is_set():
                self._slots.wait(FETCH_WAIT_SECONDS)
            return max(0, self.pool.max_workers - self._in_flight)

    def _give_back_waiting(self) -> None:
        with self._slots:
            taken, self._waiting = list(self._waiting), set()
            self._in_flight -= len(taken)
            self._slots.notify_all()
        if taken:
            self.broker.requeue_many(taken)
            self.logger.info('gave %d prefetched messages back to %r', len(taken), self.queue_name)

    # -- one message ---------------------------------------------------------------------
    def _run_delivery(self, delivery: Delivery) -> None:
        with self._slots:
            if delivery not in self._waiting:  # given back by stop() before it started
                return
            self._waiting.discard(delivery)
        try:
            self._settle(delivery)
        except Exception:  # a broker error while settling: the message stays unacked, the broker redelivers
            self.logger.exception('could not settle a message of %r', self.queue_name)
        finally:
            with self._slots:
                self._in_flight -= 1
                self._slots.notify()

    def _settle(self, delivery: Delivery) -> None:
        try:
            arguments, extra = message.decode(delivery.body)
            self.signature.check_fits(arguments)
        except (MalformedMessageError, TypeError) as exc:  # TypeError: does not fit the signature
            self.logger.error('malformed message on %r moved to %s_dlq: %s', self.queue_name, self.queue_name, exc)
            self.broker.dead_letter(delivery, message.dead_letter_body(delivery.body, 'malformed', error=str(exc)))
            self._count('malformed', 'dead_lettered')
            return
        eta = extra.get('eta')
        if eta and eta > time.time() + EARLY_TOLERANCE_SECONDS:
            # Published with a future eta by a client that did not delay it on the broker.
            self.broker.publish_delayed(delivery.body, eta)
            self.broker.ack(delivery)
            return
        task_id = extra.get('task_id')
        outcome = RunOutcome(task_id, arguments, extra, 'succeeded', started=time.time())
        for control in self.controls:
            reason = control.skip_reason(arguments, extra)
            if reason:
                outcome.status = reason
                self.broker.ack(delivery)
                self._count(reason)
                break
        else:
            token = message.current_task_id.set(task_id)
            try:
                self._run_with_retries(delivery, outcome)
            finally:
                message.current_task_id.reset(token)
        if self.controls:
            outcome.finished = time.time()
            for control in self.controls:
                control.after_settle(outcome)

    def _run_with_retries(self, delivery: Delivery, outcome: RunOutcome) -> None:
        max_retries = self.options.max_retry_times
        arguments = outcome.arguments
        for attempt in range(max_retries + 1):
            outcome.retries = attempt
            try:
                if self.signature.multi_params:
                    outcome.result = self.function(**arguments)
                else:
                    outcome.result = self.function(arguments)
            except ExceptionForRequeue:
                self.broker.requeue(delivery)
                self.counters.add('requeued')
                outcome.status = 'requeued'
                self.logger.info('task %s asked to be requeued', outcome.task_id)
                return
            except Exception as exc:
                outcome.exception = exc
                self._log_failure(outcome.task_id, attempt, max_retries, exc)
                if attempt < max_retries:
                    self.counters.add('retried')
                    continue
                body = message.dead_letter_body(delivery.body, 'failed', exception_type=type(exc).__name__,
                                                exception_message=str(exc), retries=attempt)
                self.broker.dead_letter(delivery, body)
                self._count('failed', 'dead_lettered')
                outcome.status = 'dead_lettered'
                return
            outcome.exception = None
            self.broker.ack(delivery)
            self._count('succeeded')
            return

    def _count(self, *names: str) -> None:
        counters = self.counters
        with counters._lock:
            for name in names:
                setattr(counters, name, getattr(counters, name) + 1)
            counters.settled += 1

    def _log_failure(self, task_id: Any, attempt: int, max_retries: int, exc: Exception) -> None:
        what = 'retrying' if attempt < max_retries else 'moving it to the dead-letter queue'
        self.logger.error('task %s failed (attempt %d of %d), %s: %s: %s', task_id, attempt + 1,
                          max_retries + 1, what, type(exc).__name__, exc,
                          exc_info=exc if self.options.is_print_detail_exception else None)
