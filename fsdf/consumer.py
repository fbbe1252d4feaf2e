"""The fetch loop and slot accounting: fetch a batch -> pool -> :class:`fsdf.runner.MessageRunner` -> release.

A consumer never holds more unsettled messages than its pool can run at once (plus, while calls are
short, what the pool starts within SHORT_CALL_SECONDS, up to its prefetch margin, or CHUNKED_MARGIN
while calls are so short that they are handed over in chunks), so a crash or a
stop leaves little in flight, and prefetched messages that have not started are given back. What
happens to one message (decode, retries, settle) is the runner's job.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from fsdf import message, shutdown
from fsdf.brokers import Delivery, get_broker
from fsdf.concurrency import make_pool
from fsdf.config import settings
from fsdf.controls import ConsumerContext, Middleware, build_middleware, overriding
from fsdf.log import EveryNSeconds, get_logger
from fsdf.names import check_queue_name
from fsdf.secrets import redact
from fsdf.options import TaskOptions
from fsdf.publisher import Publisher
from fsdf.runner import MessageRunner
from fsdf.stats import RunCounters

FETCH_WAIT_SECONDS = 1.0  # how long one fetch blocks, so a stop is noticed within about a second
DRAIN_FETCH_WAIT_SECONDS = 0.1
# While calls take less than this on average, a consumer may hold the pool's prefetch margin beyond
# its concurrency, up to what its workers start within this time: those messages count as starting soon.
SHORT_CALL_SECONDS = 0.05
# While calls take less than CHUNK_BELOW_SECONDS on average, the pool gets a fetched batch in chunks of
# about CHUNK_SECONDS of work each instead of one message per hand-over: waking a thread per message
# cost more than a no-op call. While calls stay that short, a message waits about CHUNK_SECONDS at most
# for the ones before it in its chunk (an outlier call delays the rest of its chunk; the mean then adapts).
CHUNK_BELOW_SECONDS = 0.001
CHUNK_SECONDS = 0.0005
# While calls are chunked, a pool with a prefetch margin may hold up to this many beyond its workers (still no
# more than start within SHORT_CALL_SECONDS): half of 50 threads made a fetch of ~40 messages per round trip,
# and the take, its hand-over and the GIL switches around it cost more than the no-op calls (issue 19). At 255
# the workers still ran dry during each take: back from each socket call, the fetch thread waits for the GIL
# behind the busy workers (a take of ~300 no-op messages took 2.1 ms median, Redis's part ~0.5 ms). A take
# now brings about twice as many for the same waits (no-op tasks, 50 threads, Redis: 1.11x msg/s). SINGLE_THREAD
# keeps its own margin: it reads its next take while a batch runs, and a larger one did not change its rate.
CHUNKED_MARGIN = 1023


@dataclass(slots=True, eq=False)
class _Chunk:
    """Deliveries handed to the pool as one call, run in order: one entry of the waiting set, not one each."""

    deliveries: list[Delivery]


class Consumer:
    """Consumes one queue with one function; ``start()`` runs it in the background."""

    def __init__(self, queue_name: str, consuming_function: Callable[..., Any], options: TaskOptions,
                 signature: Optional[message.CallSignature] = None) -> None:
        self.function = consuming_function
        self.options = options
        self.broker_kind = options.broker_kind if options.broker_kind is not None else settings.DEFAULT_BROKER_KIND
        self.queue_name = check_queue_name(queue_name, self.broker_kind)  # before it names a log file
        self.logger = get_logger(queue_name, options.log_level, options.logger_prefix, options.create_logger_file)
        self.signature = signature or message.CallSignature(
            consuming_function, options.is_consuming_function_use_multi_params)
        self.broker = get_broker(self.broker_kind, queue_name)
        self.pool = options.specify_concurrent_pool or make_pool(
            options.concurrent_mode, options.concurrent_num, name=f'fsdf-{queue_name}')
        self._run = self._run_delivery_async if self.pool.runs_coroutines else self._run_delivery
        self._runs_inline = self.pool.runs_inline
        self.counters = RunCounters()
        self._stopping = threading.Event()
        self.context = ConsumerContext(queue_name, self.broker_kind, self.broker.consumer_id, options,
                                       self.counters, self._stopping, self.logger, self.pool,
                                       lambda: self._in_flight)
        self.middleware: list[Middleware] = build_middleware(queue_name, self.broker_kind, options, self.logger,
                                                             self.signature.name)
        self._fetch_gates = overriding(self.middleware, 'before_fetch')
        self.runner = MessageRunner(consuming_function, self.signature, options, self.broker, self.pool,
                                    self.counters, self.logger, self.middleware)
        self._process = self.runner.process
        self._publisher: Optional[Publisher] = None
        # The fetch loop waits on _slots; the per-message paths take its plain lock (a C-level with).
        self._slots_lock = threading.Lock()
        self._slots = threading.Condition(self._slots_lock)
        self._in_flight = 0           # fetched and not yet settled
        self._low_water = self.pool.resume_at  # a full consumer's fetch loop sleeps until in-flight falls to it
        self._margin = self.pool.prefetch_margin
        self._waiting: set[Union[Delivery, _Chunk]] = set()  # handed to the pool, not started
        self._stop_when_idle = False
        self._started = False
        self._thread: Optional[threading.Thread] = None
        self._fetch_errors = EveryNSeconds(10)
        # Paced starts (qps) run one per thread: a chunk would start its messages back to back, a burst.
        self._no_chunks = self.pool.runs_coroutines or bool(options.qps)
        self._reads_ahead = self._runs_inline and self.broker.reads_ahead and not self._no_chunks

    @property
    def controls(self) -> list[Middleware]:
        """The seed-era name of :attr:`middleware`."""
        return self.middleware

    @property
    def publisher_of_same_queue(self) -> Publisher:
        """A publisher to this consumer's queue (the seed's name; a task function has its own ``publisher``)."""
        if self._publisher is None:
            self._publisher = Publisher(self.queue_name, self.broker_kind, self.signature, self.options.middleware)
        return self._publisher

    # -- starting and stopping -----------------------------------------------------------
    def start_consuming_message(self) -> None:
        """Start consuming in a background thread and return at once (blocks with schedule_tasks_on_main_thread)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self.broker.start_leases()
        for middleware in self.middleware:
            middleware.on_start(self.context)
        self._started = True
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
        if self._started:
            self._started = False
            for middleware in self.middleware:
                middleware.on_stop(self.context)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the fetch loop has ended (a stop, a signal, a drain); False if ``timeout`` s ran out first."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def drain(self, timeout: Optional[float] = None) -> int:
        """Consume until the queue is empty and every taken message is settled; how many were settled."""
        settled_before = self.counters.settled
        self._stop_when_idle = True
        try:
            self.start_consuming_message()
            thread = self._thread  # set by start_consuming_message
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
                if thread.is_alive():
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
            for gate in self._fetch_gates:
                free = gate.before_fetch(free)
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
                self._run_inline(deliveries, free)
                continue
            self._hand_over(deliveries)

    def _hand_over(self, deliveries: list[Delivery]) -> None:
        """Hold fetched deliveries as waiting and submit them to the pool: in chunks while calls are very short
        (each chunk waits, is claimed and is released as one), else one by one."""
        mean_call = self.runner.mean_call
        units: list[Any]
        run: Callable[[Any], Any]
        if mean_call is None or mean_call >= CHUNK_BELOW_SECONDS or len(deliveries) < 2 or self._no_chunks:
            units, run = deliveries, self._run
        else:
            count = max(1, int(-(-len(deliveries) * mean_call // CHUNK_SECONDS)))  # about CHUNK_SECONDS each,
            size = -(-len(deliveries) // count)                                    # of even sizes
            units, run = [_Chunk(deliveries[i:i + size]) for i in range(0, len(deliveries), size)], self._run_chunk
        with self._slots:
            self._in_flight += len(deliveries)
            self._waiting.update(units)
        self.pool.submit_many(run, units)

    def _wait_for_free_slots(self) -> int:
        """How many messages to fetch now, after waiting while the consumer holds enough."""
        workers = self.pool.max_workers
        mean_call = self.runner.mean_call
        if self._margin and mean_call is not None and mean_call < SHORT_CALL_SECONDS:
            # Short calls: hold up to the margin beyond the workers, but no more than the workers start
            # within SHORT_CALL_SECONDS, and fetch once three quarters of it are used (in a batch); what is
            # left keeps every thread busy during the round trip.
            very_short = mean_call < CHUNK_BELOW_SECONDS
            chunked = very_short and not self._no_chunks and not self._runs_inline
            most = max(self._margin, CHUNKED_MARGIN) if chunked else self._margin
            margin = min(most, int(SHORT_CALL_SECONDS * workers / max(mean_call, 1e-9)))
            limit = workers + margin
            low_water = wait_from = workers + margin // 4
            if very_short:  # chunked calls: fetch half the limit at a time, not a few
                low_water = wait_from = limit // 2
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
            units, self._waiting = self._waiting, set()
            taken = [delivery for unit in units
                     for delivery in (unit.deliveries if isinstance(unit, _Chunk) else (unit,))]
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
            self._process(delivery)
        finally:
            self._release()

    async def _run_delivery_async(self, delivery: Delivery) -> None:
        """The same as ``_run_delivery`` for ASYNC mode, awaiting the call on the pool's loop."""
        if not self._claim(delivery):
            return
        try:
            await self.runner.process_async(delivery)
        finally:
            self._release()

    def _run_chunk(self, chunk: _Chunk) -> None:
        """Run a chunk of deliveries the pool started, in order: claimed and released once for the chunk."""
        with self._slots_lock:
            try:
                self._waiting.remove(chunk)
            except KeyError:  # stop() gave it back
                return
        self._run_batch(chunk.deliveries)

    def _run_inline(self, deliveries: list[Delivery], wanted: int) -> None:
        """SINGLE_THREAD: run a fetched batch in this thread, in order; once stopping, give back the rest.

        The per-message claim and release of the pools are taken once per batch: nothing else runs them.
        While batches come full, the next take is sent before a batch runs and its reply read after
        (``Broker.fetch_ahead_send``), so its round trip overlaps the calls; the messages it took are held
        like any fetched ones, and given back unstarted if the consumer is stopping by then.
        """
        while deliveries:
            ahead = False
            if self._reads_ahead and len(deliveries) >= wanted:  # a full batch: likely more waiting
                wanted = self._wait_for_free_slots()  # none in flight here: it does not wait
                ahead = self._send_ahead(wanted)
            with self._slots_lock:
                self._in_flight += len(deliveries)
            deliveries = self._run_batch(deliveries, self._receive_ahead if ahead else None)

    def _send_ahead(self, wanted: int) -> bool:
        """Start the next take now if the broker can and the fetch gates allow all of it; False if not started."""
        for gate in self._fetch_gates:
            if gate.before_fetch(wanted) < wanted:  # paused or held back: the plain fetch loop waits for it
                return False
        try:
            return self.broker.fetch_ahead_send(wanted)
        except Exception as exc:  # broker away: the fetch loop's next fetch retries and logs it
            self.logger.debug('read-ahead take from %r failed: %s', self.queue_name, redact(exc))
            return False

    def _receive_ahead(self) -> list[Delivery]:
        try:
            return self.broker.fetch_ahead_receive()
        except Exception as exc:  # what it took, if anything, the broker's lease check returns
            if self._fetch_errors.ready(time.monotonic()):
                self.logger.error('fetching from %r failed (will retry): %s', self.queue_name, redact(exc))
            return []

    def _run_batch(self, deliveries: list[Delivery],
                   read_ahead: Optional[Callable[[], list[Delivery]]] = None) -> list[Delivery]:
        """Run claimed deliveries in order in this thread; once stopping, give back the rest; release them all.

        ``read_ahead`` reads the reply of a take sent before the batch: its messages are returned to run
        next, or, once stopping, given back behind the batch's unstarted rest (so they keep their order).
        """
        started = 0
        ahead: list[Delivery] = []
        try:
            started = self.runner.process_many(deliveries, self._stopping.is_set)
        finally:
            try:
                if read_ahead is not None:
                    ahead = read_ahead()
                if started < len(deliveries) or self._stopping.is_set():
                    back, ahead = deliveries[started:] + ahead, []
                    if back:
                        self.broker.requeue_many(back)
            finally:  # a broker that fails to take them back redelivers them later; stop() must not wait
                with self._slots:
                    self._in_flight -= len(deliveries)
                    if self._in_flight <= self._low_water:
                        self._slots.notify_all()
        return ahead
