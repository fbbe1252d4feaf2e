"""``fsdf queues | consumers | pause | resume | purge | push``: live state and steering of queues.

A queue's broker kind comes from the registry in the run store (every queue registers it when first
published or consumed) or from ``--broker``. LOCAL_PYTHON_QUEUE is refused for anything that
touches messages: its queue lives in the memory of the one process that uses it.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional

from fsdf.cli.common import (
    NOT_FOUND, OK, REFUSED, USAGE, CliError, checked_queue, confirm, parse_json_object, print_json, print_table,
    show_seconds, show_time)
from fsdf.enums import BrokerEnum


def add_commands(commands: Any) -> None:
    """Register this group's subcommands."""
    from fsdf.cli import dlq_commands
    queues = commands.add_parser('queues',
                                 help='every registered queue: broker, waiting, dead letters, rate, time left')
    queues.add_argument('--no-count', action='store_true', help='do not ask the brokers how many messages wait')
    _json_option(queues).set_defaults(handler=cmd_queues)
    consumers = commands.add_parser('consumers', help='registered consumers (alive and recently gone)')
    consumers.add_argument('--queue', help='only the consumers of this queue')
    consumers.add_argument('--host', help='only the consumers on this host')
    consumers.add_argument('--alive', action='store_true', help='only the consumers still beating')
    _json_option(consumers).set_defaults(handler=cmd_consumers)
    for name, handler, text in (('pause', cmd_pause, 'its consumers fetch nothing within 2 s; running calls finish'),
                                ('resume', cmd_resume, 'its consumers fetch again within 2 s')):
        command = commands.add_parser(name, help=f'{name} a queue everywhere: {text}')
        command.add_argument('queue')
        _json_option(command).set_defaults(handler=handler)
    purge = commands.add_parser('purge', help='remove every waiting message of a queue (asks first)')
    _broker_options(purge)
    purge.add_argument('--yes', '-y', action='store_true', help='do not ask')
    _json_option(purge).set_defaults(handler=cmd_purge)
    push = commands.add_parser('push', help='publish one call to a queue')
    _broker_options(push)
    push.add_argument('--kwargs', default='{}', help='the call\'s keyword arguments as a JSON object')
    push.add_argument('--task-id', help='the task id to give it (default: a new one)')
    push.add_argument('--countdown', type=float, help='run it no sooner than this many seconds from now')
    _json_option(push).set_defaults(handler=cmd_push)
    dlq_commands.add_commands(commands)


def _json_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument('--json', action='store_true', help='print JSON for scripts instead of a table')
    return parser


def _broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('queue')
    parser.add_argument('--broker', metavar='KIND',
                        help='the broker kind (e.g. REDIS_ACK_ABLE); default: the one the queue registered')


# -- brokers of named queues ----------------------------------------------------------------------
def broker_kind_of(queue: str, given: Optional[str]) -> BrokerEnum:
    """The broker kind of a queue the command will touch: ``--broker`` or the registry's.

    CliError: USAGE for an unknown kind or a bad name, NOT_FOUND for an unregistered queue without
    ``--broker``, REFUSED for LOCAL_PYTHON_QUEUE.
    """
    from fsdf.brokers import built_broker_kinds
    from fsdf.names import check_queue_name
    checked_queue(queue)
    if given is not None:
        kinds = {kind.name.lower(): kind for kind in built_broker_kinds()}
        kind = kinds.get(given.lower())
        if kind is None:
            raise CliError(USAGE, f'unknown broker kind {given!r}; built: {", ".join(k.name for k in kinds.values())}')
    else:
        from fsdf.records.queries import default_store
        registered = {row['name']: row['broker_kind'] for row in default_store().queues()}
        if not registered.get(queue):
            raise CliError(NOT_FOUND, f'queue {queue!r} is not registered in the run store (no process has '
                                      f'published to or consumed it yet); say its broker with --broker KIND')
        kind = BrokerEnum[registered[queue]]
    if kind is BrokerEnum.LOCAL_PYTHON_QUEUE:
        raise CliError(REFUSED, f'queue {queue!r} is a LOCAL_PYTHON_QUEUE: it lives in the memory of the process '
                                f'that uses it, so no other process can reach its messages')
    try:
        check_queue_name(queue, kind)
    except ValueError as exc:
        raise CliError(USAGE, str(exc)) from None
    return kind


def broker_numbers(kind: BrokerEnum, queue: str) -> dict[str, Any]:
    """``waiting``, ``delayed``, ``dead_letters`` and ``oldest_age`` of ``queue``, each None where unknown.

    None for LOCAL_PYTHON_QUEUE, whose messages live in another process (see :func:`count_or_none`).
    """
    from fsdf.records.queries import delayed_messages, oldest_message_age
    if kind is BrokerEnum.LOCAL_PYTHON_QUEUE:
        return {'waiting': None, 'delayed': None, 'dead_letters': None, 'oldest_age': None}
    return {'waiting': count_or_none(kind, queue), 'delayed': delayed_messages(queue, kind),
            'dead_letters': count_or_none(kind, queue + '_dlq'), 'oldest_age': oldest_message_age(queue, kind)}


def count_or_none(kind: BrokerEnum, queue: str) -> Optional[int]:
    """Messages waiting in ``queue``; None where the broker cannot count, is away, or is in another process."""
    if kind is BrokerEnum.LOCAL_PYTHON_QUEUE:
        return None  # a fresh, empty in-process queue here would say 0, which would be wrong
    from fsdf.records.queries import waiting_messages
    return waiting_messages(queue, kind)


# -- commands -----------------------------------------------------------------------------------
def cmd_queues(args: argparse.Namespace) -> int:
    """``fsdf queues``: the registry's queues with live numbers."""
    from fsdf.records.queries import list_queues
    rows = list_queues(count_waiting=False)
    for row in rows:
        kind = BrokerEnum[row['broker_kind']] if row.get('broker_kind') else None
        if kind is not None and not args.no_count:
            row.update(broker_numbers(kind, row['name']))
            if row['waiting'] is not None and row['rate'] > 0 and not row.get('paused'):  # paused: no end in sight
                row['seconds_left'] = round(row['waiting'] / row['rate'], 1)
    if args.json:
        print_json(rows)
        return OK
    print_table(rows, [
        ('queue', lambda r: r['name']), ('broker', lambda r: r.get('broker_kind')),
        ('waiting', lambda r: r.get('waiting')), ('delayed', lambda r: r.get('delayed')),
        ('dead', lambda r: r.get('dead_letters')), ('oldest', lambda r: show_seconds(r.get('oldest_age'))),
        ('consumers', lambda r: r['consumers_alive']), ('rate/s', lambda r: r['rate']),
        ('time left', lambda r: 'paused' if r.get('paused') else show_seconds(r.get('seconds_left'))),
        ('paused', lambda r: 'PAUSED' if r.get('paused') else '')], empty='(no queues registered yet)')
    return OK


def cmd_consumers(args: argparse.Namespace) -> int:
    """``fsdf consumers``: who consumes what, where, how fast."""
    from fsdf.records.queries import list_consumers
    queue = checked_queue(args.queue) if args.queue else None
    rows = list_consumers(queue=queue, host=args.host, include_gone=not args.alive)
    if args.json:
        print_json(rows)
        return OK
    print_table(rows, [
        ('queue', lambda r: r.get('queue')), ('host', lambda r: r.get('host')), ('pid', lambda r: r.get('pid')),
        ('broker', lambda r: r.get('broker_kind')),
        ('mode', lambda r: f"{r.get('concurrent_mode')} x{r.get('concurrency')}"), ('qps', lambda r: r.get('qps')),
        ('succeeded', lambda r: r.get('counters', {}).get('succeeded')),
        ('failed', lambda r: r.get('counters', {}).get('failed')),
        ('rate/s', lambda r: r.get('rates', {}).get('settled')), ('started', lambda r: show_time(r.get('start_time'))),
        ('last beat', lambda r: f"{show_seconds(r.get('beat_age'))} ago"),
        ('state', lambda r: ('paused' if r.get('paused') else 'alive') if r['alive'] else 'gone')],
        empty='(no consumers registered)')
    return OK


def cmd_pause(args: argparse.Namespace) -> int:
    """``fsdf pause QUEUE``."""
    return _set_paused(args, True)


def cmd_resume(args: argparse.Namespace) -> int:
    """``fsdf resume QUEUE``."""
    return _set_paused(args, False)


def _set_paused(args: argparse.Namespace, paused: bool) -> int:
    import sys

    from fsdf.records.queries import default_store, pause_queue, resume_queue
    queue = checked_queue(args.queue)
    known = any(row['name'] == queue for row in default_store().queues())
    (pause_queue if paused else resume_queue)(queue)
    if not known:
        print(f'note: queue {queue!r} is not registered yet (no process has used it); the flag waits for it',
              file=sys.stderr)
    if args.json:
        print_json({'queue': queue, 'paused': paused, 'registered': known})
    else:
        print(f"{'paused' if paused else 'resumed'} {queue!r}: its consumers "
              f"{'fetch nothing' if paused else 'fetch again'} within 2 s")
    return OK


def cmd_purge(args: argparse.Namespace) -> int:
    """``fsdf purge QUEUE [--yes]``: empties the queue (not its dead letters: ``fsdf dlq purge``)."""
    from fsdf.brokers import get_broker
    kind = broker_kind_of(args.queue, args.broker)
    waiting = count_or_none(kind, args.queue)
    how_many = 'every' if waiting is None else f'the {waiting}'
    confirm(f'remove {how_many} waiting messages of {args.queue!r} on {kind.name}?', args.yes,
            f'refusing to purge {args.queue!r}')
    get_broker(kind, args.queue).purge()
    if args.json:
        print_json({'queue': args.queue, 'broker_kind': kind.name, 'purged': waiting})
    else:
        print(f'purged {args.queue!r} on {kind.name}' + (f': {waiting} messages' if waiting is not None else ''))
    return OK


def cmd_push(args: argparse.Namespace) -> int:
    """``fsdf push QUEUE --kwargs '{...}'``: publish one call (not checked against the function, unknown here)."""
    from fsdf.publisher import Publisher
    kwargs = parse_json_object(args.kwargs, '--kwargs')
    kind = broker_kind_of(args.queue, args.broker)
    result = Publisher(args.queue, kind).publish(kwargs, task_id=args.task_id, countdown=args.countdown)
    if args.json:
        print_json({'queue': args.queue, 'broker_kind': kind.name, 'task_id': result.task_id})
    else:
        print(result.task_id)
    return OK
