"""One message, start to settle: decode, check, skip, call with retries, settle, tell the middleware.

The runner knows nothing of threads or slots: :meth:`MessageRunner.process` runs one delivery in
the calling thread (a test can call it directly), :meth:`MessageRunner.process_async` awaits it
on an event loop. Both share one retry loop, :meth:`MessageRunner._retries`.
"""
from __future__ import annotations

import functools
import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from fsdf import message
from fsdf.brokers import Broker, Delivery
from fsdf.concurrency.base import WorkerPool
from fsdf.concurrency.event_loop import run_on_shared_loop
from fsdf.concurrency.timeout import cancel_after, timeout_strategy_for
from fsdf.controls.base import Middleware, RunOutcome, overriding
from fsdf.controls.overrides import OVERRIDABLE, message_setting
from fsdf.exceptions import ExceptionForRequeue, MalformedMessageError
from fsdf.options import TaskOptions
from fsdf.stats import RunCounters

# While calls take less than this on average (s), process_many acks a batch's successes together.
BATCH_ACK_BELOW_SECONDS = 0.001
# extra keys that change how one message runs: the per-message overrides and the retries a delayed retry carries
_PER_MESSAGE_KEYS = OVERRIDABLE | {'retries'}


class MessageRunner:
    """Runs the messages of one queue through one function and settles each on its broker."""

    def __init__(self, function: Callable[..., Any], signature: message.CallSignature, options: TaskOptions,
                 broker: Broker, pool: WorkerPool, counters: RunCounters, logger: logging.Logger,
                 middleware: list[Middleware]) -> None:
        self.function = function
        self.signature = signature
        self.options = options
        self.broker = broker
        self.pool = pool
        self.counters = counters
        self.logger = logger
        self.queue_name = broker.queue_name
        self._is_coroutine_function = inspect.iscoroutinefunction(function)
        # _invoke under the function's name, so a timeout error names the user's function.
        self._named_invoke = functools.update_wrapper(functools.partial(self._invoke), function)
        # Only the middleware that do something per message are called per message.
        self._skip_checks = overriding(middleware, 'skip_reason')
        self._settle_hooks = overriding(middleware, 'after_settle')
        self.mean_call: Optional[float] = None
        """Seconds, a running mean of recent synchronous runs (the consumer sizes its prefetch by it)."""

    def process(self, delivery: Delivery) -> RunOutcome:
        """Run one claimed message to its settle in this thread; what became of it."""
        began = time.monotonic()
        try:
            return self._process(delivery)
        finally:
            self._note_call_time(time.monotonic() - began, 1)

    def process_many(self, deliveries: list[Delivery], stopping: Callable[[], bool]) -> int:
        """Run claimed messages in order in this thread until ``stopping()``; how many were started.

        The batch is timed once, not each message: two clock reads per call were a tenth of a no-op
        task's cost.
        """
        began, started, process = time.monotonic(), 0, self._process
        # While calls are very short, successes are acked together at the end (one lock and one count for
        # the batch), and the settle hooks told once; a long call must not hold back those before it.
        mean = self.mean_call
        batch = _ChunkSettles() if mean is not None and mean < BATCH_ACK_BELOW_SECONDS else None
        try:
            for delivery in deliveries:
                if stopping():
                    break
                started += 1
                process(delivery, batch)
        finally:
            if batch is not None:
                self._settle_chunk(batch)
            if started:
                self._note_call_time(time.monotonic() - began, started)
        return started

    def _settle_chunk(self, batch: _ChunkSettles) -> None:
        """Ack a chunk's successes together, then hand its outcomes to each settle hook in one call."""
        if batch.acks:
            self._succeeded_many(batch.acks)
        if batch.outcomes:
            for middleware in self._settle_hooks:
                try:
                    middleware.after_settle_many(batch.outcomes)
                except Exception:  # as a hook's error per message: logged, the messages stay settled
                    self.logger.exception('a settle hook failed on %d messages of %r', len(batch.outcomes),
                                          self.queue_name)

    def _note_call_time(self, seconds: float, calls: int) -> None:
        """Fold ``calls`` runs that took ``seconds`` in all into the running mean of call times."""
        # No lock: a lost update between threads only nudges an estimate.
        seconds, mean = seconds / calls, self.mean_call
        self.mean_call = seconds if mean is None else mean + 0.1 * (seconds - mean)

    def _process(self, delivery: Delivery, batch: Optional[_ChunkSettles] = None) -> RunOutcome:
        """``process`` untimed; with ``batch``, a first attempt that succeeds is left there for the caller to
        ack, and the outcome for it to hand to the settle hooks (``_settle_chunk``)."""
        outcome = _UNSETTLED
        try:
            outcome = self._prepare(delivery)
            if outcome.status == 'running':
                options = self.options
                timeout: Optional[float]
                if _PER_MESSAGE_KEYS.isdisjoint(outcome.extra):  # _settings_of's usual case, without the call
                    max_retries, timeout = options.max_retry_times, options.function_timeout
                else:
                    max_retries, timeout = self._settings_of(outcome)
                token = message.running_task.set(_running_ids(outcome))
                try:
                    try:
                        direct = not timeout and not self._is_coroutine_function  # nothing to wrap the call in
                        outcome.result = self._invoke(outcome) if direct else self._call(outcome, timeout)
                    except Exception as exc:
                        outcome.exception = exc
                        for _ in self._retries(delivery, outcome, max_retries):
                            self._attempt(outcome, timeout)
                    else:
                        if batch is None:
                            self._succeeded(delivery, outcome)
                        else:
                            outcome.status = 'succeeded'
                            batch.acks.append(delivery)
                finally:
                    message.running_task.reset(token)
            if self._settle_hooks:
                self._finish(outcome, batch)
        except Exception:  # a broker error while settling: the message stays unacked, the broker redelivers
            self.logger.exception('could not settle a message of %r', self.queue_name)
        return outcome

    async def process_async(self, delivery: Delivery) -> RunOutcome:
        """``process`` for ASYNC mode: the call is awaited on the running loop."""
        outcome = _UNSETTLED
        try:
            outcome = self._prepare(delivery)
            if outcome.status == 'running':
                max_retries, timeout = self._settings_of(outcome)
                # Each asyncio task has its own context: nothing to reset.
                message.running_task.set(_running_ids(outcome))
                try:
                    outcome.result = await self._call_async(outcome, timeout)
                except Exception as exc:
                    outcome.exception = exc
                    for _ in self._retries(delivery, outcome, max_retries):
                        await self._attempt_async(outcome, timeout)
                else:
                    self._succeeded(delivery, outcome)
            if self._settle_hooks:
                self._finish(outcome)
        except Exception:
            self.logger.exception('could not settle a message of %r', self.queue_name)
        return outcome

    # -- before the call -----------------------------------------------------------------
    def _prepare(self, delivery: Delivery) -> RunOutcome:
        """Decode and check a message; settle it at once if it is malformed, early or skipped.

        Returns an outcome whose status is 'running' if the function should run. Whatever the
        body holds, the message is settled here or runs: an exception that the message causes
        (decoding it, fitting it to the signature, a middleware judging it) dead-letters it with
        the reason; only an error of the broker itself leaves it unsettled, for redelivery.
        """
        try:
            arguments, extra = message.decode(delivery.body)
            self.signature.check_fits(arguments)
        except Exception as exc:  # MalformedMessageError, TypeError (does not fit), or whatever a foreign body causes
            return self._reject(delivery, 'malformed', exc)
        # (task_id, arguments, extra, status, result, exception, retries, started): positional, a fifth cheaper
        outcome = RunOutcome(extra.get('task_id'), arguments, extra, 'running', None, None, 0, time.time())
        eta = extra.get('eta')
        if eta and eta > outcome.started:  # never early: back to the broker until due (decode checked its type)
            # Published with a future eta by a client that did not delay it on the broker.
            self.broker.publish_delayed(delivery.body, eta)  # type: ignore[arg-type]  # brokers take str or bytes
            self.broker.ack(delivery)
            outcome.status = 'delayed'
            return outcome
        for middleware in self._skip_checks:
            try:
                reason = middleware.skip_reason(arguments, extra)
            except Exception as exc:  # a middleware that cannot judge this message must not hold it forever
                return self._reject(delivery, 'skip_check_failed', exc)
            if reason:
                outcome.status = reason
                self.broker.ack(delivery)
                self._count(reason if reason in _SKIP_COUNTERS else 'skipped')
                break
        return outcome

    def _reject(self, delivery: Delivery, reason: str, exc: Exception) -> RunOutcome:
        """Dead-letter a message that cannot run, saying why; the outcome says ``malformed``."""
        error = f'{type(exc).__name__}: {exc}' if not isinstance(exc, (MalformedMessageError, TypeError)) else str(exc)
        self.logger.error('malformed message on %r moved to %s_dlq: %s', self.queue_name, self.queue_name, error)
        self.broker.dead_letter(delivery, message.dead_letter_body(delivery.body, reason, error=error))
        self._count('malformed', 'dead_lettered')
        return RunOutcome(None, {}, {}, 'malformed', exception=exc)

    def _settings_of(self, outcome: RunOutcome) -> tuple[int, Optional[float]]:
        """``(max_retry_times, function_timeout)`` for one message: its own overrides, else the task's.

        A message that comes back from a delayed retry also sets ``outcome.retries`` from its ``extra``.
        """
        options, extra = self.options, outcome.extra
        if _PER_MESSAGE_KEYS.isdisjoint(extra):  # the usual message: one set operation, not a lookup per key
            return options.max_retry_times, options.function_timeout
        retries = extra.get('retries')
        if type(retries) is int and retries > 0:
            outcome.retries = retries
        return (message_setting(extra, 'max_retry_times', options.max_retry_times),
                message_setting(extra, 'function_timeout', options.function_timeout))

    # -- the call ------------------------------------------------------------------------
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

    async def _call_async(self, outcome: RunOutcome, timeout: Optional[float]) -> Any:
        """Await the coroutine function once, within the timeout (a plain function runs in the pool's threads)."""
        if not self._is_coroutine_function:  # _call stops it with the thread timeout, which really ends it
            return await self.pool.run_in_thread(self._call, outcome, timeout)  # type: ignore[attr-defined]
        return await cancel_after(self._invoke(outcome), timeout, self.function)

    def _attempt(self, outcome: RunOutcome, timeout: Optional[float]) -> None:
        """Call again; the result or the exception lands in ``outcome`` for the retry loop to judge."""
        try:
            outcome.result, outcome.exception = self._call(outcome, timeout), None
        except Exception as exc:
            outcome.exception = exc

    async def _attempt_async(self, outcome: RunOutcome, timeout: Optional[float]) -> None:
        """``_attempt`` on the event loop."""
        try:
            outcome.result, outcome.exception = await self._call_async(outcome, timeout), None
        except Exception as exc:
            outcome.exception = exc

    # -- settling ------------------------------------------------------------------------
    def _retries(self, delivery: Delivery, outcome: RunOutcome, max_retries: int) -> Iterator[None]:
        """The retry loop of both paths, entered after a failed first attempt.

        Judges ``outcome.exception`` (None: the last attempt succeeded), settles the message once its
        fate is decided and yields whenever the caller should call the function again.
        """
        attempt = outcome.retries
        while outcome.exception is not None:
            exc = outcome.exception
            outcome.retries = attempt
            if isinstance(exc, ExceptionForRequeue):
                self._requeue(delivery, outcome)
                return
            self._log_failure(outcome.task_id, attempt, max_retries, exc)
            if attempt >= max_retries:
                self._dead_letter(delivery, outcome, exc)
                return
            self.counters.add('retried')
            delay = self.retry_delay(attempt + 1)
            if delay:
                self._retry_later(delivery, outcome, delay)
                return
            attempt += 1
            yield
        self._succeeded(delivery, outcome)

    def retry_delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 is the first), from the task's options."""
        options = self.options
        if not options.retry_delay:
            return 0.0
        delay = options.retry_delay * (2 ** (retry - 1) if options.retry_backoff else 1)
        return min(delay, options.retry_backoff_max) if options.retry_backoff else delay

    def _succeeded(self, delivery: Delivery, outcome: RunOutcome) -> None:
        outcome.status, outcome.exception = 'succeeded', None
        self.broker.ack(delivery)
        counters = self.counters
        with counters.lock:  # _count('succeeded') without its loop: this runs for nearly every message
            counters.succeeded += 1
            counters.settled += 1

    def _succeeded_many(self, deliveries: list[Delivery]) -> None:
        """Ack messages whose calls succeeded and count them; a broker error leaves them for redelivery."""
        try:
            self.broker.ack_many(deliveries)
        except Exception:
            self.logger.exception('could not settle %d messages of %r', len(deliveries), self.queue_name)
            return
        counters = self.counters
        with counters.lock:
            counters.succeeded += len(deliveries)
            counters.settled += len(deliveries)

    def _requeue(self, delivery: Delivery, outcome: RunOutcome) -> None:
        self.broker.requeue(delivery)
        self._count('requeued')
        outcome.status = 'requeued'
        self.logger.info('task %s asked to be requeued', outcome.task_id)

    def _retry_later(self, delivery: Delivery, outcome: RunOutcome, delay: float) -> None:
        """Publish the call again, due in ``delay`` s with its retry count, then ack this delivery."""
        due = time.time() + delay
        extra = {**outcome.extra, 'retries': outcome.retries + 1, 'eta': due}
        self.broker.publish_delayed(message.encode(outcome.arguments, extra), due)
        self.broker.ack(delivery)  # after the publish: a crash in between runs the call twice, never not at all
        self._count()
        outcome.status = 'retry_scheduled'

    def _dead_letter(self, delivery: Delivery, outcome: RunOutcome, exc: BaseException) -> None:
        body = message.dead_letter_body(delivery.body, 'failed', exception_type=type(exc).__name__,
                                        exception_message=str(exc), retries=outcome.retries)
        self.broker.dead_letter(delivery, body)
        self._count('failed', 'dead_lettered')
        outcome.status = 'dead_lettered'

    def _finish(self, outcome: RunOutcome, batch: Optional[_ChunkSettles] = None) -> None:
        outcome.finished = time.time()
        if batch is not None:  # told at the chunk's end
            batch.outcomes.append(outcome)
            return
        for middleware in self._settle_hooks:
            middleware.after_settle(outcome)

    def _count(self, *names: str) -> None:
        counters = self.counters
        with counters.lock:
            for name in names:
                setattr(counters, name, getattr(counters, name) + 1)
            counters.settled += 1

    def _log_failure(self, task_id: Any, attempt: int, max_retries: int, exc: BaseException) -> None:
        what = 'retrying' if attempt < max_retries else 'moving it to the dead-letter queue'
        self.logger.error('task %s failed (attempt %d of %d), %s: %s: %s', task_id, attempt + 1,
                          max_retries + 1, what, type(exc).__name__, exc,
                          exc_info=exc if self.options.is_print_detail_exception else None)


def _running_ids(outcome: RunOutcome) -> Optional[tuple[str, str]]:
    """(task id, root task id) of a running message, for the calls it publishes; None if it has no task id.

    The root is the message's own ``root_task_id``, else the message itself (a call from outside any task).
    """
    task_id = outcome.task_id
    if not task_id:
        return None
    root = outcome.extra.get('root_task_id')
    return task_id, root if isinstance(root, str) and root else task_id


@dataclass(slots=True)
class _ChunkSettles:
    """What a chunk of very short calls settles at its end: the deliveries whose calls succeeded (acked together)
    and every outcome, for the settle hooks."""

    acks: list[Delivery] = field(default_factory=list)
    outcomes: list[RunOutcome] = field(default_factory=list)


# What process() returns if preparing the message itself failed (the broker redelivers it).
_UNSETTLED = RunOutcome(None, {}, {}, 'unsettled')
_SKIP_COUNTERS = frozenset({'expired', 'filtered'})
