"""Publishing calls to a queue: one at a time or in batches, checked against the function first."""
from __future__ import annotations

from itertools import islice
from typing import Any, Iterable, Optional

from fsdf import message
from fsdf.brokers import Broker, get_broker
from fsdf.config import settings
from fsdf.enums import BrokerEnum
from fsdf.result import AsyncResult

PUBLISH_BATCH = 1000


class Publisher:
    """Publishes to one queue. With a signature (a task's publisher) each call is checked before it leaves."""

    def __init__(self, queue_name: str, broker_kind: Optional[BrokerEnum] = None,
                 signature: Optional[message.CallSignature] = None) -> None:
        self.queue_name = queue_name
        self.broker_kind = BrokerEnum(broker_kind if broker_kind is not None else settings.DEFAULT_BROKER_KIND)
        self.signature = signature
        self._broker: Optional[Broker] = None

    @property
    def broker(self) -> Broker:
        """The queue's broker, connected on first use."""
        if self._broker is None:
            self._broker = get_broker(self.broker_kind, self.queue_name)
        return self._broker

    def publish(self, msg: dict[str, Any], *, task_id: Optional[str] = None, countdown: Optional[float] = None,
                eta: Any = None, priority: Optional[int] = None) -> AsyncResult:
        """Publish one call given as its keyword-argument dict (an ``extra`` dict in it is kept)."""
        body, extra = self._body(msg, task_id, countdown, eta, priority)
        self.broker.publish(body, priority)
        return AsyncResult(extra['task_id'])

    pub = publish

    def publish_many(self, msgs: Iterable[dict[str, Any]]) -> list[AsyncResult]:
        """Publish many calls in batches; each is checked before any batch is sent."""
        results: list[AsyncResult] = []
        iterator = iter(msgs)
        while batch := list(islice(iterator, PUBLISH_BATCH)):
            bodies = []
            for msg in batch:
                body, extra = self._body(msg, None, None, None, None)
                bodies.append(body)
                results.append(AsyncResult(extra['task_id']))
            self.broker.publish_many(bodies)
        return results

    def clear(self) -> None:
        """Remove every waiting message of the queue."""
        self.broker.purge()

    def get_message_count(self) -> int:
        """Messages waiting in the queue."""
        return self.broker.count()

    def _body(self, msg: dict[str, Any], task_id: Optional[str], countdown: Optional[float], eta: Any,
              priority: Optional[int]) -> tuple[str, dict[str, Any]]:
        if not isinstance(msg, dict):
            raise TypeError(f'a message must be a dict of keyword arguments, got {type(msg).__name__}')
        if countdown is not None or eta is not None:
            raise NotImplementedError('delayed messages (countdown/eta) are not built in this version of fsdf')
        arguments = dict(msg)
        given_extra = arguments.pop(message.EXTRA, None) or {}
        if self.signature is not None:
            self.signature.check_fits(arguments)
        extra = message.new_extra(task_id or given_extra.get('task_id'), priority=priority)
        extra = {**given_extra, **extra}
        return message.encode(arguments, extra), extra
