"""RABBITMQ_AMQPSTORM: the RabbitMQ broker on AMQPStorm."""
from __future__ import annotations

from typing import Optional

import amqpstorm

from fsdf.brokers.rabbitmq import AmqpSession, OnMessage, RabbitMQBroker

PERSISTENT = {'delivery_mode': 2, 'content_type': 'application/json'}


class AmqpstormSession(AmqpSession):
    """AMQP calls through AMQPStorm."""

    connection_errors = (amqpstorm.AMQPConnectionError, amqpstorm.AMQPChannelError)

    def __init__(self, url: str, confirm: bool) -> None:
        self.connection = amqpstorm.UriConnection(url)
        self.channel = self.connection.channel()
        if confirm:
            self.channel.confirm_deliveries()
        self.batch_channel: Optional[amqpstorm.Channel] = None  # in transaction mode, opened on first batch

    def declare(self, queue: str, arguments: dict) -> None:
        self.channel.queue.declare(queue, durable=True, arguments=arguments)

    def publish(self, queue: str, body: str, priority: Optional[int]) -> None:
        properties = PERSISTENT
        if priority is not None:
            properties = {**PERSISTENT, 'priority': priority}
        if not self.channel.basic.publish(body, queue, properties=properties, mandatory=True):
            raise amqpstorm.AMQPMessageError(f'RabbitMQ did not accept a message for {queue!r}')

    def publish_batch(self, queue: str, bodies: list[str]) -> None:
        if self.batch_channel is None:
            self.batch_channel = self.connection.channel()
            self.batch_channel.tx.select()
        publish = self.batch_channel.basic.publish
        for body in bodies:
            publish(body, queue, properties=PERSISTENT)
        self.batch_channel.tx.commit()

    def count(self, queue: str) -> int:
        return self.channel.queue.declare(queue, passive=True)['message_count']

    def purge(self, queue: str) -> None:
        self.channel.queue.purge(queue)

    def consume(self, queue: str, prefetch: int, on_message: OnMessage) -> None:
        self.channel.basic.qos(prefetch)

        def deliver(body: bytes, channel: object, method: dict, properties: dict) -> None:
            on_message(body, method['delivery_tag'])
        self.channel.basic.consume(deliver, queue, no_ack=False)

    def set_prefetch(self, prefetch: int) -> None:
        self.channel.basic.qos(prefetch)

    def pump(self, seconds: float) -> None:
        # AMQPStorm reads the socket in its own thread; this hands over what arrived (or idles 10 ms).
        self.channel.process_data_events(to_tuple=True, auto_decode=False)
        # process_data_events returns quietly once the channel is closed (it raises only on the next
        # call, and not at all if AMQPStorm takes the close for one we asked for): say so, to reconnect.
        if not (self.connection.is_open and self.channel.is_open):
            raise amqpstorm.AMQPConnectionError('RabbitMQ closed the consuming connection')

    def ack(self, tag: int) -> None:
        self.channel.basic.ack(tag)

    def requeue(self, tag: int) -> None:
        self.channel.basic.nack(tag, requeue=True)

    def close(self) -> None:
        try:
            self.connection.close()
        except amqpstorm.AMQPError:
            pass


class AmqpstormBroker(RabbitMQBroker):
    """RabbitMQ through AMQPStorm (thread-safe client, its own I/O thread)."""

    session_class = AmqpstormSession
