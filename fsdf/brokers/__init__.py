"""Broker registry: which module implements each ``BrokerEnum`` kind, imported on first use."""
from __future__ import annotations

import importlib

from fsdf._optional import import_optional
from fsdf.brokers.base import Broker, BrokerClosedError, Delivery
from fsdf.enums import BrokerEnum
from fsdf.exceptions import BrokerNotAvailableError

# kind -> (module, class, pip extra that brings its client library)
_BUILT: dict[BrokerEnum, tuple[str, str, str]] = {
    BrokerEnum.LOCAL_PYTHON_QUEUE: ('fsdf.brokers.local_queue', 'LocalQueueBroker', ''),
    BrokerEnum.PERSISTQUEUE: ('fsdf.brokers.persist_queue', 'PersistQueueBroker', ''),
    BrokerEnum.RABBITMQ_AMQPSTORM: ('fsdf.brokers.rabbitmq_amqpstorm', 'AmqpstormBroker', 'rabbitmq'),
    BrokerEnum.RABBITMQ_PIKA: ('fsdf.brokers.rabbitmq_pika', 'PikaBroker', 'rabbitmq'),
    BrokerEnum.RABBITMQ_RABBITPY: ('fsdf.brokers.rabbitmq_rabbitpy', 'RabbitpyBroker', 'rabbitmq'),
    BrokerEnum.MONGOMQ: ('fsdf.brokers.mongo', 'MongoBroker', 'mongo'),
    BrokerEnum.REDIS: ('fsdf.brokers.redis_list', 'RedisListBroker', 'redis'),
    BrokerEnum.REDIS_ACK_ABLE: ('fsdf.brokers.redis_ack', 'RedisAckBroker', 'redis'),
    BrokerEnum.RedisBrpopLpush: ('fsdf.brokers.redis_brpoplpush', 'RedisBrpopLpushBroker', 'redis'),
    BrokerEnum.REDIS_STREAM: ('fsdf.brokers.redis_stream', 'RedisStreamBroker', 'redis'),
    BrokerEnum.KAFKA: ('fsdf.brokers.kafka', 'KafkaBroker', 'kafka'),
    BrokerEnum.CONFLUENT_KAFKA: ('fsdf.brokers.kafka', 'KafkaBroker', 'kafka'),
    BrokerEnum.SQLACHEMY: ('fsdf.brokers.sql', 'SqlBroker', 'sql'),
    BrokerEnum.NATS: ('fsdf.brokers.nats_jetstream', 'NatsBroker', 'nats'),
    BrokerEnum.ZEROMQ: ('fsdf.brokers.zeromq', 'ZeroMQBroker', 'zeromq'),
    BrokerEnum.KOMBU: ('fsdf.brokers.kombu_broker', 'KombuBroker', 'kombu'),
}

# Kinds of the seed framework fsdf does not offer, and why (the error says it).
_NOT_OFFERED: dict[BrokerEnum, str] = {
    BrokerEnum.NSQ: 'no nsqd can be installed where fsdf is tested (no Debian or PyPI package ships it), and '
                    'fsdf ships no broker it has not run against its server',
    BrokerEnum.ROCKETMQ: 'no RocketMQ broker can be installed where fsdf is tested (no Debian or PyPI package '
                         'ships one), and fsdf ships no broker it has not run against its server',
}


def built_broker_kinds() -> list[BrokerEnum]:
    """The broker kinds this version of fsdf implements."""
    return list(_BUILT)


def broker_class(kind: BrokerEnum) -> type[Broker]:
    """The class behind a broker kind.

    BrokerNotAvailableError for a kind that is not built; MissingDependencyError (an ImportError naming the
    extra to install) when its client library is not installed.
    """
    kind = BrokerEnum(kind)
    if kind not in _BUILT:
        built = ', '.join(k.name for k in _BUILT)
        why = _NOT_OFFERED.get(kind, 'not yet')
        raise BrokerNotAvailableError(f'broker {kind.name} is not built in fsdf ({why}); built brokers: {built}')
    module_name, class_name, extra = _BUILT[kind]
    if not extra:  # its library is a required dependency
        module = importlib.import_module(module_name)
    else:
        module = import_optional(module_name, extra, f'broker {kind.name} needs its {extra} client library')
    broker: type[Broker] = getattr(module, class_name)
    return broker


def get_broker(kind: BrokerEnum, queue_name: str) -> Broker:
    """The one broker instance of this process for a queue (publishers and consumers share it);
    the default runtime's, see :meth:`fsdf.runtime.Runtime.broker`."""
    from fsdf.runtime import default_runtime
    return default_runtime().broker(kind, queue_name)


__all__ = ['Broker', 'BrokerClosedError', 'Delivery', 'broker_class', 'built_broker_kinds', 'get_broker']
