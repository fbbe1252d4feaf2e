"""RABBITMQ_RABBITPY: not built, on purpose — rabbitpy loses messages on a consuming channel.

Tried with rabbitpy 3.0.2 on Python 3.11 against the suite's RabbitMQ (commit "RABBITMQ_RABBITPY attempt"
in the history): it installs and publishes and consumes, but ``Channel.close`` with an active consumer
raises "dictionary changed size during iteration" and leaves the connection open, holding its unacked
messages; and ``prefetch_count`` on a consuming channel waits for its reply by putting the other frames
back at the end of the read queue, so deliveries' frames are reordered and messages are lost (with both
worked around, 78 of 500 calls ran in fsdf's consume test, and a kill -9 left 137 of 200 unrun).
"""
from __future__ import annotations

from fsdf.exceptions import BrokerNotAvailableError

raise BrokerNotAvailableError(
    'broker RABBITMQ_RABBITPY is not built: rabbitpy (3.0.2, tried on Python 3.11) loses messages on a '
    'consuming channel. The same RabbitMQ queues work with broker_kind=BrokerEnum.RABBITMQ_AMQPSTORM (the '
    'default RabbitMQ client), BrokerEnum.RABBITMQ_PIKA, or BrokerEnum.KOMBU with an amqp:// KOMBU_URL; all are '
    'at-least-once with publisher confirms.')
