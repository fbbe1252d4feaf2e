"""AMQPStorm's ``Channel._inbound``: the frames its I/O thread has read and not yet handed over.

AMQPStorm has no public "is anything waiting?" for a channel; its own ``process_data_events`` sleeps
a fixed interval instead. fsdf checks this list so a fetch returns as soon as the deliveries are handed over.
"""
from __future__ import annotations

from amqpstorm import Channel


def has_inbound(channel: Channel) -> bool:
    """Whether frames have arrived on ``channel`` that ``build_inbound_messages`` has not handed over."""
    return bool(channel._inbound)
