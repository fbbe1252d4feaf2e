"""The two enumerations users pass to ``task_deco``: which broker, which concurrency."""
from __future__ import annotations

from enum import IntEnum


class BrokerEnum(IntEnum):
    """Broker kinds, with the seed framework's names and integer values."""

    RABBITMQ_AMQPSTORM = 0
    RABBITMQ_RABBITPY = 1
    REDIS = 2
    LOCAL_PYTHON_QUEUE = 3
    RABBITMQ_PIKA = 4
    MONGOMQ = 5
    PERSISTQUEUE = 6
    NSQ = 7
    KAFKA = 8
    REDIS_ACK_ABLE = 9
    SQLACHEMY = 10
    ROCKETMQ = 11
    REDIS_STREAM = 12
    ZEROMQ = 13
    RedisBrpopLpush = 14
    KOMBU = 15
    CONFLUENT_KAFKA = 16
    NATS = 17  # beyond the seed framework: NATS JetStream


class ConcurrentModeEnum(IntEnum):
    """How a consumer runs calls, with the seed framework's names and integer values."""

    THREADING = 1
    GEVENT = 2
    EVENTLET = 3
    ASYNC = 4
    SINGLE_THREAD = 5
