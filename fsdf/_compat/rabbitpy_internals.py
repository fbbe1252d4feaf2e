"""rabbitpy's ``Channel._read_queue``: the frames its I/O thread has read and not yet handed over.

rabbitpy's only way to take a delivery, ``Channel.consume_message``, blocks until one arrives; fsdf
checks this queue first so a fetch waits no longer than its timeout.
"""
from __future__ import annotations

from pamqp import commands
from rabbitpy import Channel


def has_inbound(channel: Channel) -> bool:
    """Whether frames have arrived on ``channel`` that rabbitpy has not handed over.

    A Basic.QosOk at the head (the reply to :func:`set_prefetch_without_waiting`) is dropped first:
    frames of one delivery are contiguous, so one can only be between deliveries.
    """
    read_queue = channel._read_queue
    with read_queue.mutex:
        frames = read_queue.queue
        while frames and isinstance(frames[0], commands.Basic.QosOk):
            frames.popleft()
            read_queue.unfinished_tasks = max(0, read_queue.unfinished_tasks - 1)
        return bool(frames)


def forget_consumers(channel: Channel) -> None:
    """Drop the channel's record of its consumers, before closing its connection.

    rabbitpy 3.0.2's ``Channel.close`` cancels each consumer while iterating the dict that cancelling
    changes ("dictionary changed size during iteration"), so the close stops half-way and the
    connection stays open, holding its unacked deliveries. Closing the connection cancels its
    consumers anyway, and RabbitMQ requeues what they held.
    """
    channel.consumers.clear()


def set_prefetch_without_waiting(channel: Channel, prefetch: int) -> None:
    """Send Basic.Qos (per channel) without waiting for its Basic.QosOk.

    rabbitpy's ``prefetch_count`` waits for the reply by taking frames off the channel's read queue
    and putting back the ones it is not waiting for, at the end: on a consuming channel that
    reorders deliveries' method, header and body frames, and messages get lost. The reply is
    dropped by :func:`has_inbound` instead.
    """
    channel.write_frame(commands.Basic.Qos(prefetch_count=prefetch, global_=True))
