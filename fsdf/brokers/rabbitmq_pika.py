"""RABBITMQ_PIKA: the RabbitMQ broker on pika's BlockingConnection (never entered by two threads at once)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from fsdf._compat.pika_internals import flush, queuing_channel
from fsdf.brokers.base import Body
from fsdf.brokers.rabbitmq import AmqpSession, OnMessage, RabbitMQBroker

PERSISTENT = pika.BasicProperties(delivery_mode=2, content_type='application/json')


class PikaSession(AmqpSession):
    """AMQP calls through pika."""

    connection_errors = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError,
                         pika.exceptions.ConnectionWrongStateError, pika.exceptions.ChannelWrongStateError)

    def __init__(self, url: str, confirm: bool) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        if confirm:
            self.channel.confirm_delivery()
        self.batch_channel: Optional[BlockingChannel] = None  # in transaction mode, opened on first batch

    def declare(self, queue: str, arguments: dict) -> None:
        self.channel.queue_declare(queue, durable=True, arguments=arguments)

    def publish(self, queue: str, body: Body, priority: Optional[int]) -> None:
        properties = PERSISTENT if priority is None else pika.BasicProperties(
            delivery_mode=2, content_type='application/json', priority=priority)
        self.channel.basic_publish('', queue, _encoded(body), properties, mandatory=True)

    def publish_batch(self, queue: str, bodies: Sequence[Body]) -> None:
        if self.batch_channel is None:
            self.batch_channel = self.connection.channel()
            self.batch_channel.tx_select()
        publish = queuing_channel(self.batch_channel).basic_publish  # queue the frames; tx_commit sends them in one go
        for body in bodies:
            publish('', queue, _encoded(body), PERSISTENT)
        self.batch_channel.tx_commit()

    def count(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def purge(self, queue: str) -> None:
        self.channel.queue_purge(queue)

    def consume(self, queue: str, prefetch: int, on_message: OnMessage) -> None:
        self.channel.basic_qos(prefetch_count=prefetch, global_qos=True)  # see AmqpSession.set_prefetch
        self.channel.basic_consume(queue, lambda channel, method, properties, body: on_message(
            body, method.delivery_tag), auto_ack=False)

    def set_prefetch(self, prefetch: int) -> None:
        self.channel.basic_qos(prefetch_count=prefetch, global_qos=True)

    def pump(self, seconds: float) -> None:
        self.connection.process_data_events(time_limit=seconds)

    def settle(self, acks: list[int], requeues: list[int]) -> None:
        # BlockingChannel flushes the socket after every ack; queue the frames on the channel
        # underneath and let one public call send them all.
        queued = queuing_channel(self.channel)
        for tag in requeues:
            queued.basic_nack(tag, requeue=True)
        if acks:
            for tag in acks[:-1]:
                queued.basic_ack(tag)
            self.channel.basic_ack(acks[-1])
        elif requeues:
            flush(self.channel)

    def wake_pump(self, fn: Callable[[], None]) -> bool:
        self.connection.add_callback_threadsafe(fn)  # the only pika call another thread may make
        return True

    def close(self) -> None:
        try:
            self.connection.close()
        except pika.exceptions.AMQPError:
            pass


def _encoded(body: Body) -> bytes:
    """A message body as pika sends it (a body fetched back from RabbitMQ is bytes already)."""
    return body if isinstance(body, bytes) else body.encode()


class PikaBroker(RabbitMQBroker):
    """RabbitMQ through pika."""

    session_class = PikaSession
