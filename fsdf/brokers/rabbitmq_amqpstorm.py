"""RABBITMQ_AMQPSTORM: the RabbitMQ broker on AMQPStorm."""
from __future__ import annotations

import time
from typing import Any, Optional

import amqpstorm
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from fsdf._compat.amqpstorm_internals import has_inbound
from fsdf.brokers.rabbitmq import AmqpSession, OnMessage, RabbitMQBroker

BUSY_POLL_SECONDS = 0.001
IDLE_POLL_SECONDS = 0.01
FLOWING_SECONDS = 0.1  # messages arrived this recently: poll the inbound frames at the busy rate
PERSISTENT = {'delivery_mode': 2, 'content_type': 'application/json'}
# What basic.publish sends for PERSISTENT and a str body (it adds the encoding), made once for every batch.
BATCH_PROPERTIES = Basic.Properties(delivery_mode=2, content_type='application/json', content_encoding='utf-8')
FRAME_OVERHEAD = 8  # bytes of an AMQP frame around its payload: a body frame carries frame_max - 8
WRITE_MESSAGES = 1000  # messages of a batch per socket write


class AmqpstormSession(AmqpSession):
    """AMQP calls through AMQPStorm."""

    connection_errors = (amqpstorm.AMQPConnectionError, amqpstorm.AMQPChannelError)
    thread_safe = True  # frames are written under the connection's lock; AMQPStorm's own thread reads

    def __init__(self, url: str, confirm: bool) -> None:
        self.connection = amqpstorm.UriConnection(url)
        self.channel = self.connection.channel()
        if confirm:
            self.channel.confirm_deliveries()
        self.batch_channel: Optional[amqpstorm.Channel] = None  # in transaction mode, opened on first batch
        self.on_message: Optional[OnMessage] = None
        self.last_delivery = 0.0

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
        # The frames basic.publish would send, built here and written many messages at a time: its per-call
        # checks and Properties(**dict) were most of a batch's cost, and it wrote each message on its own.
        method, largest = Basic.Publish(exchange='', routing_key=queue), self.connection.max_frame_size - FRAME_OVERHEAD
        for start in range(0, len(bodies), WRITE_MESSAGES):
            frames: list[Any] = []  # method, header and body frames (amqpstorm's publish types them so too)
            for body in bodies[start:start + WRITE_MESSAGES]:
                data = body.encode() if isinstance(body, str) else body  # a redelivered body may be bytes
                frames += (method, ContentHeader(body_size=len(data), properties=BATCH_PROPERTIES))
                if len(data) <= largest:
                    frames.append(ContentBody(data))
                else:
                    frames += [ContentBody(data[at:at + largest]) for at in range(0, len(data), largest)]
            self.batch_channel.write_frames(frames)
        self.batch_channel.tx.commit()  # returns once RabbitMQ has every message of the transaction

    def count(self, queue: str) -> int:
        return self.channel.queue.declare(queue, passive=True)['message_count']

    def purge(self, queue: str) -> None:
        self.channel.queue.purge(queue)

    def consume(self, queue: str, prefetch: int, on_message: OnMessage) -> None:
        self.channel.basic.qos(prefetch, global_=True)  # see AmqpSession.set_prefetch
        self.on_message = on_message
        self.channel.basic.consume(lambda *delivery: None, queue, no_ack=False)  # pump() reads the deliveries

    def set_prefetch(self, prefetch: int) -> None:
        self.channel.basic.qos(prefetch, global_=True)

    def pump(self, seconds: float) -> None:
        # AMQPStorm reads the socket in its own thread into the channel's inbound frames; this hands
        # over what has arrived and returns as soon as no frame is left, so the fetch thread
        # dispatches at once. With nothing there it sleeps: 1 ms while messages are flowing (they
        # come back within a round trip of our acks), else 10 ms like AMQPStorm's own loop.
        channel = self.channel
        if has_inbound(channel):
            assert self.on_message is not None  # consume() sets it before any delivery arrives
            for body, _, method, _ in channel.build_inbound_messages(
                    break_on_empty=True, to_tuple=True, auto_decode=False, empty_timeout=None):
                self.on_message(body, method['delivery_tag'])
                if not has_inbound(channel):
                    break
            self.last_delivery = time.monotonic()
        else:
            flowing = time.monotonic() - self.last_delivery < FLOWING_SECONDS
            time.sleep(min(seconds, BUSY_POLL_SECONDS if flowing else IDLE_POLL_SECONDS))
            channel.check_for_errors()
        # A closed channel does not always raise (not if AMQPStorm takes the close for one we asked
        # for): say so, to reconnect.
        if not (self.connection.is_open and channel.is_open):
            raise amqpstorm.AMQPConnectionError('RabbitMQ closed the consuming connection')

    def settle(self, acks: list[int], requeues: list[int]) -> None:
        frames: list[Frame] = [Basic.Ack(delivery_tag=tag) for tag in acks]
        frames += [Basic.Nack(delivery_tag=tag, requeue=True) for tag in requeues]
        self.channel.write_frames(frames)  # one socket write for the batch

    def close(self) -> None:
        try:
            self.connection.close()
        except amqpstorm.AMQPError:
            pass


class AmqpstormBroker(RabbitMQBroker):
    """RabbitMQ through AMQPStorm (thread-safe client, its own I/O thread)."""

    session_class = AmqpstormSession
    # AMQPStorm waits for a confirm or a commit by polling every 10 ms: 8 pooled sessions confirming side by
    # side carried 50 threads' pushes faster (641 msg/s) than one transaction at a time (458 msg/s).
    groups_publishes = False
