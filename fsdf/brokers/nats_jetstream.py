"""NATS: a JetStream work-queue stream per queue, pulled by one shared durable consumer with explicit acks.

The server is ``NATS_URL`` (JetStream enabled: ``nats-server -js``). Queue ``q`` is the stream ``q``
(file storage, ``retention=workqueue``: a message is deleted once acked) with two subjects:

    fsdf.q.<q>   waiting messages, pulled by the durable consumer ``fsdf`` (explicit acks)
    fsdf.d.<q>   delayed messages, header ``Fsdf-Due: <epoch seconds>``, pulled by ``fsdf_delayed``

Another program publishes with ``js.publish('fsdf.q.q', b'{"a": 1, "b": 2}')`` (once fsdf made the stream).
Every process's consumers of ``q`` share the consumer ``fsdf``; the server hands each message to one pull.
A fetch asks for what is waiting (``no_wait``), else waits in a pull request that expires with its timeout.

Taken messages are acked (deleted) or nak'ed (requeue: the server redelivers them before the waiting
ones). A message not settled within ``ACK_WAIT_SECONDS`` (12 s, the liveness rule's staleness) goes
back to the consumer: while a process holds messages its lease thread sends "in progress" for each
every ``lease_check_seconds`` (4 s), so a running task keeps its message however long it runs, and a
dead process's messages return 12 s after its last beat. ``close`` nak's what it holds: they return at once.

Delayed messages: nats-server 2.9 has no scheduled messages. A delayed message waits on its own
subject; consumers of the queue pull that subject too (one pull request open beside each waiting
fetch), nak a message not yet due with a delay of what is left (the server keeps it and redelivers it
when due) and move a due one to ``fsdf.q.<q>`` (with a ``Nats-Msg-Id`` from its sequence, so a move
repeated after a crash is dropped by the server's 2-minute duplicate window), then ack it. So a
delayed message arrives when due while any consumer of the queue fetches, in any process.

``count`` is the consumer's ``num_pending``: waiting messages never delivered; requeued ones waiting for
redelivery are not in it (the server counts them as pending acks). ``purge`` purges the stream: waiting,
delayed and taken messages (a taken one runs on in its consumer, but would no longer return if it died).

The client is asyncio (nats-py). It runs on a loop of its own per URL, in its own thread, kept in
the runtime (not the runtime's shared loop: ASYNC consumers settle messages from that loop, and a
blocking call there waiting on the same loop would never return).

A one-message publish from a thread that publishes often goes through that thread's own client, on a
loop the thread runs itself for the call, and waits for the stream's ack as before; a thread's first
publish, publishes from a thread running an event loop, batches and everything else go through the
shared client (fsdf/brokers/nats_connections.py says when and why).
"""
from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections import deque
from typing import Any, Coroutine, Iterable, Optional

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from fsdf.brokers import liveness
from fsdf.brokers.base import Broker, Delivery
from fsdf.brokers.nats_connections import Connection, ThreadConnections
from fsdf.brokers.polling import DueThrottle
from fsdf.config import settings
from fsdf.secrets import redact

ACK_WAIT_SECONDS = liveness.STALE_AFTER_SECONDS
CONSUMER, DELAYED_CONSUMER = 'fsdf', 'fsdf_delayed'
DUE_HEADER = 'Fsdf-Due'
DELAYED_PULL_BATCH = 256
NO_WAIT_REPLY_SECONDS = 1.0  # the longest a fetch waits for the answer to "what is waiting now?"
NAME = re.compile(r'[A-Za-z0-9_-]+')


class NatsBroker(Broker):
    """A JetStream work-queue stream as a queue; see the module docstring."""

    guarantee = ('at-least-once: JetStream file storage; a dead consumer\'s messages return '
                 f'{ACK_WAIT_SECONDS:.0f} s after its last beat')
    lease_check_seconds = 4.0
    requeue_to_front = True  # a nak'ed message is redelivered before the waiting ones
    connection_errors = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.NoServersError,
                         nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                         nats.errors.StaleConnectionError, nats.js.errors.ServiceUnavailableError, OSError)
    groups_publishes = True  # many publishes in flight at once cost one hop to the loop thread and one wait

    @classmethod
    def queue_name_problem(cls, name: str) -> Optional[str]:
        """Stream names and subject tokens: letters, digits, ``_`` and ``-`` only."""
        if not NAME.fullmatch(name):
            return 'is not a NATS stream name here (only letters, digits, "_" and "-")'
        return None

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self._connection = Connection.of(settings.NATS_URL)
        self._js = self._connection.js
        self._threads = ThreadConnections.of(settings.NATS_URL)
        self._subject, self._delayed_subject = f'fsdf.q.{queue_name}', f'fsdf.d.{queue_name}'
        self._next = {name: f'$JS.API.CONSUMER.MSG.NEXT.{queue_name}.{name}' for name in (CONSUMER, DELAYED_CONSUMER)}
        self._held: set[Delivery] = set()  # fetched, not yet settled: beaten, and nak'ed on close
        self._settles: deque[tuple[str, bytes]] = deque()  # (ack subject, payload) not yet sent
        self._settles_lock = threading.Lock()
        self._settle_scheduled = False
        self._throttle = DueThrottle()
        self._loop_state = self._connection.run(self._open())

    async def _open(self) -> '_Pulls':
        """Make the stream and its two consumers (idempotent: the same config again is no change)."""
        await self._js.add_stream(api.StreamConfig(
            name=self.queue_name, subjects=[self._subject, self._delayed_subject],
            retention=api.RetentionPolicy.WORK_QUEUE, storage=api.StorageType.FILE))
        for durable, subject in ((CONSUMER, self._subject), (DELAYED_CONSUMER, self._delayed_subject)):
            await self._js.add_consumer(self.queue_name, api.ConsumerConfig(
                durable_name=durable, filter_subject=subject, ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL, ack_wait=ACK_WAIT_SECONDS, max_deliver=-1,
                max_ack_pending=-1))
        pulls = _Pulls(self)
        await pulls.subscribe()
        return pulls

    # -- publishing ------------------------------------------------------------------------
    def publish(self, body: str, priority: Optional[int] = None) -> None:
        payload = body.encode()
        if not self._threads.publish(self._subject, payload):
            self._connection.run(self._js.publish(self._subject, payload))

    def publish_many(self, bodies: list[str]) -> None:
        if bodies:  # all in flight at once: one round trip's wait for the lot, not one per message
            self._connection.run(_gather(self._js.publish(self._subject, body.encode()) for body in bodies))

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        headers = {DUE_HEADER: repr(float(due))}
        self._connection.run(_gather(self._js.publish(self._delayed_subject, body.encode(), headers=headers)
                                     for body in bodies))

    # -- consuming -------------------------------------------------------------------------
    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if self._closed.is_set():
            return []
        promote = self._throttle.ready(time.time())
        taken = [Delivery(msg.data, msg) for msg in self._connection.run(
            self._loop_state.fetch(max_count, timeout, promote))]
        self._held.update(taken)
        return taken

    def ack(self, delivery: Delivery) -> None:
        self._held.discard(delivery)
        self._settle(delivery.tag.reply, b'+ACK')

    def requeue(self, delivery: Delivery) -> None:
        self._held.discard(delivery)
        self._settle(delivery.tag.reply, b'-NAK')

    def _settle(self, subject: str, payload: bytes) -> None:
        """Queue an ack or nak; one callback on the loop sends every queued one (many threads settle at once)."""
        with self._settles_lock:
            self._settles.append((subject, payload))
            if self._settle_scheduled:
                return
            self._settle_scheduled = True
        self._connection.loop.call_soon_threadsafe(self._loop_state.send_settles)

    def take_settles(self) -> list[tuple[str, bytes]]:
        """The acks and naks to send now (called on the loop)."""
        with self._settles_lock:
            settles = list(self._settles)
            self._settles.clear()
            self._settle_scheduled = False
        return settles

    def count(self) -> int:
        info = self._connection.run(self._js.consumer_info(self.queue_name, CONSUMER))
        return int(info.num_pending or 0)

    def purge(self) -> None:
        self._connection.run(self._js.purge_stream(self.queue_name))

    def close(self) -> None:
        if self._closed.is_set():
            return
        super().close()
        held, self._held = list(self._held), set()
        try:
            self._connection.run(self._loop_state.close([delivery.tag for delivery in held]))
        except self.connection_errors as exc:  # the server is away: held messages return after the ack wait
            self.logger.warning('closing %r: NATS is unreachable (%s)', self.queue_name, redact(exc))

    # -- leases ----------------------------------------------------------------------------
    def beat(self) -> None:
        """Tell the server every held message is still being worked on, so its ack wait starts again."""
        held = [delivery.tag for delivery in self._held.copy()]
        if held:
            self._connection.run(self._loop_state.in_progress(held))


async def _gather(coroutines: Iterable[Coroutine[Any, Any, Any]]) -> None:
    """Await all, concurrently; the first error raises once all are done."""
    for result in await asyncio.gather(*coroutines, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


class _Pulls:
    """A broker's pull requests and what arrives for them, on the connection's loop (never touched elsewhere).

    Every pull request of this broker replies to ``<inbox>.<kind><n>`` (``m``: the queue, ``d``: its
    delayed subject): a status ("no messages", "request expired") comes on that subject and ends only
    the request it answers; messages come with their own subject, which says which consumer sent them.
    """

    def __init__(self, broker: NatsBroker) -> None:
        self.broker = broker
        self.client = broker._connection.client
        self.inbox = self.client.new_inbox()
        self.numbers = itertools.count()
        self.arrived: deque[Msg] = deque()  # the queue's messages not yet handed out (taken by this broker)
        self.wake = asyncio.Event()
        self.open_request = ''  # the queue pull request now waited on
        self.open_over = False  # it was answered by a status: no more messages will come for it
        self.delayed_until = 0.0  # loop time until which the delayed pull request below is open
        self.delayed_request = ''
        self.fetching = asyncio.Lock()
        self.tasks: set[asyncio.Task] = set()
        self.subscription: Any = None
        self.closed = False

    async def subscribe(self) -> None:
        self.subscription = await self.client.subscribe(f'{self.inbox}.*', cb=self.on_message)

    async def on_message(self, msg: Msg) -> None:
        # A message comes with its own subject; a status with the reply subject of the request it ends.
        if msg.subject == self.broker._delayed_subject:
            self._spawn(self.move_delayed(msg))
        elif msg.headers and msg.headers.get('Status'):
            request = msg.subject.rpartition('.')[2]
            if request == self.open_request:
                self.open_over = True
            elif request == self.delayed_request:
                self.delayed_until = 0.0
        else:
            self.arrived.append(msg)
        self.wake.set()

    async def fetch(self, max_count: int, timeout: float, promote: bool) -> list[Msg]:
        """Take up to ``max_count``: what arrived already, else what waits (no_wait), else the first to arrive."""
        async with self.fetching:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            if promote and loop.time() >= self.delayed_until:  # a busy consumer looks for due delayed messages too
                await self.pull('d', DELAYED_PULL_BATCH, None)
            if not self.arrived and not self.closed:
                await self.pull('m', max_count, None)
                await self.wait_for(max_count, max(deadline, loop.time() + NO_WAIT_REPLY_SECONDS), no_wait=True)
            while not self.arrived and not self.closed and (remaining := deadline - loop.time()) > 0.001:
                if loop.time() >= self.delayed_until:  # delayed messages reach this fetch when due
                    self.delayed_until = loop.time() + remaining
                    self.delayed_request = await self.pull('d', DELAYED_PULL_BATCH, remaining)
                await self.pull('m', 1, remaining)
                await self.wait_for(1, deadline, no_wait=False)
            return [self.arrived.popleft() for _ in range(min(max_count, len(self.arrived)))]

    async def pull(self, kind: str, batch: int, expires: Optional[float]) -> str:
        """Send a pull request to the queue's (``m``) or the delayed (``d``) consumer (``expires`` None:
        no_wait); its id."""
        request = f'{kind}{next(self.numbers)}'
        body = f'{{"batch": {batch}, "no_wait": true}}' if expires is None else \
            f'{{"batch": {batch}, "expires": {int(expires * 1e9) - 1_000_000}}}'
        if kind == 'm':
            self.open_request, self.open_over = request, False
        await self.client.publish(self.broker._next[CONSUMER if kind == 'm' else DELAYED_CONSUMER],
                                  body.encode(), reply=f'{self.inbox}.{request}')
        return request

    async def wait_for(self, count: int, deadline: float, no_wait: bool) -> None:
        """Wait until ``count`` messages arrived, the open request ended, the broker closed, or ``deadline``."""
        loop = asyncio.get_running_loop()
        while len(self.arrived) < count and not self.closed and (no_wait or not self.arrived):
            if self.open_over or (remaining := deadline - loop.time()) <= 0:
                return
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def move_delayed(self, msg: Msg) -> None:
        """A delayed message: nak it until its due time, then publish it to the queue and ack it."""
        try:
            due = float((msg.headers or {}).get(DUE_HEADER, 0))
            left = due - time.time()
            if left > 0.001:
                await msg.nak(delay=left)
                return
            sequence = msg.metadata.sequence.stream
            await self.broker._js.publish(self.broker._subject, msg.data,
                                          headers={'Nats-Msg-Id': f'fsdf-due-{self.broker.queue_name}-{sequence}'})
            await msg.ack()
        except Exception as exc:  # unsettled, the server gives it to a consumer again after the ack wait
            self.broker.logger.warning('moving a due message of %r failed: %s', self.broker.queue_name, redact(exc))

    def send_settles(self) -> None:
        """Send the acks and naks the broker queued (a loop callback)."""
        settles = self.broker.take_settles()
        if settles:
            self._spawn(self._publish_all(settles))

    async def _publish_all(self, settles: list[tuple[str, bytes]]) -> None:
        for subject, payload in settles:
            await self.client.publish(subject, payload)

    async def in_progress(self, held: list[Msg]) -> None:
        for msg in held:
            await self.client.publish(msg.reply, b'+WPI')

    async def close(self, held: list[Msg]) -> None:
        """Send what is settled, nak what is held or arrived unfetched, and stop pulling."""
        self.closed = True
        self.wake.set()
        async with self.fetching:
            pass
        await self._publish_all(self.broker.take_settles())
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        unfetched, self.arrived = list(self.arrived), deque()
        await self._publish_all([(msg.reply, b'-NAK') for msg in [*held, *unfetched]])
        if self.subscription is not None:
            await self.subscription.unsubscribe()
        await self.client.flush(timeout=5)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)  # a strong reference: the loop keeps only weak ones
        task.add_done_callback(self.tasks.discard)
