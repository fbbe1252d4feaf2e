"""The middleware API: small components around fetching, running and publishing a call.

fsdf's own steps (rate, expiry, filtering, RPC results, heartbeats, the do-not-run window) are
middleware built from a task's options; users add their own with the ``middleware=[...]`` option
or :func:`fsdf.add_middleware`. A middleware overrides only the hooks it needs, and only the
hooks some middleware overrides are called per message, so an unused hook costs nothing.

A middleware sees a narrow :class:`ConsumerContext` (queue, broker kind, consumer id, options,
counters, a stop event, a logger, the pool), never the consumer itself.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

if TYPE_CHECKING:
    from fsdf.concurrency.base import WorkerPool
    from fsdf.enums import BrokerEnum
    from fsdf.options import TaskOptions
    from fsdf.stats import RunCounters

RunStatus = Literal['running', 'succeeded', 'dead_lettered', 'requeued', 'retry_scheduled', 'delayed',
                    'expired', 'filtered', 'malformed']
"""What became of a message. Middleware may add their own skip reasons beside these."""


@dataclass(slots=True)
class RunOutcome:
    """What became of one message, as ``after_settle`` sees it.

    ``retries`` is how many times the call was retried (across redeliveries, for delayed retries);
    ``started``/``finished`` are epoch seconds (0 when the function never ran).
    """

    task_id: Optional[str]
    arguments: dict[str, Any]
    extra: dict[str, Any]
    status: str
    result: Any = None
    exception: Optional[BaseException] = None
    retries: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def duration(self) -> float:
        """Seconds from the start of the first attempt to the settle, 0 if nothing ran."""
        return self.finished - self.started if self.started and self.finished else 0.0


@dataclass(frozen=True)
class ConsumerContext:
    """What a middleware may know of the consumer it serves."""

    queue_name: str
    broker_kind: 'BrokerEnum'
    consumer_id: str
    options: 'TaskOptions'
    counters: 'RunCounters'
    stopping: threading.Event
    """Set once the consumer is asked to stop; waits inside hooks should use it."""
    logger: logging.Logger
    pool: 'WorkerPool'
    in_flight: Callable[[], int] = lambda: 0
    """How many messages the consumer holds now (fetched, not yet settled): read-only, cheap, any thread."""


class Middleware:
    """Base class of middleware; every hook does nothing by default.

    Consumer hooks run in this order: ``on_start`` once, then per fetch ``before_fetch`` (in the
    fetch thread; it may block), per message ``skip_reason`` before the call and ``after_settle``
    once its outcome is decided (``after_settle_many`` once per chunk of very short calls), and
    ``on_stop`` when the consumer stops. ``on_publish`` runs in
    the publishing thread for every message published to a queue the middleware applies to.
    """

    def on_start(self, context: ConsumerContext) -> None:
        """The consumer starts consuming."""

    def on_stop(self, context: ConsumerContext) -> None:
        """The consumer stopped: it fetches no more and its running calls finished (or its grace ran out)."""

    def before_fetch(self, wanted: int) -> int:
        """How many messages the consumer may fetch now, at most ``wanted``; may block (a closed window)."""
        return wanted

    def skip_reason(self, arguments: dict[str, Any], extra: dict[str, Any]) -> Optional[str]:
        """A reason to ack the message without running it ('expired', 'filtered', your own), or None."""
        return None

    def after_settle(self, outcome: RunOutcome) -> None:
        """A message is settled: run, dead-lettered, requeued, scheduled for a retry or skipped."""

    def after_settle_many(self, outcomes: list[RunOutcome]) -> None:
        """Messages one thread ran back to back (a chunk of calls under a millisecond) are settled, in order.

        Called at the chunk's end instead of ``after_settle`` per message; by default it calls ``after_settle``
        for each. Override ``after_settle``, and this too only to do a chunk's work in one call.
        """
        for outcome in outcomes:
            self.after_settle(outcome)

    def on_publish(self, queue_name: str, arguments: dict[str, Any], extra: dict[str, Any]) -> None:
        """A message is about to be published; keys added to ``extra`` travel with it."""


Control = Middleware
"""The name fsdf's own middleware had before the API opened; kept so older imports work."""


def overriding(middleware: list[Middleware], hook: str) -> list[Middleware]:
    """The middleware whose class overrides ``hook``: only these are called for it."""
    default = getattr(Middleware, hook)
    return [m for m in middleware if getattr(type(m), hook) is not default]
