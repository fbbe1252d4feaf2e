"""pika's ``BlockingChannel._impl`` and ``_flush_output``: queue AMQP frames without a socket flush per frame.

``BlockingChannel`` flushes the socket after each ack or publish; the asynchronous ``Channel`` under it
(``_impl``) only queues frames, and ``_flush_output()`` sends what is queued. Batches of acks and
transactional publishes go through these, then one flush.
"""
from __future__ import annotations

from pika.adapters.blocking_connection import BlockingChannel
from pika.channel import Channel


def queuing_channel(channel: BlockingChannel) -> Channel:
    """The channel under ``channel``: its ``basic_ack``/``basic_nack``/``basic_publish`` queue frames unsent."""
    underneath: Channel = channel._impl
    return underneath


def flush(channel: BlockingChannel) -> None:
    """Send every frame queued on ``channel``'s connection, waiting until written."""
    channel._flush_output()
