"""KAFKA and CONFLUENT_KAFKA: a Kafka topic per queue, consumed by the consumer group named after it.

At-least-once with manual commits: a partition's offset is committed only up to its oldest
message that is not yet settled, so a slow message is never skipped by faster ones after it.
On a rebalance the revoked partitions commit what settled and forget the rest; the new owner
gets those messages again. Kafka cannot put a message back, so ``requeue`` produces it again
at the end of the topic. ``count`` is the group's lag; ``purge`` moves the group's committed
offsets to the end of every partition (the messages stay in Kafka until its retention ends), which
Kafka allows only while no consumer of the queue runs.
Delayed messages wait in delay topics that the queue's consumers forward from (see kafka_delay).
"""
from __future__ import annotations

import re
import threading
import time
from collections import deque
from typing import Any, ClassVar, Iterable, Optional

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from fsdf.brokers import kafka_delay
from fsdf.brokers.base import Broker, Delivery
from fsdf.brokers.kafka_group import leave_and_close
from fsdf.config import settings
from fsdf.runtime import default_runtime
from fsdf.secrets import redact

JOIN_WAIT_SECONDS = 30.0  # a fetch waits this long for the group to give it partitions
# What a commit from outside the group gets while the group has members.
GROUP_BUSY = (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS)
CATCH_UP_SECONDS = 5.0  # an empty fetch keeps polling this long while our partitions still have unread messages
# While messages keep coming, settled offsets are committed this often (and whenever a fetch finds none):
# a commit per fetch of a few dozen short calls cost a tenth of the consumer's time.
COMMIT_EVERY_SECONDS = 0.1
LONGEST_WAIT_SECONDS = 0.5  # one wait for messages, so a close or a commit is never far off

_TOPIC_NAME = re.compile(r'[a-zA-Z0-9._-]{1,249}')


class _Partition:
    """Offsets taken from one partition, in order, and which of them have settled."""

    __slots__ = ('pending', 'settled', 'next_offset', 'committed')

    def __init__(self) -> None:
        self.pending: deque[int] = deque()  # taken offsets, oldest first
        self.settled: set[int] = set()  # taken offsets that settled while an older one had not
        self.next_offset = -1  # the offset to commit: every taken message before it has settled
        self.committed = -1

    def taken(self, offset: int) -> None:
        """A message was fetched (offsets only grow within a partition)."""
        self.pending.append(offset)

    def done(self, offset: int) -> None:
        """A message settled; the commit point moves past every settled message at the head."""
        pending, settled = self.pending, self.settled
        if not settled and pending and pending[0] == offset:  # settled in order: the usual case
            pending.popleft()
            self.next_offset = offset + 1
            return
        settled.add(offset)
        while pending and pending[0] in settled:
            settled.discard(pending[0])
            self.next_offset = pending.popleft() + 1


class _Failures:
    """A shared producer's delivery callback. With ``delivery.report.only.error`` it hears of failed
    messages only, and keeps the latest failure of each topic, numbered: a publish that began when
    ``count`` was ``n`` raises the failure of its topic numbered above ``n``. A failure of another
    thread's message to the same topic meanwhile makes that publish raise too, and its publisher retry
    (at-least-once: a message may be stored twice); a failure of its own is never missed, because
    librdkafka counts a message as outstanding, so ``flush`` waits, until its callback has returned."""

    def __init__(self) -> None:
        self.count = 0
        self.latest: dict[str, tuple[int, KafkaError]] = {}
        self._lock = threading.Lock()  # callbacks run in whichever thread polls or flushes

    def __call__(self, error: Optional[KafkaError], message: Any) -> None:
        if error is None:
            return
        with self._lock:
            self.count += 1
            self.latest[message.topic()] = (self.count, error)

    def since(self, seen: int, topics: Iterable[str]) -> Optional[KafkaError]:
        """The latest failure of one of ``topics`` reported after ``count`` was ``seen``; None: none."""
        if self.count == seen:
            return None
        for topic in topics:
            hit = self.latest.get(topic)
            if hit is not None and hit[0] > seen:
                return hit[1]
        return None


class _SharedProducer:
    """The producer the brokers of one bootstrap list share, and its delivery failures."""

    __slots__ = ('producer', 'failures')

    def __init__(self, bootstrap: str, config: Optional[dict[str, Any]] = None) -> None:
        """``config``: librdkafka settings over fsdf's."""
        self.failures = _Failures()
        self.producer = Producer({
            'bootstrap.servers': bootstrap, 'acks': 'all', 'enable.idempotence': True,
            'linger.ms': 2,
            # Keyless messages go to a random partition each, not a whole batch to one
            # partition: every consumer of the group gets a share of a push_many.
            'sticky.partitioning.linger.ms': 0,
            # One callback for the producer, called for failures only: a callback given with each
            # message cost ~0.6 µs of a ~2 µs produce, and a Python call per delivered one a fifth of a push_many.
            'on_delivery': self.failures, 'delivery.report.only.error': True, **(config or {})})

    def produce_when_room(self, topic: str, body: Any, headers: Optional[dict[str, str | bytes | None]]) -> None:
        """Produce once the local queue has room (it was full: let deliveries drain)."""
        while True:
            self.producer.poll(0.1)
            try:
                self.producer.produce(topic, body, headers=headers)
                return
            except BufferError:
                continue

    def flush(self, seen: int, topics: Iterable[str]) -> None:
        """Return once the broker acknowledged every message produced (acks=all), else raise the failure
        of one of ``topics`` reported since ``failures.count`` was ``seen``."""
        self.producer.flush()
        failure = self.failures.since(seen, topics)
        if failure is not None:
            raise KafkaException(failure)


def producer_key(bootstrap: str) -> tuple[str, str]:
    """The runtime key of the producer shared by the brokers of these bootstrap servers."""
    return ('kafka-producer', bootstrap)


class KafkaBroker(Broker):
    """A Kafka topic and its consumer group, on confluent-kafka."""

    guarantee = 'at-least-once, manual commits of settled offsets'
    publish_batch_size = 10_000  # one flush each: a flush waits for the slowest partition
    # A flush waits for every message the shared producer holds, so pushes from many threads each flushing
    # wait for one another's; grouped, the ones waiting go out with one produce each and one flush.
    groups_publishes = True
    fifo = False  # in order within a partition only
    requeue_many_to_front = False  # Kafka cannot put a message back: it is produced again at the end
    count_includes_taken = True  # the group's lag runs to the oldest offset not yet committed
    purge_includes_delayed = False  # they wait in the delay topics
    purge_while_consuming = False  # Kafka takes offset commits only from the group's members
    num_partitions: ClassVar[int] = 4
    """Partitions of a topic fsdf creates; set before first use (or create the topic yourself)."""
    _created_topics: ClassVar[set[tuple[str, str]]] = set()

    @classmethod
    def queue_name_problem(cls, name: str) -> Optional[str]:
        """Kafka topic names: ASCII letters, digits, '.', '_' and '-', at most 249, not '.' or '..'."""
        if not _TOPIC_NAME.fullmatch(name) or name in ('.', '..'):
            return 'is not a Kafka topic name (ASCII letters, digits, ".", "_" and "-" only, at most 249)'
        return None

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self.bootstrap = settings.KAFKA_BOOTSTRAP_SERVERS
        self._runtime = default_runtime()  # where the shared producer is held, and released on close
        self._ensure_topic()
        self._producer: Optional[_SharedProducer] = self._shared_producer()
        self._consumer: Optional[Consumer] = None
        self._assigned = threading.Event()
        self._generation = 0  # bumped on every assignment change: settles of older deliveries are dropped
        self._partitions: dict[int, _Partition] = {}
        self._track_lock = threading.Lock()
        self._lag_consumer: Optional[Consumer] = None
        self._lag_lock = threading.Lock()
        self._forwarder: Optional[kafka_delay.DelayForwarder] = None
        self._commit_due = 0.0  # monotonic time of the next commit while messages keep coming

    # -- setup ---------------------------------------------------------------------------
    def _ensure_topic(self) -> None:
        self._ensure_topics([self.queue_name], self.num_partitions)

    def _ensure_topics(self, topics: list[str], partitions: int) -> None:
        """Create the topics that this process has not created or seen yet (an existing one is fine)."""
        missing = [topic for topic in topics if (self.bootstrap, topic) not in self._created_topics]
        if not missing:
            return
        admin = AdminClient({'bootstrap.servers': self.bootstrap})
        futures = admin.create_topics([NewTopic(topic, partitions, 1) for topic in missing])
        for topic, future in futures.items():
            try:
                future.result(15)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            self._created_topics.add((self.bootstrap, topic))

    def _shared_producer(self) -> _SharedProducer:
        """The runtime's producer for these bootstrap servers; every broker that takes it releases it on close."""
        return self._runtime.acquire(producer_key(self.bootstrap), lambda: _SharedProducer(self.bootstrap))

    def _release_producer(self) -> None:
        """Let go of the shared producer; the last broker to do so drops it, so that nothing keeps
        reconnecting (and logging so) to a server that is gone."""
        self._producer = None
        self._runtime.release(producer_key(self.bootstrap))

    def _consumer_config(self) -> dict[str, Any]:
        return {'bootstrap.servers': self.bootstrap, 'group.id': self.queue_name, 'enable.auto.commit': False,
                'auto.offset.reset': 'earliest',
                # A killed member is evicted after this, and its partitions go to the others; 6 s is
                # the least a Kafka broker accepts (group.min.session.timeout.ms) and well within the
                # 20 s in which a dead consumer's messages must be back.
                'session.timeout.ms': 6000, 'heartbeat.interval.ms': 1000}

    # -- publishing ----------------------------------------------------------------------
    def publish(self, body: str, priority: Optional[int] = None) -> None:
        self.publish_many([body])

    def publish_many(self, bodies: list[str]) -> None:
        shared = self._producer or self._take_producer()
        seen, produce, topic = shared.failures.count, shared.producer.produce, self.queue_name
        for body in bodies:  # the common batch, in the fewest operations per message: see _send
            try:
                produce(topic, body)
            except BufferError:
                shared.produce_when_room(topic, body, None)
        shared.flush(seen, (topic,))

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        remaining = due - time.time()
        if remaining <= 0:
            self.publish_many(bodies)
            return
        topics = kafka_delay.level_topics(self.queue_name)
        self._ensure_topics(topics, 1)
        level = topics[kafka_delay.level_for(remaining)]
        headers: dict[str, str | bytes | None] = {kafka_delay.DUE_HEADER: str(due)}
        self._send([(level, body, headers) for body in bodies])

    def _send(self, records: list[kafka_delay.Record]) -> None:
        """Produce records; return once the broker has acknowledged them all, else raise (a failure of
        another message to one of their topics meanwhile too: see _Failures)."""
        shared = self._producer or self._take_producer()
        seen, produce = shared.failures.count, shared.producer.produce
        for topic, body, headers in records:
            try:
                produce(topic, body, headers=headers)
            except BufferError:
                shared.produce_when_room(topic, body, headers)
        shared.flush(seen, {record[0] for record in records})

    def _take_producer(self) -> _SharedProducer:
        """Publishing through a closed broker: it takes the shared producer again."""
        self._producer = self._shared_producer()
        return self._producer

    # -- consuming -----------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._track_lock:
            self._generation += 1
            for tp in partitions:
                self._partitions.setdefault(tp.partition, _Partition())
        self._assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit(synchronous=True)
        with self._track_lock:
            self._generation += 1  # running messages of revoked partitions will be redelivered to the new owner
            for tp in partitions:
                self._partitions.pop(tp.partition, None)
            if not self._partitions:
                self._assigned.clear()

    def _start_consumer(self) -> Consumer:
        consumer = Consumer(self._consumer_config())
        consumer.subscribe([self.queue_name], on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_revoke)
        return consumer

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if self._closed.is_set():  # else it would join the group and start a forwarder again
            return []
        if self._consumer is None:
            self._consumer = self._start_consumer()
        if self._forwarder is None:
            self._start_forwarder()
        consumer = self._consumer
        deadline = time.monotonic() + timeout
        join_deadline = time.monotonic() + JOIN_WAIT_SECONDS
        catch_up_deadline: Optional[float] = None
        while True:
            deliveries = self._take(consumer, max_count, deadline)
            if deliveries or self._closed.is_set():
                return deliveries
            now = time.monotonic()
            if now < deadline:
                continue
            if not self._assigned.is_set():  # still joining the group: that is not an empty queue
                if now < join_deadline:
                    continue
                return []
            if catch_up_deadline is None:
                catch_up_deadline = now + CATCH_UP_SECONDS
            if now >= catch_up_deadline or not self._unread(consumer):
                return []

    def _take(self, consumer: Consumer, max_count: int, deadline: float) -> list[Delivery]:
        """The messages here now, up to ``max_count``; if none, wait for the first until ``deadline``.

        Never ``consume(max_count, wait)`` alone: it waits for all ``max_count``, so a partial batch sat
        out the whole wait (half a second at the end of every burst).
        """
        messages = consumer.consume(max_count, 0)
        if messages:
            if time.monotonic() >= self._commit_due:
                self._commit(synchronous=False)
            return self._track(messages)
        self._commit(synchronous=False)  # nothing here: commit while waiting
        messages = consumer.consume(1, min(max(deadline - time.monotonic(), 0.01), LONGEST_WAIT_SECONDS))
        if messages and max_count > 1:
            messages += consumer.consume(max_count - 1, 0)  # what came with the first
        return self._track(messages)

    def _start_forwarder(self) -> None:
        """Consumers of a queue are the ones that move its delayed messages along (kafka_delay)."""
        self._ensure_topics(kafka_delay.level_topics(self.queue_name), 1)
        self._forwarder = kafka_delay.DelayForwarder(self.queue_name, self._consumer_config(), self._send)
        self._forwarder.start()

    def _track(self, messages: list[Any]) -> list[Delivery]:
        deliveries: list[Delivery] = []
        append = deliveries.append
        with self._track_lock:
            generation, partitions = self._generation, self._partitions
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        self.logger.warning('Kafka consume error on %r: %s', self.queue_name, redact(error))
                    continue
                partition, offset = message.partition(), message.offset()
                tracker = partitions.get(partition)
                if tracker is None:  # arrived after its partition was revoked
                    continue
                tracker.taken(offset)
                append(Delivery(message.value(), (generation, partition, offset)))
        return deliveries

    def _unread(self, consumer: Consumer) -> int:
        """Messages in our assigned partitions that this consumer has not fetched yet."""
        assigned = consumer.assignment()
        unread = 0
        positions = consumer.position(assigned)
        unknown = [tp for tp in positions if tp.offset < 0]
        committed = {tp.partition: tp.offset for tp in consumer.committed(unknown, 10)} if unknown else {}
        for tp in positions:
            low, high = consumer.get_watermark_offsets(tp, 5)
            offset = tp.offset if tp.offset >= 0 else committed.get(tp.partition, OFFSET_INVALID)
            unread += high - (offset if offset >= 0 else low)
        return unread

    def _settle(self, delivery: Delivery) -> None:
        generation, partition, offset = delivery.tag
        with self._track_lock:
            tracker = self._partitions.get(partition)
            if tracker is not None and generation == self._generation:
                tracker.done(offset)

    def _commit(self, synchronous: bool) -> None:
        """Commit, per partition, the offset before which every taken message has settled."""
        self._commit_due = time.monotonic() + COMMIT_EVERY_SECONDS
        with self._track_lock:
            offsets = [TopicPartition(self.queue_name, partition, tracker.next_offset)
                       for partition, tracker in self._partitions.items()
                       if tracker.next_offset > tracker.committed]
            for tp in offsets:
                self._partitions[tp.partition].committed = tp.offset
        if offsets and self._consumer is not None:
            try:
                # the stubs take only a literal bool here
                self._consumer.commit(offsets=offsets, asynchronous=not synchronous)  # type: ignore[call-overload]
            except KafkaException as exc:
                self.logger.warning('Kafka commit on %r failed (the messages may be redelivered): %s',
                                    self.queue_name, exc)

    ack = _settle

    def ack_many(self, deliveries: list[Delivery]) -> None:
        # A chunk of successes under one take of the lock (the base class would take it per message).
        with self._track_lock:
            partitions, current = self._partitions, self._generation
            for delivery in deliveries:
                generation, partition, offset = delivery.tag
                tracker = partitions.get(partition)
                if tracker is not None and generation == current:
                    tracker.done(offset)

    def requeue(self, delivery: Delivery) -> None:
        self.publish_many([delivery.body])  # type: ignore[list-item]  # bytes as fetched: produce takes them
        self._settle(delivery)

    # -- counting ------------------------------------------------------------------------
    def _group_offsets(self) -> tuple[Consumer, list[TopicPartition], list[int]]:
        """A non-member consumer of the group, the topic's partitions with committed offsets, and their ends."""
        if self._lag_consumer is None:
            self._lag_consumer = Consumer({**self._consumer_config(), 'enable.auto.commit': False})
        consumer = self._lag_consumer
        metadata = consumer.list_topics(self.queue_name, 10).topics[self.queue_name]
        partitions = [TopicPartition(self.queue_name, p) for p in sorted(metadata.partitions)]
        committed = consumer.committed(partitions, 10)
        ends = []
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, 10)
            if tp.offset < 0:
                tp.offset = low
            ends.append(high)
        return consumer, committed, ends

    def count(self) -> int:
        with self._lag_lock:
            _, committed, ends = self._group_offsets()
            return sum(max(0, high - tp.offset) for tp, high in zip(committed, ends))

    def purge(self) -> None:
        with self._lag_lock:
            consumer, committed, ends = self._group_offsets()
            ahead = [TopicPartition(self.queue_name, tp.partition, high)
                     for tp, high in zip(committed, ends) if high > tp.offset]
            if not ahead:
                return
            try:
                consumer.commit(offsets=ahead, asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() not in GROUP_BUSY:
                    raise
                raise RuntimeError(
                    f'cannot purge Kafka queue {self.queue_name!r} while consumers of its group are running '
                    f'(Kafka takes offset commits only from the members): stop them, then purge') from exc

    def close(self) -> None:
        super().close()
        if self._forwarder is not None:
            self._forwarder.stop()
        if self._producer is not None:
            self._release_producer()
        if self._consumer is not None:
            self._commit(synchronous=True)
            leave_and_close(self._consumer)
            self._consumer = None
        with self._lag_lock:
            if self._lag_consumer is not None:
                self._lag_consumer.close()
                self._lag_consumer = None
