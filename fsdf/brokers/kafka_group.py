"""Closing a Kafka group consumer that has rebalance callbacks, without librdkafka's hang in ``close()``.

``Consumer.close()`` serves the group's last revoke from inside librdkafka's close, and confluent-kafka's
rebalance callback then calls ``rd_kafka_assign()``, which can wait forever on a group that is already
terminating (librdkafka issues 4884 and 4527). confluent-kafka holds the GIL in that callback, so every
thread of the process stops with it: seen once here, a test's teardown hung a pytest worker for good.
The workaround given in those issues: leave the group first (``unsubscribe``) and let ``poll`` serve the
revoke while the group is still alive, until nothing is assigned; then ``close`` has no revoke left to serve.
"""
from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException

LEAVE_SECONDS = 5.0  # at most this long serving the revoke before closing all the same
_POLL_SECONDS = 0.05


def leave_and_close(consumer: Consumer, leave_seconds: float = LEAVE_SECONDS) -> None:
    """Unsubscribe, serve the revoke (the caller's ``on_revoke`` runs here, in this thread), then close.

    A message ``poll`` returns meanwhile is dropped unprocessed: its offset is not committed, so the
    group's next owner of its partition reads it again (at-least-once).
    """
    try:
        consumer.unsubscribe()
        deadline = time.monotonic() + leave_seconds
        consumer.poll(0)  # an assignment queued before the unsubscribe is served now, not inside close()
        while consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(_POLL_SECONDS)
    except (KafkaException, RuntimeError):  # already closed, or the broker away: close() does what it can
        pass
    consumer.close()
