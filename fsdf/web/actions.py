"""The dashboard's actions: pause, resume, purge, dead-letter re-drive and delete, re-publish a run.

Each is a plain function over the query functions or the queue's broker (found through the
registry's broker kind); the routes in :mod:`fsdf.web.app` check the token, the cross-site guard
and read-only mode before calling one. A dead-letter queue is read by taking messages and giving
back the ones not acted on, at most ``DLQ_SCAN_MOST`` per call (a DLQ holds failures, not traffic);
brokers whose ``requeue`` puts a message at the back leave the DLQ in a new order, never lose one.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

from fsdf.brokers import Broker, Delivery, get_broker
from fsdf.enums import BrokerEnum
from fsdf.exceptions import MalformedMessageError
from fsdf.message import decode, encode
from fsdf.records import queries
from fsdf.records.store import RunStore
from fsdf.web.params import BadRequest

DLQ_SCAN_MOST = 10_000
DLQ_LIST_MOST = 200
_FETCH_BATCH = 100
_FETCH_WAIT_SECONDS = 0.2


def queue_kind(name: str, store: Optional[RunStore]) -> BrokerEnum:
    """The broker kind a queue registered with; LookupError when the registry does not know the queue or its kind."""
    row = next((q for q in queries.list_queues(count_waiting=False, store=store) if q['name'] == name), None)
    if row is None or not row.get('broker_kind'):
        raise LookupError(f'no queue {name!r} with a known broker is registered')
    return BrokerEnum[row['broker_kind']]


def queue_broker(name: str, store: Optional[RunStore]) -> Broker:
    """The broker of a registered queue (this process's one instance of it)."""
    return get_broker(queue_kind(name, store), name)


def pause(name: str, store: Optional[RunStore]) -> dict[str, Any]:
    queue_broker(name, store)  # a known queue only: a typo must not create a paused phantom
    queries.pause_queue(name, store=store)
    return {'queue': name, 'paused': True}


def resume(name: str, store: Optional[RunStore]) -> dict[str, Any]:
    queue_broker(name, store)
    queries.resume_queue(name, store=store)
    return {'queue': name, 'paused': False}


def purge(name: str, body: dict[str, Any], store: Optional[RunStore]) -> dict[str, Any]:
    """Remove every waiting message; ``body['confirm']`` must repeat the queue's name."""
    if body.get('confirm') != name:
        raise BadRequest(f'purging removes every waiting message: send {{"confirm": "{name}"}} to confirm')
    broker = queue_broker(name, store)
    before = _count(broker)
    broker.purge()
    return {'queue': name, 'purged': before}


def _count(broker: Broker) -> Optional[int]:
    try:
        return broker.count()
    except NotImplementedError:
        return None


def _described(delivery: Delivery) -> dict[str, Any]:
    """What the dead-letters page shows of one message: its task id, reason, exception and arguments."""
    try:
        arguments, extra = decode(delivery.body)
    except MalformedMessageError:
        return {'task_id': None, 'reason': 'malformed', 'arguments': None}
    note = extra.get('dead_letter')
    dead: dict[str, Any] = note if isinstance(note, dict) else {}
    return {'task_id': extra.get('task_id'), 'reason': dead.get('reason'), 'time': dead.get('time'),
            'exception_type': dead.get('exception_type'), 'error': dead.get('exception') or dead.get('error'),
            'publish_time': extra.get('publish_time'), 'arguments': json.dumps(arguments, default=str)[:2000]}


def _walk_dlq(dlq: Broker, act: Callable[[Delivery], bool], most: int, act_most: int = DLQ_SCAN_MOST) -> int:
    """Take up to ``most`` messages, stopping once ``act`` settled ``act_most``; ``act`` returns True when it
    settled one, else the message goes back (after the walk). How many were settled."""
    taken: list[Delivery] = []
    acted = 0
    try:
        while len(taken) + acted < most and acted < act_most:
            batch = dlq.fetch(min(_FETCH_BATCH, most - len(taken) - acted), _FETCH_WAIT_SECONDS)
            if not batch:
                break
            for delivery in batch:
                if acted < act_most and act(delivery):
                    acted += 1
                else:
                    taken.append(delivery)
    finally:
        dlq.requeue_many(taken)
    return acted


def dlq_list(name: str, store: Optional[RunStore], most: int = DLQ_LIST_MOST) -> dict[str, Any]:
    """The first ``most`` dead letters of a queue with their reasons, and the DLQ's size where the broker counts."""
    dlq = queue_broker(name, store).dlq
    shown: list[dict[str, Any]] = []

    def show(delivery: Delivery) -> bool:
        shown.append(_described(delivery))
        return False  # every message goes back
    _walk_dlq(dlq, show, most)
    return {'queue': name, 'messages': shown, 'count': _count(dlq)}


def _redriven(body: Any) -> str:
    """A dead letter's body as it was first published: the ``dead_letter`` note removed."""
    arguments, extra = decode(body)
    extra.pop('dead_letter', None)
    if set(arguments) == {'raw_body'} and not extra:
        return str(arguments['raw_body'])  # a malformed message goes back as the bytes it was
    return encode(arguments, extra)


def _matches(delivery: Delivery, task_id: Optional[str]) -> bool:
    if task_id is None:
        return True
    try:
        return decode(delivery.body)[1].get('task_id') == task_id
    except MalformedMessageError:
        return False


def dlq_redrive(name: str, body: dict[str, Any], store: Optional[RunStore]) -> dict[str, Any]:
    """Publish dead letters back to their queue: ``{"task_id": ...}`` for one, ``{"all": true}`` for all."""
    task_id = _one_or_all(body)
    broker = queue_broker(name, store)

    def redrive(delivery: Delivery) -> bool:
        if not _matches(delivery, task_id):
            return False
        broker.publish(_redriven(delivery.body))
        broker.dlq.ack(delivery)
        return True
    return {'queue': name, 'redriven': _walk_dlq(broker.dlq, redrive, DLQ_SCAN_MOST, 1 if task_id else DLQ_SCAN_MOST)}


def dlq_delete(name: str, body: dict[str, Any], store: Optional[RunStore]) -> dict[str, Any]:
    """Delete dead letters for good: ``{"task_id": ...}`` for one, ``{"all": true}`` for all."""
    task_id = _one_or_all(body)
    dlq = queue_broker(name, store).dlq

    def delete(delivery: Delivery) -> bool:
        if not _matches(delivery, task_id):
            return False
        dlq.ack(delivery)
        return True
    return {'queue': name, 'deleted': _walk_dlq(dlq, delete, DLQ_SCAN_MOST, 1 if task_id else DLQ_SCAN_MOST)}


def _one_or_all(body: dict[str, Any]) -> Optional[str]:
    task_id = body.get('task_id')
    if body.get('all') is True and task_id is None:
        return None
    if isinstance(task_id, str) and task_id and not body.get('all'):
        return task_id
    raise BadRequest('send {"task_id": "..."} for one message or {"all": true} for all of them')


def republish(task_id: str, store: Optional[RunStore]) -> dict[str, Any]:
    """Publish a recorded call again to its queue, as a new task (a new task id, no parent)."""
    from fsdf.publisher import Publisher
    record = queries.get_run(task_id, store=store)
    if record is None:
        raise LookupError(f'no record of task {task_id!r}')
    try:
        arguments = json.loads(record.get('arguments') or 'null')
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise BadRequest('this record keeps no whole arguments (cut at 10,000 characters, or none recorded)')
    result = Publisher(record['queue'], queue_kind(record['queue'], store)).publish(arguments)
    return {'queue': record['queue'], 'task_id': result.task_id, 'republished_from': task_id}
