"""RABBITMQ_RABBITPY: not built, on purpose — rabbitpy is no longer maintained."""
from __future__ import annotations

from fsdf.exceptions import BrokerNotAvailableError

raise BrokerNotAvailableError(
    'broker RABBITMQ_RABBITPY is not built: rabbitpy is no longer maintained. The same RabbitMQ queues '
    'work with broker_kind=BrokerEnum.RABBITMQ_AMQPSTORM (the default RabbitMQ client) or '
    'BrokerEnum.RABBITMQ_PIKA; both are at-least-once with publisher confirms.')
