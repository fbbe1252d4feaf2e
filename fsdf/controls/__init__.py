"""Controls: small steps around the call, each in its own module, chosen from a task's options."""
from __future__ import annotations

from typing import TYPE_CHECKING

from fsdf.controls.base import Control, RunOutcome
from fsdf.controls.expiry import MessageExpiry
from fsdf.controls.filtering import TaskFilter, filter_store
from fsdf.controls.rate import RateGovernor
from fsdf.controls.redis_needed import load_redis_control
from fsdf.controls.window import DoNotRunWindow

if TYPE_CHECKING:
    from fsdf.consumer import Consumer


def build_controls(consumer: 'Consumer') -> list[Control]:
    """The controls a consumer's options ask for, in the order they apply.

    The window comes before the rate governor, so a closed window does not bank start credit.
    Expiry is always there because any message may ask for it in its ``extra``. The Redis-backed
    ones (distributed qps, heartbeats) are imported only when asked for: redis is an optional extra.
    """
    options = consumer.options
    controls: list[Control] = []
    if options.is_do_not_run_by_specify_time_effect:
        controls.append(DoNotRunWindow(options.do_not_run_by_specify_time))
    if options.qps:
        pacer = None
        if options.is_using_distributed_frequency_control:
            distributed_rate = load_redis_control('fsdf.controls.distributed_rate',
                                                  'is_using_distributed_frequency_control')
            pacer = distributed_rate.RedisPacer(consumer.queue_name, options.qps, consumer.logger)
        controls.append(RateGovernor(options.qps, pacer))
    controls.append(MessageExpiry(options.msg_expire_seconds))
    if options.do_task_filtering:
        controls.append(TaskFilter(filter_store(consumer.broker_kind, consumer.queue_name),
                                   options.task_filtering_expire_seconds))
    if options.is_using_rpc_mode:
        from fsdf.controls.rpc import RpcResultControl
        controls.append(RpcResultControl(consumer))
    if options.is_send_consumer_heartbeat_to_redis:
        heartbeat = load_redis_control('fsdf.controls.heartbeat', 'is_send_consumer_heartbeat_to_redis')
        controls.append(heartbeat.RedisHeartbeat())
    return controls


__all__ = ['Control', 'RunOutcome', 'build_controls']
