"""Server brokers: fsdf's publish and consume throughput next to a hand-written loop with the same client.

For RABBITMQ_AMQPSTORM, RABBITMQ_PIKA, KAFKA, MONGOMQ, SQLACHEMY, NATS (nats-server 2.9 with JetStream),
ZEROMQ (no server; the consume measurement's messages come from a pyzmq PUSH process) and KOMBU (KOMBU_REDIS,
KOMBU_AMQP: kombu on Redis and on RabbitMQ, against a kombu SimpleQueue loop and against fsdf REDIS_ACK_ABLE /
RABBITMQ_AMQPSTORM on the same server),
on servers started here with tests/servers/
(RabbitMQ itself; Kafka: Tansu, a Kafka-protocol server; MongoDB: nx-27017, a MongoDB-wire server; PostgreSQL 15
for SQLACHEMY, whose hand-written loop is C threads each running a SKIP LOCKED transaction per message):
  publish one    N calls, one publish each: ``task.push(i)`` against the client's confirmed single publish
                 (amqpstorm/pika confirm mode, mandatory; confluent-kafka produce + flush; pymongo insert_one).
  publish batch  ``task.push_many(range(N))`` against the client's batch (AMQP transaction of the whole
                 batch; produce all + one flush; insert_many). Both sides encode their JSON inside the
                 timing and publish one message first as a warm-up (connections, channels, producer id).
  consume        one worker process, concurrency C: fsdf's consumer (THREADING x C; for Kafka also SINGLE_THREAD,
                 which runs calls in the fetch thread as the Kafka loop does) against a hand-written loop
                 (amqpstorm/pika basic.consume + ThreadPoolExecutor with prefetch C, acks from the pool;
                 a confluent-kafka consume loop of up to 500 at a time committing after each batch, run inline and, as a
                 second Kafka reference, handed to ThreadPoolExecutor(C); C threads each looping
                 pymongo find_one_and_update -> run -> delete_one). Time runs from the first task's start
                 to the last message settled, so connecting and joining the consumer group are not timed.
The raw loops use the same queue shape as fsdf (durable x-max-priority queue and persistent messages;
a 4-partition topic with acks=all, idempotence and linger.ms=2; documents {msg, state, time} with an index
on (state, time)) and JSON bodies of about the size of fsdf's (the argument, a task id and a publish time:
what any task system sends), so the ratio is the cost of fsdf's layer, not of the bytes on the wire.
Each measurement runs in its own process; medians of --repeat runs.

Usage: python bench/brokers_raw.py [RABBITMQ_AMQPSTORM RABBITMQ_PIKA KAFKA MONGOMQ SQLACHEMY NATS ZEROMQ] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

from benchlib import Countdown, Measurements, machine_description

ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = 'RESULT '
CONCURRENCY = 50  # fsdf's default concurrent_num; the raw loops get the same
RUN_TIMEOUT = 300
# Messages per measurement (publish one, publish batch, consume): amqpstorm waits ~10 ms for each confirm.
COUNTS = {'RABBITMQ_AMQPSTORM': (300, 20000, 10000), 'RABBITMQ_PIKA': (2000, 20000, 10000),
          'KAFKA': (2000, 50000, 100000), 'MONGOMQ': (1000, 5000, 3000), 'SQLACHEMY': (2000, 20000, 10000),
          'NATS': (3000, 20000, 20000), 'ZEROMQ': (20000, 50000, 50000),
          'KOMBU_REDIS': (2000, 10000, 5000), 'KOMBU_AMQP': (300, 10000, 5000)}
SERVER_SETTING = {'RABBITMQ_AMQPSTORM': 'RABBITMQ_URL', 'RABBITMQ_PIKA': 'RABBITMQ_URL',
                  'KAFKA': 'KAFKA_BOOTSTRAP_SERVERS', 'MONGOMQ': 'MONGO_CONNECT_URL',
                  'SQLACHEMY': 'SQLACHEMY_ENGINE_URL', 'NATS': 'NATS_URL', 'ZEROMQ': 'ZEROMQ_HOST',
                  'KOMBU_REDIS': 'REDIS_URL', 'KOMBU_AMQP': 'RABBITMQ_URL'}
AMQP_QUEUE_ARGUMENTS = {'x-max-priority': 10}  # what fsdf declares
KAFKA_PRODUCER = {'acks': 'all', 'enable.idempotence': True, 'linger.ms': 2}  # what fsdf uses
KAFKA_PARTITIONS = 4  # what fsdf creates


def body(i: int) -> str:
    """A call as a hand-written system sends it: the argument, an id and a publish time (fsdf adds the same)."""
    return json.dumps({'i': i, 'extra': {'task_id': uuid.uuid4().hex, 'publish_time': time.time()}})


class Done(Countdown):
    """A countdown of settled tasks that also remembers when the first task started."""

    def __init__(self, total: int) -> None:
        super().__init__(total)
        self.first = 0.0

    def started(self) -> None:
        """A task started (only the first one is recorded)."""
        if not self.first:
            self.first = time.perf_counter()

    def seconds(self) -> float:
        """Seconds from the first start to the last settle (waits for it)."""
        return self.wait(RUN_TIMEOUT) - self.first


# -- hand-written loops, one class per client ---------------------------------------------------------
class RawAmqpstorm:
    """amqpstorm: confirmed publishes, a transaction per batch, basic.consume + ThreadPoolExecutor."""

    def __init__(self, url: str, queue: str) -> None:
        import amqpstorm
        self.queue = queue
        self.connection = amqpstorm.UriConnection(url)
        self.channel = self.connection.channel()
        self.channel.queue.declare(queue, durable=True, arguments=AMQP_QUEUE_ARGUMENTS)
        self.properties = {'delivery_mode': 2, 'content_type': 'application/json'}
        self.confirmed = self.transacted = None  # publishing channels, opened on first use

    def publish_one(self, bodies: Iterable[str]) -> None:
        if self.confirmed is None:
            self.confirmed = self.connection.channel()
            self.confirmed.confirm_deliveries()
        for text in bodies:
            self.confirmed.basic.publish(text, self.queue, properties=self.properties, mandatory=True)

    def publish_batch(self, bodies: list[str]) -> None:
        if self.transacted is None:
            self.transacted = self.connection.channel()
            self.transacted.tx.select()
        for text in bodies:
            self.transacted.basic.publish(text, self.queue, properties=self.properties)
        self.transacted.tx.commit()

    def consume(self, done: Done, work: Callable[[dict], object]) -> float:
        pool = ThreadPoolExecutor(CONCURRENCY)

        def run(message) -> None:
            done.started()
            work(json.loads(message.body))
            message.ack()
            done.tick()

        self.channel.basic.qos(CONCURRENCY)
        self.channel.basic.consume(lambda message: pool.submit(run, message), self.queue, no_ack=False)
        threading.Thread(target=self.channel.start_consuming, daemon=True).start()
        return done.seconds()


class RawPika(RawAmqpstorm):
    """pika BlockingConnection: confirmed publishes, a transaction per batch, basic_consume + ThreadPoolExecutor."""

    def __init__(self, url: str, queue: str) -> None:
        import pika
        self.queue = queue
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.queue_declare(queue, durable=True, arguments=AMQP_QUEUE_ARGUMENTS)
        self.properties = pika.BasicProperties(delivery_mode=2, content_type='application/json')
        self.confirmed = self.transacted = None

    def publish_one(self, bodies: Iterable[str]) -> None:
        if self.confirmed is None:
            self.confirmed = self.connection.channel()
            self.confirmed.confirm_delivery()
        for text in bodies:
            self.confirmed.basic_publish('', self.queue, text.encode(), self.properties, mandatory=True)

    def publish_batch(self, bodies: list[str]) -> None:
        if self.transacted is None:
            self.transacted = self.connection.channel()
            self.transacted.tx_select()
        for text in bodies:
            self.transacted.basic_publish('', self.queue, text.encode(), self.properties)
        self.transacted.tx_commit()

    def consume(self, done: Done, work: Callable[[dict], object]) -> float:
        pool = ThreadPoolExecutor(CONCURRENCY)
        channel, connection = self.channel, self.connection

        def run(tag: int, payload: bytes) -> None:
            done.started()
            work(json.loads(payload))
            # pika is not thread-safe: the ack goes to the connection's thread (pika's documented way).
            connection.add_callback_threadsafe(lambda: (channel.basic_ack(tag), done.tick()))

        channel.basic_qos(prefetch_count=CONCURRENCY)
        channel.basic_consume(self.queue, lambda ch, method, properties, payload: pool.submit(
            run, method.delivery_tag, payload))
        threading.Thread(target=channel.start_consuming, daemon=True).start()
        return done.seconds()


def take(consumer) -> list:
    """Up to 500 messages that are here, else wait for the first: consume(500, t) alone waits for all 500,
    so a partial batch would sit out the whole wait (fsdf's fetch does the same, see KafkaBroker._take)."""
    return consumer.consume(500, 0) or consumer.consume(1, 0.5)


class RawKafka:
    """confluent-kafka: produce + flush per message, produce all + one flush, a consume/commit loop."""

    def __init__(self, bootstrap: str, queue: str) -> None:
        from confluent_kafka import KafkaError, KafkaException, Producer
        from confluent_kafka.admin import AdminClient, NewTopic
        self.bootstrap, self.queue = bootstrap, queue
        self.producer = Producer({'bootstrap.servers': bootstrap, **KAFKA_PRODUCER})
        admin = AdminClient({'bootstrap.servers': bootstrap})
        created = admin.create_topics([NewTopic(queue, KAFKA_PARTITIONS, 1)])
        try:
            created[queue].result(15)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise

    def publish_one(self, bodies: Iterable[str]) -> None:
        for text in bodies:
            self.producer.produce(self.queue, text.encode())
            self.producer.flush()

    def publish_batch(self, bodies: list[str]) -> None:
        for text in bodies:
            while True:
                try:
                    self.producer.produce(self.queue, text.encode())
                    break
                except BufferError:
                    self.producer.poll(0.1)
        self.producer.flush()

    def consume(self, done: Done, work: Callable[[dict], object]) -> float:
        from confluent_kafka import Consumer
        consumer = Consumer({'bootstrap.servers': self.bootstrap, 'group.id': self.queue, 'enable.auto.commit': False,
                             'auto.offset.reset': 'earliest'})
        consumer.subscribe([self.queue])

        def loop() -> None:
            while not done.done.is_set():
                messages = take(consumer)
                settled = 0
                for message in messages:
                    if message.error():
                        continue
                    done.started()
                    work(json.loads(message.value()))
                    settled += 1
                if settled:
                    consumer.commit(asynchronous=True)
                    for _ in range(settled):
                        done.tick()

        threading.Thread(target=loop, daemon=True).start()
        return done.seconds()

    def consume_pooled(self, done: Done, work: Callable[[dict], object]) -> float:
        """The same loop handing each batch to ThreadPoolExecutor(C) and committing once the batch is done."""
        from concurrent.futures import wait
        from confluent_kafka import Consumer
        consumer = Consumer({'bootstrap.servers': self.bootstrap, 'group.id': self.queue, 'enable.auto.commit': False,
                             'auto.offset.reset': 'earliest'})
        consumer.subscribe([self.queue])
        pool = ThreadPoolExecutor(CONCURRENCY)

        def run(value: bytes) -> None:
            done.started()
            work(json.loads(value))
            done.tick()

        def loop() -> None:
            while not done.done.is_set():
                messages = [message for message in take(consumer) if not message.error()]
                if messages:
                    wait([pool.submit(run, message.value()) for message in messages])
                    consumer.commit(asynchronous=True)

        threading.Thread(target=loop, daemon=True).start()
        return done.seconds()


class RawMongo:
    """pymongo: insert_one, insert_many, and C threads looping find_one_and_update -> run -> delete_one."""

    def __init__(self, url: str, queue: str) -> None:
        import pymongo
        self.pymongo = pymongo
        self.collection = pymongo.MongoClient(url).get_default_database('fsdf')[queue]
        self.collection.create_index([('state', 1), ('time', 1)])

    def publish_one(self, bodies: Iterable[str]) -> None:
        for text in bodies:
            self.collection.insert_one({'msg': text, 'state': 0, 'time': time.time()})

    def publish_batch(self, bodies: list[str]) -> None:
        now = time.time()
        self.collection.insert_many([{'msg': text, 'state': 0, 'time': now} for text in bodies])

    def consume(self, done: Done, work: Callable[[dict], object]) -> float:
        take = self.collection.find_one_and_update
        after = self.pymongo.ReturnDocument.AFTER

        def loop() -> None:
            while not done.done.is_set():
                document = take({'state': 0}, {'$set': {'state': 1, 'taken_at': time.time()}}, sort=[('time', 1)],
                                return_document=after)
                if document is None:
                    time.sleep(0.002)
                    continue
                done.started()
                work(json.loads(document['msg']))
                self.collection.delete_one({'_id': document['_id']})
                done.tick()

        for _ in range(CONCURRENCY):
            threading.Thread(target=loop, daemon=True).start()
        return done.seconds()


class RawSql:
    """SQLAlchemy Core on PostgreSQL (psycopg): INSERT per publish, one multi-row INSERT per batch, and C threads
    each looping BEGIN; SELECT ... ORDER BY due, id LIMIT 1 FOR UPDATE SKIP LOCKED -> run -> DELETE; COMMIT."""

    def __init__(self, url: str, queue: str) -> None:
        import sqlalchemy as sa
        self.sa = sa
        self.engine = sa.create_engine(url, pool_size=CONCURRENCY + 5)
        self.table = sa.Table(  # fsdf's row shape, so fsdf consumes what this publishes
            queue, sa.MetaData(), sa.Column('id', sa.BigInteger, primary_key=True),
            sa.Column('body', sa.Text, nullable=False),
            sa.Column('due', sa.Double, nullable=False, server_default=sa.text('extract(epoch from now())')),
            sa.Column('lease', sa.String(32)), sa.Column('consumer', sa.String(255)), sa.Column('taken_at', sa.Double))
        sa.Index(f'{queue}_due', self.table.c.due, self.table.c.id, postgresql_where=self.table.c.lease.is_(None))
        self.table.create(self.engine, checkfirst=True)

    def publish_one(self, bodies: Iterable[str]) -> None:
        for text in bodies:
            with self.engine.begin() as connection:
                connection.execute(self.sa.insert(self.table).values(body=text))

    def publish_batch(self, bodies: list[str]) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.sa.insert(self.table).values([{'body': text} for text in bodies]))

    def consume(self, done: Done, work: Callable[[dict], object]) -> float:
        sa, table = self.sa, self.table
        take = (sa.select(table.c.id, table.c.body).where(table.c.lease.is_(None), table.c.due <= time.time())
                .order_by(table.c.due, table.c.id).limit(1).with_for_update(skip_locked=True))

        def loop() -> None:
            while not done.done.is_set():
                with self.engine.begin() as connection:
                    row = connection.execute(take).first()
                    if row is not None:
                        done.started()
                        work(json.loads(row.body))
                        connection.execute(sa.delete(table).where(table.c.id == row.id))
                if row is None:
                    time.sleep(0.002)
                    continue
                done.tick()

        for _ in range(CONCURRENCY):
            threading.Thread(target=loop, daemon=True).start()
        return done.seconds()


class RawNats:
    """nats-py on its own asyncio loop: one awaited JetStream publish per message, a batch as concurrent
    publishes in chunks of 1,000 (what fsdf sends), and an async pull loop (fetch up to C, run inline,
    ack each) on fsdf's stream shape (work-queue stream ``<queue>``, subject ``fsdf.q.<queue>``, durable
    pull consumer ``fsdf``), so fsdf consumes what this publishes."""

    def __init__(self, url: str, queue: str) -> None:
        import asyncio

        import nats
        from nats.js import api
        self.asyncio, self.queue, self.subject = asyncio, queue, f'fsdf.q.{queue}'
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(nats.connect(url))
        self.js = self.client.jetstream()
        self.loop.run_until_complete(self.js.add_stream(api.StreamConfig(
            name=queue, subjects=[self.subject, f'fsdf.d.{queue}'], retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE)))
        self.loop.run_until_complete(self.js.add_consumer(queue, api.ConsumerConfig(
            durable_name='fsdf', filter_subject=self.subject, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=12,
            max_deliver=-1, max_ack_pending=-1)))

    def publish_one(self, bodies: Iterable[str]) -> None:
        async def run() -> None:
            for text in bodies:
                await self.js.publish(self.subject, text.encode())
        self.loop.run_until_complete(run())

    def publish_batch(self, bodies: list[str]) -> None:
        async def run() -> None:
            for start in range(0, len(bodies), 1000):
                await self.asyncio.gather(*(self.js.publish(self.subject, text.encode())
                                            for text in bodies[start:start + 1000]))
        self.loop.run_until_complete(run())

    def consume(self, done: Done, work: Callable[[dict], object]) -> float:
        async def run() -> None:
            pulls = await self.js.pull_subscribe_bind('fsdf', self.queue)
            while not done.done.is_set():
                try:
                    messages = await pulls.fetch(CONCURRENCY, timeout=1)
                except self.asyncio.TimeoutError:
                    continue
                for message in messages:
                    done.started()
                    work(json.loads(message.data))
                    await message.ack()
                    done.tick()

        threading.Thread(target=self.loop.run_until_complete, args=(run(),), daemon=True).start()
        return done.seconds()


class RawZeroMQ:
    """pyzmq PUSH/PULL on fsdf's address for the queue and its frames (``[due, body]``, due empty): a send
    per message (a batch is the same sends), and one PULL thread handing each message to
    ThreadPoolExecutor(C). ZeroMQ keeps no messages without processes, so the consume measurement's
    messages come from a PUSH subprocess started once the consumer is bound (``zeromq_feed``)."""

    def __init__(self, url: str, queue: str) -> None:
        import zmq

        from fsdf.brokers.zeromq import SEND_HWM, address
        self.zmq, self.address = zmq, address(queue)
        self.socket = zmq.Context.instance().socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, SEND_HWM)
        self.socket.connect(self.address)

    def publish_one(self, bodies: Iterable[str]) -> None:
        for text in bodies:
            self.socket.send_multipart((b'', text.encode()))

    publish_batch = publish_one

    def consume(self, done: Done, work: Callable[[dict], object]) -> float:
        pull = self.zmq.Context.instance().socket(self.zmq.PULL)
        pull.bind(self.address)
        pool = ThreadPoolExecutor(CONCURRENCY)

        def run(payload: bytes) -> None:
            done.started()
            work(json.loads(payload))
            done.tick()

        def loop() -> None:
            while not done.done.is_set():
                if pull.poll(100):
                    pool.submit(run, pull.recv_multipart()[1])

        threading.Thread(target=loop, daemon=True).start()
        zeromq_feed(self.address, done.total)
        return done.seconds()


def zeromq_feed(address: str, count: int) -> None:
    """Start a process that pushes ``count`` bodies to ``address`` (the consume measurement's messages)."""
    code = ('import sys, zmq; sys.path.insert(0, "bench"); from brokers_raw import body; '
            's = zmq.Context.instance().socket(zmq.PUSH); s.setsockopt(zmq.LINGER, -1); s.connect(sys.argv[1]); '
            '[s.send_multipart((b"", body(i).encode())) for i in range(int(sys.argv[2]))]; s.close(); '
            'zmq.Context.instance().term()')  # term waits until the consumer has every message
    subprocess.Popen([sys.executable, '-c', code, address, str(count)], cwd=ROOT)


RAW = {'RABBITMQ_AMQPSTORM': RawAmqpstorm, 'RABBITMQ_PIKA': RawPika, 'KAFKA': RawKafka, 'MONGOMQ': RawMongo,
       'SQLACHEMY': RawSql, 'NATS': RawNats, 'ZEROMQ': RawZeroMQ}


class RawKombu:
    """kombu's SimpleQueue: put per message (confirmed on RabbitMQ), and get -> ThreadPoolExecutor(C) with prefetch
    C, the acks sent by the getting thread (a kombu connection is not thread-safe)."""

    def __init__(self, url: str, queue: str) -> None:
        import kombu
        self.connection = kombu.Connection(url, transport_options={'confirm_publish': True})
        self.queue = self.connection.SimpleQueue(queue, queue_args=AMQP_QUEUE_ARGUMENTS)

    def publish_one(self, bodies: Iterable[str]) -> None:
        for text in bodies:
            self.queue.put(text, content_type='application/json', content_encoding='utf-8', delivery_mode=2)

    publish_batch = publish_one  # SimpleQueue has no batch publish

    def consume(self, done: Done, work: Callable[[dict], object]) -> float:
        from collections import deque
        pool, finished = ThreadPoolExecutor(CONCURRENCY), deque()
        self.queue.consumer.qos(prefetch_count=CONCURRENCY)

        def run(message) -> None:
            done.started()
            work(json.loads(message.body))
            finished.append(message)

        def loop() -> None:
            while not done.done.is_set():
                try:
                    pool.submit(run, self.queue.get(timeout=0.005))
                except self.queue.Empty:
                    pass
                while finished:
                    finished.popleft().ack()
                    done.tick()

        threading.Thread(target=loop, daemon=True).start()
        return done.seconds()


RAW = {**RAW, 'KOMBU_REDIS': RawKombu, 'KOMBU_AMQP': RawKombu}  # the kinds above stay (NATS and ZEROMQ too)
# Benchmark names of one kind on several servers: (the fsdf kind, fsdf's own kind for that server, to compare with)
KOMBU_ON = {'KOMBU_REDIS': ('KOMBU', 'REDIS_ACK_ABLE'), 'KOMBU_AMQP': ('KOMBU', 'RABBITMQ_AMQPSTORM')}


# -- one measurement per process ----------------------------------------------------------------------
def trivial(i: int) -> int:
    return i


def fsdf_task(kind: str, queue: str, done: Done, single_thread: bool = False):
    import fsdf
    from fsdf import BrokerEnum, ConcurrentModeEnum, task_deco

    def work(i):
        done.started()
        return i

    mode = ConcurrentModeEnum.SINGLE_THREAD if single_thread else ConcurrentModeEnum.THREADING
    if kind in KOMBU_ON:
        fsdf.patch_frame_config(KOMBU_URL=os.environ[f'FSDF_{SERVER_SETTING[kind]}'])
        kind = KOMBU_ON[kind][0]
    return task_deco(queue, broker_kind=BrokerEnum[kind], concurrent_mode=mode, concurrent_num=CONCURRENCY,
                     log_level=logging.WARNING)(work)


def child(what: str, system: str, kind: str, queue: str, count: int) -> float:
    """Run one measurement; seconds taken."""
    done = Done(count)
    if system == 'raw':
        raw = RAW[kind](os.environ.get(f'FSDF_{SERVER_SETTING[kind]}', ''), queue)
        if what == 'consume':
            return raw.consume(done, lambda message: trivial(message['i']))
        if what == 'consume_pooled':
            return raw.consume_pooled(done, lambda message: trivial(message['i']))
        publish = raw.publish_one if what == 'publish_one' else raw.publish_batch
        publish([body(-1)])  # warm up: connections, channels, the producer's id, as fsdf's below
        began = time.perf_counter()
        # Encoding counts, as fsdf's does. One at a time, each body is built just before its publish, as
        # push builds it and any program would: built all up front, in one hot loop, it cost a quarter of
        # its in-between cost (caches go cold while the thread waits for the round trip).
        bodies = (body(i) for i in range(count)) if what == 'publish_one' else [body(i) for i in range(count)]
        publish(bodies)
        return time.perf_counter() - began
    task = fsdf_task(kind, queue, done, single_thread=system == 'fsdf-single')
    if what == 'consume':
        counters = task.consumer.counters
        task.consume()  # the function marks the first start; settled counts come from the consumer
        if kind == 'ZEROMQ':  # its messages come from a process pushing once the consumer is bound
            from fsdf import BrokerEnum
            from fsdf.brokers import get_broker
            broker = get_broker(BrokerEnum.ZEROMQ, queue)
            while broker._pull is None:  # bound by the consumer's first fetch
                time.sleep(0.001)
            zeromq_feed(broker.address, count)
        deadline = time.monotonic() + RUN_TIMEOUT
        while counters.settled < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f'only {counters.settled} of {count} settled')
            time.sleep(0.001)
        seconds = time.perf_counter() - done.first
        task.stop(grace=5)
        return seconds
    task.push(-1) if what == 'publish_one' else task.push_many([-1])  # warm up, as the raw loop does
    began = time.perf_counter()
    if what == 'publish_one':
        for i in range(count):
            task.push(i)
    else:
        task.push_many(range(count))
    return time.perf_counter() - began


def child_main(argv: list[str]) -> None:
    """``--child WHAT SYSTEM KIND QUEUE COUNT``: prints a RESULT line with the seconds."""
    seconds = child(argv[0], argv[1], argv[2], argv[3], int(argv[4]))
    os.write(1, f'{RESULT_PREFIX}{json.dumps({"seconds": seconds})}\n'.encode())
    os._exit(0)  # consumer threads of the raw loops are daemons; nothing to wait for


def run_child(what: str, system: str, kind: str, queue: str, count: int) -> float:
    argv = [sys.executable, str(Path(__file__).resolve()), '--child', what, system, kind, queue, str(count)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT + 60, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])['seconds']
    raise RuntimeError(f'{what} {system} {kind} failed (exit {done.returncode}): {done.stderr[-2000:]}')


OPERATIONS = {'publish_one': 'publish one msg/s', 'publish_batch': 'publish batch msg/s', 'consume': 'consume msg/s'}


def measure(kind: str, repeat: int, scale: float) -> str:
    """A Markdown table for one broker: fsdf and the raw loop, msg/s (median), fsdf's ratio to the raw loop."""
    counts = [max(1, int(count * scale)) for count in COUNTS[kind]]
    fsdf_row, single_row, raw_row = f'fsdf THREADING x{CONCURRENCY}', 'fsdf SINGLE_THREAD', 'hand-written loop'
    pooled_row = f'hand-written loop + ThreadPoolExecutor({CONCURRENCY})'
    rows = [fsdf_row, single_row, raw_row, pooled_row] if kind == 'KAFKA' else [fsdf_row, raw_row]
    native_row = f'fsdf {KOMBU_ON[kind][1]} (same server)' if kind in KOMBU_ON else ''
    if native_row:
        rows.append(native_row)
    results = Measurements()
    for what, count in zip(OPERATIONS, counts):
        systems = [(what, 'fsdf', fsdf_row), (what, 'raw', raw_row)]  # (child's operation, child's system, row)
        if what == 'consume' and kind == 'KAFKA':  # that loop runs calls inline, as SINGLE_THREAD does
            systems[1:1] = [(what, 'fsdf-single', single_row), ('consume_pooled', 'raw', pooled_row)]
        if native_row:  # kombu's cost against fsdf's own client for the same server
            systems.append((what, 'native', native_row))
        for _ in range(repeat):
            for operation, system, row in systems:  # interleaved: load bursts hit all alike
                queue = f'bench_{what}_{system}_{uuid.uuid4().hex[:8]}'
                # 'native': fsdf's own kind for the server (its messages are its own: fsdf fills its queue)
                measured, system = (KOMBU_ON[kind][1], 'fsdf') if system == 'native' else (kind, system)
                if what == 'consume' and kind != 'ZEROMQ':  # filled by the raw batch publish: the same bodies
                    run_child('publish_batch', 'fsdf' if measured != kind else 'raw', measured, queue, count)
                results.add(row, OPERATIONS[what], count / run_child(operation, system, measured, queue, count))
    columns = list(OPERATIONS.values())
    counts_line = ', '.join(f'{what.replace("_", " ")} {count:,}' for what, count in zip(OPERATIONS, counts))
    table = results.table(rows, columns, {column: raw_row for column in columns})
    if kind == 'KAFKA':
        ratio = results.ratio(fsdf_row, OPERATIONS['consume'], pooled_row)
        table += f'\n\nconsume, fsdf THREADING / the pooled hand-written loop: {ratio:.2f}x'
    return f'{kind} (messages: {counts_line}); ratio = fsdf / hand-written, median of per-run ratios\n\n' + table


# -- servers ------------------------------------------------------------------------------------------
def start_servers(kinds: list[str]) -> list:
    """Start the servers the kinds need and point fsdf (and the children) at them; the started servers."""
    sys.path.insert(0, str(ROOT / 'tests'))
    os.environ.setdefault('FSDF_TEST_SERVERS_DIR', '/tmp/fsdf-bench-servers')
    from servers.kafka_server import KafkaServer
    from servers.mongo_server import MongoServer
    from servers.rabbitmq_server import RabbitMQServer

    started = []
    if 'KOMBU_REDIS' in kinds:
        from servers.redis_server import RedisServer
        server = RedisServer().start()
        started.append(server)
        os.environ['FSDF_REDIS_URL'] = server.url
    if any(kind.startswith('RABBITMQ') or kind == 'KOMBU_AMQP' for kind in kinds):
        server = RabbitMQServer().start()
        started.append(server)
        os.environ['FSDF_RABBITMQ_URL'] = server.url
    if 'KAFKA' in kinds:
        # Tansu, not the tests' default noida-db: noida answers an idle fetch at once instead of waiting
        # (fetch.wait.max.ms), so every idle consumer spins half a core, and fsdf runs two (the queue's
        # and its delay forwarder) where the raw loop runs one. Tansu waits, as Kafka does.
        server = KafkaServer(impl='tansu').start()
        started.append(server)
        os.environ['FSDF_KAFKA_BOOTSTRAP_SERVERS'] = server.bootstrap_servers
    if 'MONGOMQ' in kinds:
        server = MongoServer().start()
        started.append(server)
        os.environ['FSDF_MONGO_CONNECT_URL'] = server.url
    if 'NATS' in kinds:
        from servers.nats_server import NatsServer
        server = NatsServer().start()
        started.append(server)
        os.environ['FSDF_NATS_URL'] = server.url
    if 'ZEROMQ' in kinds:  # no server: its unix sockets go to a folder of this run
        os.environ.setdefault('FSDF_PERSIST_QUEUE_PATH', f'/tmp/fsdf-bench-zeromq-{os.getpid()}')
    if 'SQLACHEMY' in kinds:
        from servers.postgres_server import PostgresServer
        server = PostgresServer().start()
        started.append(server)
        os.environ['FSDF_SQLACHEMY_ENGINE_URL'] = server.url
    return started


def main() -> None:
    """Start the servers, measure each broker, print a Markdown table, stop the servers."""
    if len(sys.argv) > 1 and sys.argv[1] == '--child':
        child_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('kinds', nargs='*', help=f'any of {", ".join(RAW)} (default: all)')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--scale', type=float, default=1.0, help='multiply the message counts (quick trials)')
    args = parser.parse_args()
    unknown = set(args.kinds) - set(RAW)
    if unknown:
        parser.error(f'unknown broker kinds {sorted(unknown)}; choose from {", ".join(RAW)}')
    kinds = args.kinds or list(RAW)
    os.environ['FSDF_CONFIG_FILE'] = '0'
    print(f'{machine_description()}; median of {args.repeat}; concurrency {CONCURRENCY}')
    servers = start_servers(kinds)
    try:
        for kind in kinds:
            print('\n' + measure(kind, args.repeat, args.scale), flush=True)
    finally:
        for server in servers:
            server.stop()


if __name__ == '__main__':
    main()
