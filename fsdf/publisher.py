"""Publishing calls to a queue: one at a time or in batches, checked against the function first."""
from __future__ import annotations

import time
from itertools import islice
from typing import Any, Callable, Iterable, Optional, Sequence, TypeVar, Unpack

from fsdf import message
from fsdf.brokers import Broker, broker_class, get_broker
from fsdf.config import settings
from fsdf.controls import Middleware, overriding, registered_publish_hooks
from fsdf.controls.overrides import MessageOverrides, with_overrides
from fsdf.enums import BrokerEnum
from fsdf.names import check_queue_name
from fsdf.exceptions import BrokerUnreachableError
from fsdf.result import AsyncResult
from fsdf.secrets import redact

T = TypeVar('T')
RETRY_FIRST_DELAY = 0.05  # seconds before the second attempt; doubled each time up to RETRY_MAX_DELAY
RETRY_MAX_DELAY = 1.0


class Publisher:
    """Publishes to one queue. With a signature (a task's publisher) each call is checked before it leaves.

    Publishing builds nothing of the consume side: no pool, no consumer, no middleware state beyond
    the ``on_publish`` hooks of the task's ``middleware`` and of the process (:func:`fsdf.add_middleware`).

    While the broker is unreachable (its class's ``connection_errors``), a publish retries with
    backoff for up to ``PUBLISH_RETRY_SECONDS`` (0: not at all), then raises one
    ``BrokerUnreachableError`` naming the broker and queue. A publish that returned is on the broker;
    one retried after a reply was lost may be there twice (publishing is at-least-once).
    """

    def __init__(self, queue_name: str, broker_kind: Optional[BrokerEnum] = None,
                 signature: Optional[message.CallSignature] = None, middleware: Sequence[Middleware] = ()) -> None:
        self.broker_kind = BrokerEnum(broker_kind if broker_kind is not None else settings.DEFAULT_BROKER_KIND)
        self.queue_name = check_queue_name(queue_name, self.broker_kind)
        self.signature = signature
        self._publish_hooks = tuple(overriding(list(middleware), 'on_publish'))
        self._broker: Optional[Broker] = None
        # One body to the broker, returning once it is there: the broker's publish, or its group commit.
        self._send: Optional[Callable[[str], None]] = None
        self._errors: tuple[type[BaseException], ...] = ()  # the broker's connection_errors

    @property
    def broker(self) -> Broker:
        """The queue's broker, connected on first use."""
        if self._broker is None:
            errors = broker_class(self.broker_kind).connection_errors
            broker = self._retrying(errors, get_broker, self.broker_kind, self.queue_name)
            if settings.RUN_STATISTICS:  # the queue registers its broker kind, for tools that list queues
                from fsdf.records.writer import register_queue
                register_queue(self.queue_name, self.broker_kind.name)
            self._errors = broker.connection_errors
            self._send = broker.publish_group.publish if broker.publish_group else broker.publish
            self._broker = broker
        return self._broker

    def _on_broker(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)``, a publish to the broker, retried while the broker is unreachable."""
        return self._retrying(self.broker.connection_errors, call, *args)

    def _retrying(self, errors: tuple[type[BaseException], ...], call: Callable[..., T], *args: Any) -> T:
        """Retry on ``errors`` with backoff for up to PUBLISH_RETRY_SECONDS, then raise one clear error."""
        try:
            return call(*args)
        except errors as exc:
            return self._retry(exc, errors, call, *args)

    def _retry(self, first_error: BaseException, errors: tuple[type[BaseException], ...], call: Callable[..., T],
               *args: Any) -> T:
        """``_retrying`` after its first attempt raised ``first_error``."""
        exc, deadline, delay = first_error, time.monotonic() + settings.PUBLISH_RETRY_SECONDS, RETRY_FIRST_DELAY
        while True:
            now = time.monotonic()
            if now >= deadline:
                # from None: the client's own error may quote a connection URL; its gist is kept, redacted.
                raise BrokerUnreachableError(
                    f'could not publish to queue {self.queue_name!r} on {self.broker_kind.name}: the broker '
                    f'was unreachable for {settings.PUBLISH_RETRY_SECONDS} s (PUBLISH_RETRY_SECONDS); '
                    f'last error {type(exc).__name__}: {redact(exc)}') from None
            time.sleep(min(delay, deadline - now))  # backoff between attempts, not synchronisation
            delay = min(delay * 2, RETRY_MAX_DELAY)
            try:
                return call(*args)
            except errors as error:
                exc = error

    def publish(self, msg: dict[str, Any], *, task_id: Optional[str] = None, countdown: Optional[float] = None,
                eta: Any = None, priority: Optional[int] = None,
                **overrides: Unpack[MessageOverrides]) -> AsyncResult:
        """Publish one call given as its keyword-argument dict (an ``extra`` dict in it is kept).

        ``overrides`` (msg_expire_seconds, function_timeout, max_retry_times) apply to this message
        only and win over the task's options.
        """
        if overrides:
            msg = with_overrides(msg, dict(overrides))
        elif (task_id is None and countdown is None and eta is None and priority is None
              and type(msg) is dict and message.EXTRA not in msg):  # the common pub: push's path
            if self.signature is not None:
                self.signature.check_fits(msg)
            return self.publish_bound(msg)
        return self._publish_one(msg, task_id, countdown, eta, priority, check=True)

    pub = publish

    def publish_bound(self, arguments: dict[str, Any]) -> AsyncResult:
        """``publish`` of a call already bound by ``CallSignature.arguments_of``, so not checked twice."""
        if self._publish_hooks or registered_publish_hooks() or message.EXTRA in arguments:
            return self._publish_one(arguments, None, None, None, None, check=False)
        # The common push, in one frame: ~5 µs of Python besides the client's call (profile in docs/benchmarks.md).
        task_id, body = message.new_body(arguments)
        send = self._send or self._sender()
        try:
            send(body)
        except self._errors as exc:
            self._retry(exc, self._errors, send, body)
        return AsyncResult(task_id, self.broker_kind)

    def _sender(self) -> Callable[[str], None]:
        """``_send``, once the broker is connected."""
        self.broker  # noqa: B018  # connects, and sets _send and _errors
        assert self._send is not None
        return self._send

    def _publish_one(self, msg: dict[str, Any], task_id: Optional[str], countdown: Optional[float], eta: Any,
                     priority: Optional[int], check: bool) -> AsyncResult:
        body, extra = self._body(msg, task_id, countdown, eta, priority, check)
        if 'eta' in extra and extra['eta'] > time.time():
            self._on_broker(self.broker.publish_delayed, body, extra['eta'])
        elif priority is None:
            send = self._send or self._sender()
            self._on_broker(send, body)
        else:
            self._on_broker(self.broker.publish, body, priority)
        return AsyncResult(extra['task_id'], self.broker_kind)

    async def aio_publish(self, msg: dict[str, Any], **options: Any) -> AsyncResult:
        """``publish`` for async code: the broker round trip runs in a thread, so the event loop never waits."""
        # to_thread carries the context along, so a call published from inside a task keeps its parent_task_id.
        import asyncio  # loaded already (a coroutine is running); kept off fsdf's import
        return await asyncio.to_thread(self.publish, msg, **options)

    aio_pub = aio_publish

    def publish_many(self, msgs: Iterable[dict[str, Any]], *, countdown: Optional[float] = None,
                     eta: Any = None) -> list[AsyncResult]:
        """Publish many calls in batches (all delayed alike if countdown/eta is given)."""
        return self._publish_batches(msgs, countdown, eta, check=True)

    def publish_bound_many(self, calls: Iterable[dict[str, Any]], *, countdown: Optional[float] = None,
                           eta: Any = None) -> list[AsyncResult]:
        """``publish_many`` of calls already bound by ``CallSignature.arguments_of``, so not checked twice."""
        return self._publish_batches(calls, countdown, eta, check=False)

    def _publish_batches(self, msgs: Iterable[dict[str, Any]], countdown: Optional[float], eta: Any,
                         check: bool) -> list[AsyncResult]:
        results: list[AsyncResult] = []
        iterator, batch_size, kind = iter(msgs), self.broker.publish_batch_size, self.broker_kind
        # Without a due time or on_publish hooks, each message is new_body's (half the cost of _body).
        common = countdown is None and eta is None and not (self._publish_hooks or registered_publish_hooks())
        signature = self.signature if check else None
        while batch := list(islice(iterator, batch_size)):
            bodies, due = [], None
            for msg in batch:
                if common and type(msg) is dict and message.EXTRA not in msg:
                    if signature is not None:
                        signature.check_fits(msg)
                    (task_id, body), due = message.new_body(msg), None
                else:
                    body, extra = self._body(msg, None, countdown, eta, None, check)
                    task_id, due = extra['task_id'], extra.get('eta')  # the batch goes as its last message says
                bodies.append(body)
                results.append(AsyncResult(task_id, kind))
            if due is not None and due > time.time():
                self._on_broker(self.broker.publish_delayed_many, bodies, due)
            else:
                self._on_broker(self.broker.publish_many, bodies)
        return results

    def clear(self) -> None:
        """Remove every waiting message of the queue."""
        self.broker.purge()

    def get_message_count(self) -> int:
        """Messages waiting in the queue."""
        return self.broker.count()

    def _body(self, msg: dict[str, Any], task_id: Optional[str], countdown: Optional[float], eta: Any,
              priority: Optional[int], check: bool) -> tuple[str, dict[str, Any]]:
        if not isinstance(msg, dict):
            raise TypeError(f'a message must be a dict of keyword arguments, got {type(msg).__name__}')
        given_extra = None
        if message.EXTRA in msg:
            arguments = dict(msg)
            given_extra = arguments.pop(message.EXTRA) or {}
            task_id = task_id or given_extra.get('task_id')
        else:
            arguments = msg  # only read from here on
        if check and self.signature is not None:
            self.signature.check_fits(arguments)
        due = None if countdown is None and eta is None else due_time(countdown, eta)
        extra = message.new_extra(task_id, priority, due)
        if given_extra:
            extra = {**given_extra, **extra}
        hooks = registered_publish_hooks()
        if hooks or self._publish_hooks:  # no middleware that publishes: nothing to pay
            for middleware in (*self._publish_hooks, *hooks):
                middleware.on_publish(self.queue_name, arguments, extra)
        return message.encode(arguments, extra), extra


def due_time(countdown: Optional[float], eta: Any) -> Optional[float]:
    """Epoch seconds a delayed call is due at, from ``countdown`` seconds or an ``eta`` datetime/epoch."""
    if countdown is not None and eta is not None:
        raise TypeError('give countdown or eta, not both')
    if countdown is not None:
        return round(time.time() + float(countdown), 4)
    if eta is None:
        return None
    import datetime as dt  # here: only a call with an eta needs it (a worker's start does not, issue 19)
    if isinstance(eta, dt.datetime):
        return eta.timestamp()
    return float(eta)
