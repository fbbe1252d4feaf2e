"""RABBITMQ_RABBITPY: the RabbitMQ broker on rabbitpy (3.x, which runs on Python 3.11).

rabbitpy reads the socket in its own thread and writes through a queue; fsdf never enters a
channel from two threads (settles go through the fetch thread, as with pika).
"""
from __future__ import annotations

import time
from typing import Any, Optional

import rabbitpy
import rabbitpy.exceptions
from pamqp import commands

from fsdf._compat.rabbitpy_internals import forget_consumers, has_inbound, set_prefetch_without_waiting
from fsdf.brokers.rabbitmq import AmqpSession, OnMessage, RabbitMQBroker

IDLE_POLL_SECONDS = 0.001  # rabbitpy has no wait-for-a-frame with a timeout: look this often
PERSISTENT = {'delivery_mode': 2, 'content_type': 'application/json'}


class RabbitpySession(AmqpSession):
    """AMQP calls through rabbitpy."""

    connection_errors = (rabbitpy.exceptions.AMQPException, rabbitpy.exceptions.ConnectionException,
                         rabbitpy.exceptions.ConnectionResetException, rabbitpy.exceptions.ChannelClosedException,
                         rabbitpy.exceptions.RemoteClosedChannelException, rabbitpy.exceptions.AMQPConnectionForced,
                         OSError)

    def __init__(self, url: str, confirm: bool) -> None:
        self.connection = rabbitpy.Connection(url)
        self.channel = self.connection.channel()
        if confirm:
            self.channel.enable_publisher_confirms()
        self.batch_channel: Optional[Any] = None  # in transaction mode, opened on first batch
        self.on_message: Optional[OnMessage] = None

    def declare(self, queue: str, arguments: dict) -> None:
        rabbitpy.Queue(self.channel, queue, durable=True, arguments=arguments).declare()

    def publish(self, queue: str, body: str, priority: Optional[int]) -> None:
        properties = PERSISTENT if priority is None else {**PERSISTENT, 'priority': priority}
        message = rabbitpy.Message(self.channel, body, dict(properties), opinionated=False)
        if message.publish('', queue, mandatory=True) is False:
            raise rabbitpy.exceptions.AMQPException(f'RabbitMQ did not accept a message for {queue!r}')

    def publish_batch(self, queue: str, bodies: list[str]) -> None:
        if self.batch_channel is None:
            self.batch_channel = self.connection.channel()
            self.transaction = rabbitpy.Tx(self.batch_channel)
            self.transaction.select()
        for body in bodies:
            rabbitpy.Message(self.batch_channel, body, dict(PERSISTENT), opinionated=False).publish('', queue)
        self.transaction.commit()

    def count(self, queue: str) -> int:
        return rabbitpy.Queue(self.channel, queue).declare(passive=True)[0]

    def purge(self, queue: str) -> None:
        rabbitpy.Queue(self.channel, queue).purge()

    def consume(self, queue: str, prefetch: int, on_message: OnMessage) -> None:
        self.channel.prefetch_count(prefetch, all_channels=True)  # nothing arrives yet: waiting is safe
        self.on_message = on_message
        self.channel.register_consumer(rabbitpy.Queue(self.channel, queue), no_ack=False)

    def set_prefetch(self, prefetch: int) -> None:
        # Per channel (RabbitMQ's global qos): a per-consumer limit would apply only to consumers
        # started after it, so the prefetch could never grow.
        set_prefetch_without_waiting(self.channel, prefetch)

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not has_inbound(self.channel):
            if self.connection.closed or self.channel.closed:
                raise rabbitpy.exceptions.ConnectionException('RabbitMQ closed the consuming connection')
            if time.monotonic() >= deadline:
                return
            time.sleep(IDLE_POLL_SECONDS)
        assert self.on_message is not None  # consume() sets it before any delivery arrives
        while has_inbound(self.channel):
            message = self.channel.consume_message()
            if message is not None:
                self.on_message(bytes(message.body), message.delivery_tag)

    def settle(self, acks: list[int], requeues: list[int]) -> None:
        frames = [commands.Basic.Ack(delivery_tag=tag) for tag in acks]
        frames += [commands.Basic.Nack(delivery_tag=tag, requeue=True) for tag in requeues]
        self.channel.write_frames(frames)

    def close(self) -> None:
        try:
            forget_consumers(self.channel)
            self.connection.close()
        except Exception:  # closing a connection that is already gone
            pass


class RabbitpyBroker(RabbitMQBroker):
    """RabbitMQ through rabbitpy."""

    session_class = RabbitpySession
