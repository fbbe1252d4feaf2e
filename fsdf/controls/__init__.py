"""fsdf's own middleware, each in its own module, chosen from a task's options; and the user's.

Users add middleware to one task with the ``middleware=[...]`` option, or to every consumer and
publisher of the process with :func:`add_middleware`.
"""
from __future__ import annotations

import importlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from fsdf.controls.base import ConsumerContext, Control, Middleware, RunOutcome, RunStatus, overriding
from fsdf.controls.expiry import MessageExpiry
from fsdf.controls.redis_needed import load_redis_control

if TYPE_CHECKING:
    from fsdf.enums import BrokerEnum
    from fsdf.options import TaskOptions

# The controls a task has only when an option asks for one, imported then (issue 19: a worker imports nothing
# it does not use; the window alone brings datetime). Still importable from here, as before.
_ON_DEMAND = {'DoNotRunWindow': 'fsdf.controls.window', 'RateGovernor': 'fsdf.controls.rate',
              'TaskFilter': 'fsdf.controls.filtering', 'filter_store': 'fsdf.controls.filtering'}

# Replaced whole on every change (never mutated), so publishers read them without a lock.
_registered: tuple[Middleware, ...] = ()
_registered_publish_hooks: tuple[Middleware, ...] = ()
_registered_lock = threading.Lock()


def add_middleware(middleware: Middleware) -> None:
    """Apply a middleware to every publish of this process from now on, and to consumers created from now on."""
    if not isinstance(middleware, Middleware):
        raise TypeError(f'middleware must be a fsdf.Middleware instance, got {type(middleware).__name__}')
    with _registered_lock:
        _set_registered((*_registered, middleware))


def remove_middleware(middleware: Middleware) -> None:
    """Stop applying a middleware given to :func:`add_middleware` (consumers already built keep it)."""
    with _registered_lock:
        remaining = list(_registered)
        remaining.remove(middleware)
        _set_registered(tuple(remaining))


def registered_middleware() -> list[Middleware]:
    """The process-wide middleware, in the order they were added."""
    return list(_registered)


def registered_publish_hooks() -> tuple[Middleware, ...]:
    """The process-wide middleware that override ``on_publish``; read on every publish, so never stale."""
    return _registered_publish_hooks


def _set_registered(middleware: tuple[Middleware, ...]) -> None:
    global _registered, _registered_publish_hooks
    _registered = middleware
    _registered_publish_hooks = tuple(overriding(list(middleware), 'on_publish'))


def __getattr__(name: str) -> Any:
    if name in _ON_DEMAND:
        return getattr(importlib.import_module(_ON_DEMAND[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def keeps_records(options: 'TaskOptions') -> bool:
    """Whether a consumer with these options keeps run records (``is_save_status`` or ``is_save_result``) or
    statistics (the ``RUN_STATISTICS`` setting): with neither, it has no records middleware."""
    from fsdf.config import settings
    conf = options.function_result_status_persistance_conf
    return bool(conf.is_save_status or conf.is_save_result or settings.RUN_STATISTICS)


def build_middleware(queue_name: str, broker_kind: 'BrokerEnum', options: 'TaskOptions',
                     logger: logging.Logger, function_name: str = '') -> list[Middleware]:
    """A consumer's middleware in the order they apply: fsdf's from its options, the task's, the process's.

    The window comes before the rate governor, so a closed window does not bank start credit.
    Expiry is always there because any message may ask for it in its ``extra``. The Redis-backed
    ones (distributed qps, heartbeats) are imported only when asked for: redis is an optional extra.
    The live state (pause gate, registry, minute line) comes first, so a paused queue banks no rate
    credit; the run recorder comes last of fsdf's own (fsdf.records).
    """
    live: list[Middleware] = []
    recorder: list[Middleware] = []
    if keeps_records(options):  # else fsdf.records is not imported at all (issue 19: a worker's start)
        from fsdf.records.middleware import consumer_middleware
        live, recorder = consumer_middleware(queue_name, function_name or queue_name, options)
    chain: list[Middleware] = [*live]
    if options.is_do_not_run_by_specify_time_effect:
        from fsdf.controls.window import DoNotRunWindow
        chain.append(DoNotRunWindow(options.do_not_run_by_specify_time))
    if options.qps:
        from fsdf.controls.rate import RateGovernor
        pacer = None
        if options.is_using_distributed_frequency_control:
            distributed_rate = load_redis_control('fsdf.controls.distributed_rate',
                                                  'is_using_distributed_frequency_control')
            pacer = distributed_rate.RedisPacer(queue_name, options.qps, logger)
        chain.append(RateGovernor(options.qps, pacer))
    chain.append(MessageExpiry(options.msg_expire_seconds))
    if options.do_task_filtering:
        from fsdf.controls.filtering import TaskFilter, filter_store
        chain.append(TaskFilter(filter_store(broker_kind, queue_name), options.task_filtering_expire_seconds))
    if options.is_using_rpc_mode:
        from fsdf.controls.rpc import RpcResultControl
        chain.append(RpcResultControl(broker_kind))
    if options.is_send_consumer_heartbeat_to_redis:
        heartbeat = load_redis_control('fsdf.controls.heartbeat', 'is_send_consumer_heartbeat_to_redis')
        chain.append(heartbeat.RedisHeartbeat())
    chain.extend(recorder)
    return [*chain, *options.middleware, *_registered]


__all__ = ['ConsumerContext', 'Control', 'Middleware', 'RunOutcome', 'RunStatus', 'add_middleware',
           'build_middleware', 'keeps_records', 'overriding', 'registered_middleware', 'registered_publish_hooks',
           'remove_middleware']
