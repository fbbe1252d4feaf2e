"""``fsdf dlq list | redrive | purge QUEUE``: the dead letters of a queue (``<queue>_dlq``, same broker).

Brokers have no "peek", so ``list`` takes up to ``--limit`` dead letters and gives them back
(their order in the dead-letter queue may change). ``redrive`` publishes each back to its queue
and then removes it from the dead-letter queue (at-least-once: a crash between the two leaves it in
both); a redriven message starts afresh: ``extra.dead_letter``, ``extra.retries`` and ``extra.eta``
are removed, and a body that was not JSON (kept as ``raw_body``) goes back as it first came.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from fsdf.brokers.base import Broker, Delivery
from fsdf.cli.common import OK, confirm, print_json, print_table, show_time
from fsdf.enums import BrokerEnum
from fsdf.names import DEAD_LETTER_SUFFIX

FETCH_BATCH = 100
FETCH_WAIT_SECONDS = 0.3
"""How long one fetch waits for a dead letter: an idle dead-letter queue answers within this."""
DEFAULT_LIMIT = 20
_FRESH_START = ('dead_letter', 'retries', 'eta')


def add_commands(commands: Any) -> None:
    """Register ``fsdf dlq`` and its three actions."""
    dlq = commands.add_parser('dlq', help="a queue's dead letters: list, redrive to the queue, purge")
    actions = dlq.add_subparsers(dest='action', metavar='ACTION', required=True)
    listing = actions.add_parser('list', help='show dead letters (taken and given back)')
    redrive = actions.add_parser('redrive', help='move dead letters back to their queue, fresh')
    purge = actions.add_parser('purge', help='remove every dead letter (asks first)')
    for parser, handler in ((listing, cmd_list), (redrive, cmd_redrive), (purge, cmd_purge)):
        parser.add_argument('queue', help='the queue whose dead letters these are (not the _dlq name)')
        parser.add_argument('--broker', metavar='KIND', help='the broker kind; default: the one the queue registered')
        parser.add_argument('--json', action='store_true', help='print JSON for scripts')
        parser.set_defaults(handler=handler)
    listing.add_argument('--limit', type=int, default=DEFAULT_LIMIT,
                         help=f'at most this many (default {DEFAULT_LIMIT})')
    redrive.add_argument('--limit', type=int, default=None, help='at most this many (default: all)')
    purge.add_argument('--yes', '-y', action='store_true', help='do not ask')


def _dead_letter_queue(args: argparse.Namespace) -> tuple[BrokerEnum, Broker, Broker]:
    """The broker kind, the queue and its dead-letter queue."""
    from fsdf.brokers import get_broker
    from fsdf.cli.queue_commands import broker_kind_of
    kind = broker_kind_of(args.queue, args.broker)
    queue = get_broker(kind, args.queue)
    return kind, queue, queue.dlq


def _take(dlq: Broker, limit: float) -> list[Delivery]:
    """Up to ``limit`` dead letters, taken (each must be acked or given back)."""
    taken: list[Delivery] = []
    while len(taken) < limit:
        batch = dlq.fetch(int(min(FETCH_BATCH, limit - len(taken))), FETCH_WAIT_SECONDS)
        if not batch:
            break
        taken.extend(batch)
    return taken


def _summary(body: Any) -> dict[str, Any]:
    """What a person wants of a dead letter: its task, why and when, and its arguments."""
    from fsdf.exceptions import MalformedMessageError
    from fsdf.message import decode
    try:
        arguments, extra = decode(body)
    except MalformedMessageError:
        return {'task_id': None, 'reason': 'unreadable', 'arguments': None, 'body': str(body)[:2000]}
    why = extra.get('dead_letter') or {}
    return {'task_id': extra.get('task_id'), 'reason': why.get('reason'), 'time': why.get('time'),
            'exception_type': why.get('exception_type'), 'error': why.get('exception_message') or why.get('error'),
            'arguments': arguments}


def cmd_list(args: argparse.Namespace) -> int:
    """``fsdf dlq list QUEUE``."""
    _, _, dlq = _dead_letter_queue(args)
    taken = _take(dlq, max(args.limit, 1))
    try:
        rows = [_summary(delivery.body) for delivery in taken]
    finally:
        dlq.requeue_many(taken)
    if args.json:
        print_json(rows)
        return OK
    print_table(rows, [('task id', lambda r: r['task_id']), ('dead since', lambda r: show_time(r.get('time'))),
                       ('reason', lambda r: r['reason']), ('exception', lambda r: r.get('exception_type')),
                       ('error', lambda r: r.get('error')),
                       ('arguments', lambda r: json.dumps(r['arguments'], default=str))],
                empty=f'(no dead letters in {args.queue}{DEAD_LETTER_SUFFIX})')
    return OK


def fresh_body(body: Any) -> str:
    """A dead letter's body as its queue should get it back (see the module docstring)."""
    from fsdf.exceptions import MalformedMessageError
    from fsdf.message import decode, encode
    try:
        arguments, extra = decode(body)
    except MalformedMessageError:
        return body.decode('utf-8', 'replace') if isinstance(body, bytes) else str(body)
    if set(arguments) == {'raw_body'} and set(extra) <= {'dead_letter'}:
        return str(arguments['raw_body'])  # it never was JSON: give back what first came
    for key in _FRESH_START:
        extra.pop(key, None)
    return encode(arguments, extra)


def cmd_redrive(args: argparse.Namespace) -> int:
    """``fsdf dlq redrive QUEUE``: publish back, then remove from the dead-letter queue, one batch at a time."""
    _, queue, dlq = _dead_letter_queue(args)
    limit = float('inf') if args.limit is None else max(args.limit, 0)
    moved = 0
    while moved < limit:
        taken = _take(dlq, min(FETCH_BATCH, limit - moved))
        if not taken:
            break
        try:
            queue.publish_many([fresh_body(delivery.body) for delivery in taken])
        except BaseException:
            dlq.requeue_many(taken)  # nothing lost: they stay dead letters
            raise
        for delivery in taken:
            dlq.ack(delivery)
        moved += len(taken)
    if args.json:
        print_json({'queue': args.queue, 'redriven': moved})
    else:
        print(f'moved {moved} dead letters back to {args.queue!r}')
    return OK


def cmd_purge(args: argparse.Namespace) -> int:
    """``fsdf dlq purge QUEUE [--yes]``."""
    from fsdf.cli.queue_commands import count_or_none
    kind, _, dlq = _dead_letter_queue(args)
    waiting = count_or_none(kind, dlq.queue_name)
    how_many = 'every' if waiting is None else f'the {waiting}'
    confirm(f'remove {how_many} dead letters of {args.queue!r}?', args.yes,
            f'refusing to purge the dead letters of {args.queue!r}')
    dlq.purge()
    if args.json:
        print_json({'queue': args.queue, 'purged': waiting})
    else:
        print(f'purged the dead letters of {args.queue!r}' + (f': {waiting}' if waiting is not None else ''))
    return OK
