"""The consume path, top to bottom: fetch a batch -> pool -> decode -> run with retries -> settle -> ack.

A consumer never holds more unsettled messages than its pool can run at once (plus, while calls are
short, what the pool starts within SHORT_CALL_SECONDS, up to its prefetch margin), so a crash or a
stop leaves little in flight, and prefetched messages that have not started are given back.
"""
from __future__ import annotations

import functools
import inspect
import threading
import time
from typing import Any, Callable, Optional

from fsdf import message, shutdown
from fsdf.brokers import Delivery, get_broker
from fsdf.concurrency import make_pool
from fsdf.concurrency.event_loop import run_on_shared_loop
from fsdf.concurrency.timeout import cancel_after, timeout_strategy_for
from fsdf.config import settings
from fsdf.controls import Control, RunOutcome, build_controls
from fsdf.controls.overrides import OVERRIDABLE, message_setting
from fsdf.exceptions import ExceptionForRequeue, MalformedMessageError
from fsdf.log import EveryNSeconds, get_logger
from fsdf.names import check_queue_name
from fsdf.secrets import redact
from fsdf.options import TaskOptions
from fsdf.publisher import Publisher
from fsdf.stats import RunCounters

FETCH_WAIT_SECONDS = 1.0  # how long one fetch blocks, so a stop is noticed within about a second
DRAIN_FETCH_WAIT_SECONDS = 0.1
# While calls take less than this on average, a consumer may hold the pool's prefetch margin beyond
# its concurrency, up to what its workers start within this time: those messages count as starting soon.
SHORT_CALL_SECONDS = 0.05


class Consumer:
    """Consumes one queue with one function; ``start()`` runs it in the background."""

    def __init__(self, queue_name: str, consuming_function: Callable[..., Any], options: TaskOptions) -> None:
        self.function = consuming_function
        self.options = options
        self.broker_kind = options.broker_kind if options.broker_kind is not None else settings.DEFAULT_BROKER_KIND
        self.queue_name = check_queue_name(queue_name, self.broker_kind)  # before it names a log file
        self.logger = get_logger(queue_name, options.log_level, options.logger_prefix, options.create_logger_file)
        self.signature = message.CallSignature(consuming_function, options.is_consuming_function_use_multi_params)
        self._is_coroutine_function = inspect.iscoroutinefunction(consuming_function)
        # _invoke under the function's name, so a timeout error names the user's function.
        self._named_invoke = functools.update_wrapper(functools.partial(self._invoke), consuming_function)
        self.broker = get_broker(self.broker_kind, queue_name)
        self.pool = options.specify_concurrent_pool or make_pool(
            options.concurrent_mode, options.concurrent_num, name=f'fsdf-{queue_name}')
        self._run = self._run_delivery_async if self.pool.runs_coroutines else self._run_delivery
        self._runs_inline = self.pool.runs_inline
        self.counters = RunCounters()
        self.controls = build_controls(self)
        # Only the controls that do something per message are called per message.
        self._skip_checks = [c for c in self.controls if type(c).skip_reason is not Control.skip_reason]
        self._settle_hooks = [c for c in self.controls if type(c).after_settle is not Control.after_settle]
        self._publisher: Optional[Publisher] = None
        # The fetch loop waits on _slots; the per-message paths take its plain lock (a C-level with).
        self._slots_lock = threading.Lock()
        self._slots = threading.Condition(self._slots_lock)
        self._in_flight = 0           # fetched and not yet settled
        self._low_water = self.pool.resume_at  # a full consumer's fetch loop sleeps until in-flight falls to it
        self._margin = self.pool.prefetch_margin
        self._mean_call: Optional[float] = None  # seconds, a running mean of recent calls
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
                    self.logger.error('fetching from %r failed (will retry): %s', self.queue_name, redact(exc))
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
            if self._runs_inline:
                self._run_inline(deliveries)
                continue
            with self._slots:
                self._in_flight += len(deliveries)
                self._waiting.update(deliveries)
            self.pool.submit_many(self._run, deliveries)

    def _wait_for_free_slots(self) -> int:
        """How many messages to fetch now, after waiting while the consumer holds enough."""
        workers = self.pool.max_workers
        mean_call = self._mean_call
        if self._margin and mean_call is not None and mean_call < SHORT_CALL_SECONDS:
            # Short calls: hold up to the margin beyond the workers, but no more than the workers start
            # within SHORT_CALL_SECONDS, and fetch once three quarters of it are used (in a batch); what is
            # left keeps every thread busy during the round trip.
            margin = min(self._margin, int(SHORT_CALL_SECONDS * workers / max(mean_call, 1e-9)))
            limit = workers + margin
            low_water = wait_from = workers + margin // 4
        else:  # long calls: fetch whenever a worker is free; once full, wait for the pool's low water mark
            limit = wait_from = workers
            low_water = self.pool.resume_at
        with self._slots:
            self._low_water = low_water
            if self._in_flight >= wait_from:
                while self._in_flight > low_water and not self._stopping.is_set():
                    self._slots.wait(FETCH_WAIT_SECONDS)
            return max(0, limit - self._in_flight)

    def _give_back_waiting(self) -> None:
        with self._slots:
            taken, self._waiting = list(self._waiting), set()
            self._in_flight -= len(taken)
            self._slots.notify_all()
        if taken:
            self.broker.requeue_many(taken)
            self.logger.info('gave %d prefetched messages back to %r', len(taken), self.queue_name)

    # -- one message ---------------------------------------------------------------------
    def _claim(self, delivery: Delivery) -> bool:
        """Mark a delivery as started; False if stop() already gave it back."""
        with self._slots_lock:
            try:
                self._waiting.remove(delivery)
            except KeyError:
                return False
            return True

    def _release(self) -> None:
        with self._slots_lock:
            self._in_flight -= 1
            # Above the low water mark nobody waits for this: waking the fetch loop per call costs a switch.
            if self._in_flight <= self._low_water:
                self._slots.notify_all()

    def _run_delivery(self, delivery: Delivery) -> None:
        """Run one message the pool started (in a thread, a greenlet ...)."""
        if not self._claim(delivery):
            return
        try:
            self._run_one(delivery)
        finally:
            self._release()

    def _run_inline(self, deliveries: list[Delivery]) -> None:
        """SINGLE_THREAD: run a fetched batch in this thread, in order; once stopping, give back the rest.

        The per-message claim and release of the pools are taken once per batch: nothing else runs them.
        """
        with self._slots_lock:
            self._in_flight += len(deliveries)
        started = 0
        stopping = self._stopping.is_set
        try:
            for delivery in deliveries:
                if stopping():
                    break
                started += 1
                self._run_one(delivery)
        finally:
            try:
                if started < len(deliveries):
                    self.broker.requeue_many(deliveries[started:])
            finally:  # a broker that fails to take them back redelivers them later; stop() must not wait
                with self._slots:
                    self._in_flight -= len(deliveries)
                    self._slots.notify_all()

    def _run_one(self, delivery: Delivery) -> None:
        """Decode, run with retries and settle one claimed message."""
        began = time.monotonic()
        try:
            outcome = self._prepare(delivery)
            if outcome.status == 'running':
                max_retries, timeout = self._settings_of(outcome.extra)
                direct = not timeout and not self._is_coroutine_function  # nothing to wrap the call in
                token = message.current_task_id.set(outcome.task_id)
                try:
                    for attempt in range(max_retries + 1):
                        try:
                            outcome.result = self._invoke(outcome) if direct else self._call(outcome, timeout)
                        except Exception as exc:
                            if self._failed(delivery, outcome, exc, attempt, max_retries):
                                continue
                        else:
                            self._succeeded(delivery, outcome)
                        break
                finally:
                    message.current_task_id.reset(token)
            if self._settle_hooks:
                self._finish(outcome)
        except Exception:  # a broker error while settling: the message stays unacked, the broker redelivers
            self.logger.exception('could not settle a message of %r', self.queue_name)
        finally:
            # A running mean of call times; no lock: a lost update between threads only nudges an estimate.
            seconds, mean = time.monotonic() - began, self._mean_call
            self._mean_call = seconds if mean is None else mean + 0.1 * (seconds - mean)

    async def _run_delivery_async(self, delivery: Delivery) -> None:
        """The same as ``_run_delivery`` for ASYNC mode, awaiting the call on the pool's loop."""
        if not self._claim(delivery):
            return
        try:
            outcome = self._prepare(delivery)
            if outcome.status == 'running':
                max_retries, timeout = self._settings_of(outcome.extra)
                message.current_task_id.set(outcome.task_id)  # each asyncio task has its own context
                for attempt in range(max_retries + 1):
                    try:
                        outcome.result = await self._call_async(outcome, timeout)
                    except Exception as exc:
                        if self._failed(delivery, outcome, exc, attempt, max_retries):
                            continue
                    else:
                        self._succeeded(delivery, outcome)
                    break
            if self._settle_hooks:
                self._finish(outcome)
        except Exception:
            self.logger.exception('could not settle a message of %r', self.queue_name)
        finally:
            self._release()

    def _prepare(self, delivery: Delivery) -> RunOutcome:
        """Decode and check a message; settle it at once if it is malformed, early or skipped.

        Returns an outcome whose status is 'running' if the function should run.
        """
        try:
            arguments, extra = message.decode(delivery.body)
            self.signature.check_fits(arguments)
        except (MalformedMessageError, TypeError) as exc:  # TypeError: does not fit the signature
            self.logger.error('malformed message on %r moved to %s_dlq: %s', self.queue_name, self.queue_name, exc)
            self.broker.dead_letter(delivery, message.dead_letter_body(delivery.body, 'malformed', error=str(exc)))
            self._count('malformed', 'dead_lettered')
            return RunOutcome(None, {}, {}, 'malformed')
        outcome = RunOutcome(extra.get('task_id'), arguments, extra, 'running', started=time.time())
        eta = extra.get('eta')
        if eta and eta > outcome.started:  # never early: back to the broker until due
            # Published with a future eta by a client that did not delay it on the broker.
            self.broker.publish_delayed(delivery.body, eta)
            self.broker.ack(delivery)
            outcome.status = 'delayed'
            return outcome
        for control in self._skip_checks:
            reason = control.skip_reason(arguments, extra)
            if reason:
                outcome.status = reason
                self.broker.ack(delivery)
                self._count(reason)
                break
        return outcome

    def _invoke(self, outcome: RunOutcome) -> Any:
        if self.signature.multi_params:
            return self.function(**outcome.arguments)
        return self.function(outcome.arguments)

    def _call(self, outcome: RunOutcome, timeout: Optional[float]) -> Any:
        """Run the function once with the message's arguments (an ``async def`` on the shared loop)."""
        if self._is_coroutine_function:
            return run_on_shared_loop(cancel_after(self._invoke(outcome), timeout, self.function))
        if timeout:  # stopped the way this pool can (fsdf.concurrency.timeout)
            return timeout_strategy_for(self.pool).run(timeout, self._named_invoke, outcome)
        return self._invoke(outcome)

    def _settings_of(self, extra: dict[str, Any]) -> tuple[int, Optional[float]]:
        """``(max_retry_times, function_timeout)`` for one message: its own overrides, else the task's."""
        options = self.options
        if OVERRIDABLE.isdisjoint(extra):  # the usual message: one set operation, not a lookup per option
            return options.max_retry_times, options.function_timeout
        return (message_setting(extra, 'max_retry_times', options.max_retry_times),
                message_setting(extra, 'function_timeout', options.function_timeout))

    async def _call_async(self, outcome: RunOutcome, timeout: Optional[float]) -> Any:
        """Await the coroutine function once, within the timeout (a plain function runs in the pool's threads)."""
        if not self._is_coroutine_function:  # _call stops it with the thread timeout, which really ends it
            return await self.pool.run_in_thread(self._call, outcome, timeout)
        return await cancel_after(self._invoke(outcome), timeout, self.function)

    def _succeeded(self, delivery: Delivery, outcome: RunOutcome) -> None:
        outcome.status, outcome.exception = 'succeeded', None
        self.broker.ack(delivery)
        counters = self.counters
        with counters._lock:  # _count('succeeded') without its loop: this runs for nearly every message
            counters.succeeded += 1
            counters.settled += 1

    def _failed(self, delivery: Delivery, outcome: RunOutcome, exc: Exception, attempt: int, max_retries: int
                ) -> bool:
        """Handle a failed attempt; True if the caller should try again."""
        outcome.retries, outcome.exception = attempt, exc
        if isinstance(exc, ExceptionForRequeue):
            self.broker.requeue(delivery)
            self.counters.add('requeued')
            outcome.status = 'requeued'
            self.logger.info('task %s asked to be requeued', outcome.task_id)
            return False
        self._log_failure(outcome.task_id, attempt, max_retries, exc)
        if attempt < max_retries:
            self.counters.add('retried')
            return True
        body = message.dead_letter_body(delivery.body, 'failed', exception_type=type(exc).__name__,
                                        exception_message=str(exc), retries=attempt)
        self.broker.dead_letter(delivery, body)
        self._count('failed', 'dead_lettered')
        outcome.status = 'dead_lettered'
        return False

    def _finish(self, outcome: RunOutcome) -> None:
        outcome.finished = time.time()
        for control in self._settle_hooks:
            control.after_settle(outcome)

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
