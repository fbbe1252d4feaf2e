"""Delayed messages on Kafka: a cascade of delay topics with one fixed delay each, forwarded by the consumers.

Kafka cannot hold a message back, and a partition is read in order, so a single delay topic would
let a message due in an hour hold back one due in a second behind it. Instead each queue has delay
levels ``fsdf.delay.<queue>.<k>`` (one partition each, k = 0..LEVELS-1): a message waits in level k
exactly ``2**k * STEP_SECONDS`` after it was written there (its Kafka timestamp), so in every level
the head is always the first due. A message due in r seconds goes to the highest level that does not
overshoot; when it comes out it goes down to the level for what remains, or to the queue when it is
due: at most LEVELS hops, never early, at most STEP_SECONDS late plus the hops' latency (delays beyond
the top level go round it again). The due time travels in the ``fsdf-due`` header.

Every consuming process runs a forwarder in the consumer group ``fsdf.delay.<queue>``: it forwards
what is due, commits, and pauses a level (seeking back to its head) until that head is due, with a
small fetch buffer, so it never holds the thousands of messages that wait. With no consumer of the
queue running, delayed messages wait in their level and move on once one starts. ``count`` and
``purge`` of the queue do not see them.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable, Optional, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from fsdf.brokers.kafka_group import leave_and_close
from fsdf.secrets import redact

STEP_SECONDS = 0.25
LEVELS = 20  # the top level waits 2**19 * 0.25 s, about 36 hours
DUE_HEADER = 'fsdf-due'
POLL_SECONDS = 0.05  # how often a paused level is checked: the latency a hop adds at most

Record = tuple[str, Any, Optional[dict[str, str | bytes | None]]]  # topic, value, headers
Send = Callable[[list[Record]], None]  # produces records and returns once the broker has them all


def level_topics(queue_name: str) -> list[str]:
    """The delay topics of a queue, shortest delay first."""
    return [f'fsdf.delay.{queue_name}.{k}' for k in range(LEVELS)]


def level_for(seconds: float) -> int:
    """The level whose delay is the longest that does not exceed ``seconds`` (level 0 below one step)."""
    if seconds < STEP_SECONDS * 2:
        return 0
    return min(LEVELS - 1, int(math.log2(seconds / STEP_SECONDS)))


def level_delay(topic: str) -> float:
    """How long a message waits in the delay topic ``topic``."""
    return STEP_SECONDS * 2 ** int(topic.rsplit('.', 1)[1])


class DelayForwarder:
    """Moves a queue's delayed messages down the levels and into the queue as they come due."""

    def __init__(self, queue_name: str, consumer_config: dict[str, Any], send: Send) -> None:
        self.queue_name = queue_name
        self.topics = level_topics(queue_name)
        self._config = {**consumer_config, 'group.id': f'fsdf.delay.{queue_name}',
                        # a small fetch buffer: waiting messages stay on the broker, not in this process
                        'queued.min.messages': 10, 'queued.max.messages.kbytes': 256,
                        'max.partition.fetch.bytes': 65536}
        self._send = send
        self._stopped = threading.Event()
        self._paused: dict[tuple[str, int], float] = {}  # level partition -> when its head is due
        self._thread = threading.Thread(target=self._run, name=f'fsdf-delay-{queue_name}', daemon=True)
        self.logger = logging.getLogger(f'fsdf.broker.{queue_name}')

    def start(self) -> None:
        """Start forwarding in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop forwarding and leave the group (what was not forwarded stays in its level)."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)

    def _run(self) -> None:
        consumer = Consumer(self._config)
        consumer.subscribe(self.topics, on_revoke=self._forget, on_lost=self._forget)
        try:
            while not self._stopped.is_set():
                try:
                    self._forward_batch(consumer)
                except Exception as exc:  # the broker may be briefly away: keep going
                    self.logger.warning('forwarding delayed messages of %r failed: %s', self.queue_name, redact(exc))
                    self._stopped.wait(1.0)
        finally:
            leave_and_close(consumer)

    def _forget(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions revoked or lost: forget their pauses and resume them. librdkafka keeps a partition paused
        across a rebalance (its issue 1849): one assigned back to this consumer would otherwise stay paused with
        no due time to resume it, and its delayed messages would wait for the next restart."""
        for tp in partitions:
            self._paused.pop((tp.topic, tp.partition), None)
        try:
            consumer.resume(partitions)
        except KafkaException as exc:  # lost partitions may be gone already: nothing of theirs is read any more
            self.logger.debug('could not resume the delay levels of %r on a rebalance: %s', self.queue_name, exc)

    def _forward_batch(self, consumer: Consumer) -> None:
        now = time.time()
        woken = [key for key, due in self._paused.items() if due <= now]
        if woken:
            consumer.resume([TopicPartition(topic, partition) for topic, partition in woken])
            for key in woken:
                del self._paused[key]
        first: dict[tuple[str, int], int] = {}  # per level partition, the first offset read in this batch
        forwarded: dict[tuple[str, int], int] = {}
        outgoing: list[Record] = []
        for message in consumer.consume(100, POLL_SECONDS):
            error = message.error()
            if error is not None:
                if error.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    self.logger.warning('Kafka consume error on the delay levels of %r: %s',
                                        self.queue_name, error)
                continue
            # set on every record read without error
            key = (cast(str, message.topic()), cast(int, message.partition()))
            if key in self._paused:  # fetched before its level was paused; read again on resume
                continue
            offset = cast(int, message.offset())
            first.setdefault(key, offset)
            _, written_ms = message.timestamp()
            out_at = written_ms / 1000 + level_delay(key[0])
            if out_at > time.time():
                self._pause_at(consumer, message, out_at)
                continue
            outgoing.append(self._next_hop(message))
            forwarded[key] = offset + 1
        if not outgoing:
            return
        try:
            self._send(outgoing)
        except Exception:
            for (topic, partition), offset in first.items():  # read them again: nothing may be skipped
                consumer.seek(TopicPartition(topic, partition, offset))
            raise
        consumer.commit(offsets=[TopicPartition(topic, partition, offset)
                                 for (topic, partition), offset in forwarded.items()], asynchronous=False)

    def _pause_at(self, consumer: Consumer, message: Any, out_at: float) -> None:
        """Stop reading a level at ``message`` until it is due; it is read again from there."""
        head = TopicPartition(message.topic(), message.partition(), message.offset())
        self._paused[(head.topic, head.partition)] = out_at  # first: a pause must always have its resume
        consumer.pause([head])
        consumer.seek(head)

    def _next_hop(self, message: Any) -> Record:
        """Where a message that came out of its level goes: the queue if due, else the level for what remains."""
        headers = dict(message.headers() or ())
        due = float(headers.get(DUE_HEADER) or 0)
        remaining = due - time.time()
        if remaining <= 0:
            return self.queue_name, message.value(), None
        return self.topics[level_for(remaining)], message.value(), {DUE_HEADER: str(due)}
