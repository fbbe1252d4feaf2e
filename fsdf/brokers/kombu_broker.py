"""KOMBU: fsdf queues through kombu's transports, on the shared RabbitMQ broker machinery.

``KOMBU_URL`` picks kombu's transport: ``amqp://``/``pyamqp://``/``amqps://`` (RabbitMQ through py-amqp)
or ``redis://``/``rediss://`` (kombu's Redis transport). A kombu connection and channel is one
:class:`~fsdf.brokers.rabbitmq.AmqpSession`, so publishing, prefetch, batched settles from the worker
threads (kombu clients are not thread-safe: the fetch thread sends them, within 10 ms) and reconnection
are :class:`~fsdf.brokers.rabbitmq.RabbitMQBroker`'s. ``KOMBU_TRANSPORT_OPTIONS`` (a JSON object) goes to
kombu as its ``transport_options``.

What differs by transport is declared in a subclass per transport, which ``KombuBroker(queue)``
picks from the URL:

- AMQP: exactly the RabbitMQ kinds' semantics (the queues are interchangeable with theirs): publisher
  confirms, requeue to the old place, delayed messages in RabbitMQ delay queues (TTL + dead-lettering).
- Redis: kombu's ack emulation, with fsdf's own take (see :class:`KombuRedisSession`). A fetched message
  waits in kombu's unacked hash until acked; a closed consumer's come back at once, a dead consumer's
  when kombu's ``visibility_timeout`` (fsdf's default 60 s; a call running longer than that is delivered
  a second time) has passed, within a second, by any consumer of the same Redis. A requeued message
  goes behind the waiting ones. kombu's Redis transport has no message TTL, so fsdf keeps delayed
  messages itself: see :class:`HeldDelays`.

kombu's SQLAlchemy transport (``sqla+...``) is refused: it works with SQLAlchemy 2.1, but a taken
message is only marked invisible in its row and comes back on a clean close alone, never after a crash,
and acked rows are never deleted; the SQLACHEMY kind is fsdf's at-least-once SQL queue.
"""
from __future__ import annotations

import heapq
import itertools
import json
import time
import uuid
from collections import deque
from typing import Any, ClassVar, Optional
from urllib.parse import urlsplit

import amqp
import kombu
import redis
from kombu.transport.redis import get_redis_error_classes

from fsdf.brokers.base import Body, Delivery
from fsdf.brokers.polling import DueThrottle
from fsdf.brokers.rabbitmq import PUMP_SLICE_SECONDS, AmqpSession, OnMessage, RabbitMQBroker, open_session
from fsdf.config import settings
from fsdf.secrets import redact

REDIS_DEFAULT_OPTIONS: dict[str, Any] = {'visibility_timeout': 60}
HOLD_MAX = 1000  # delayed messages one consumer holds until due (Redis); the rest wait in the delay queue
HOLD_SECONDS = 20.0  # a held delayed message goes back to the delay queue after this, well inside visibility
PROMOTE_SLICE_SECONDS = 0.1  # an idle fetch looks for due delayed messages this often (Redis)
PUMP_BATCH = 100  # deliveries one pump hands over at most beyond the first
RESTORE_EVERY_SECONDS = 1.0  # how often a consuming pump gives back messages unacked for the visibility timeout (Redis)


def transport_options() -> dict[str, Any]:
    """``KOMBU_TRANSPORT_OPTIONS`` as a dict; a clear ValueError if it is not a JSON object."""
    text = settings.KOMBU_TRANSPORT_OPTIONS.strip()
    if not text:
        return {}
    try:
        options = json.loads(text)
    except ValueError as exc:
        raise ValueError(f'KOMBU_TRANSPORT_OPTIONS is not JSON: {exc}') from None
    if not isinstance(options, dict):
        raise ValueError('KOMBU_TRANSPORT_OPTIONS must be a JSON object, e.g. {"visibility_timeout": 60}')
    return options


class KombuSession(AmqpSession):
    """One kombu connection and channel; the transport's own calls through kombu's channel API."""

    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, url: str, confirm: bool) -> None:
        options = {**self.default_options, **transport_options()}
        if confirm:
            options['confirm_publish'] = True  # py-amqp waits for RabbitMQ's confirm; others ignore it
        self.connection = kombu.Connection(url, transport_options=options)
        self.connection.connect()
        self.channel: Any = self.connection.channel()
        self.batch_channel: Any = None

    def declare(self, queue: str, arguments: dict) -> None:
        # kombu's default is auto_delete=True: RabbitMQ would drop the queue, messages and all, when
        # its last consumer goes.
        self.channel.queue_declare(queue=queue, durable=True, auto_delete=False, arguments=arguments)

    def _message(self, channel: Any, body: str, priority: Optional[int]) -> Any:
        data = body if isinstance(body, bytes) else body.encode()
        return channel.prepare_message(data, priority=priority, content_type='application/json',
                                       content_encoding='utf-8', properties={'delivery_mode': 2}, headers={})

    def publish(self, queue: str, body: str, priority: Optional[int]) -> None:
        self.channel.basic_publish(self._message(self.channel, body, priority), exchange='', routing_key=queue)

    def publish_batch(self, queue: str, bodies: list[str]) -> None:
        for body in bodies:  # kombu has no batch publish; each is one round trip (Redis: LPUSH)
            self.publish(queue, body, None)

    def count(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue=queue, passive=True).message_count)

    def purge(self, queue: str) -> None:
        self.channel.queue_purge(queue=queue)

    def consume(self, queue: str, prefetch: int, on_message: OnMessage) -> None:
        # Per channel (global; the channel has one consumer): RabbitMQ applies a per-consumer limit only
        # to consumers started after it, a channel's at once, so the prefetch grows with the fetches.
        self.channel.basic_qos(0, prefetch, True)
        self.channel.basic_consume(queue=queue, no_ack=False, consumer_tag=f'fsdf-{id(self)}',
                                   callback=lambda message: on_message(message.body, message.delivery_tag))

    def set_prefetch(self, prefetch: int) -> None:
        self.channel.basic_qos(0, prefetch, True)

    def pump(self, seconds: float) -> None:
        # After the first delivery, take what else has already arrived without waiting: drain_events
        # hands over one delivery per call, and a fetch that returns one message at a time pays the
        # broker's per-fetch work (settles, locks) per message.
        try:
            self.connection.drain_events(timeout=seconds)
            for _ in range(PUMP_BATCH):
                self.connection.drain_events(timeout=0)
        except TimeoutError:  # socket.timeout: nothing (more) arrived in time
            pass

    def settle(self, acks: list[int], requeues: list[int]) -> None:
        for tag in acks:
            self.channel.basic_ack(tag)
        for tag in requeues:
            self.channel.basic_reject(tag, requeue=True)

    def get(self, queue: str) -> Optional[tuple[Any, Any]]:
        """Take one message without waiting, unacked: (body, delivery tag), or None if the queue is empty."""
        message = self.channel.basic_get(queue=queue, no_ack=False)
        return None if message is None else (message.body, message.delivery_tag)

    def close(self) -> None:
        try:
            self.connection.release()
        except Exception:  # closing a connection that is already gone
            pass


class KombuAmqpSession(KombuSession):
    """kombu's py-amqp transport: a RabbitMQ connection; a batch is one AMQP transaction.

    py-amqp puts every channel of a ``confirm_publish`` connection in confirm mode, and a channel
    cannot be in both, so batches go through a second connection of their own, opened on first use.
    """

    connection_errors = amqp.Connection.connection_errors + amqp.Connection.channel_errors

    def __init__(self, url: str, confirm: bool) -> None:
        super().__init__(url, confirm)
        self.url = url
        self.batch_connection: Optional[kombu.Connection] = None
        self.unsettled: deque[int] = deque()  # delivery tags in delivery order, up to the first unsettled
        self.settled_early: set[int] = set()  # settled tags behind an unsettled one in ``unsettled``

    def consume(self, queue: str, prefetch: int, on_message: OnMessage) -> None:
        def delivered(body: Body, tag: int) -> None:
            self.unsettled.append(tag)
            on_message(body, tag)

        super().consume(queue, prefetch, delivered)

    def settle(self, acks: list[int], requeues: list[int]) -> None:
        """Acks of the oldest deliveries in one ``basic.ack(multiple=True)``, the rest one by one.

        A multiple ack settles every outstanding tag up to it; it is sent only for a run of deliveries
        from the oldest unsettled on that are all settled, and names a tag acked in this call."""
        for tag in requeues:
            self.channel.basic_reject(tag, requeue=True)
        acked = set(acks)
        self.settled_early.update(requeues)
        self.settled_early.update(acks)
        last = None
        while self.unsettled and self.unsettled[0] in self.settled_early:
            tag = self.unsettled.popleft()
            self.settled_early.discard(tag)
            if tag in acked:
                last = tag
                acked.discard(tag)
        if last is not None:
            self.channel.basic_ack(last, multiple=True)
        for tag in acked:  # behind a delivery still running
            self.channel.basic_ack(tag)

    def publish_batch(self, queue: str, bodies: list[str]) -> None:
        if self.batch_channel is None:
            self.batch_connection = kombu.Connection(self.url, transport_options=transport_options())
            self.batch_channel = self.batch_connection.channel()
            self.batch_channel.tx_select()
        for body in bodies:
            self.batch_channel.basic_publish(self._message(self.batch_channel, body, None), exchange='',
                                             routing_key=queue)
        self.batch_channel.tx_commit()

    def close(self) -> None:
        super().close()
        if self.batch_connection is not None:
            try:
                self.batch_connection.release()
            except Exception:  # closing a connection that is already gone
                pass


# Takes up to ARGV[1] messages from the queue's lists (KEYS[3:], kombu's priority order) and, in the same
# step, writes each to kombu's unacked hash (KEYS[2]) and index (KEYS[1], scored ARGV[2]) in kombu's own
# format, so kombu's restore_visible (ours or another kombu program's) gives them back after a crash.
# A text that is not kombu's JSON gets the tag ARGV[3]..n and is kept as a JSON string: fsdf dead-letters it as
# malformed, but if its consumer dies first, kombu's restore cannot requeue it (it logs it and drops it).
TAKE_SCRIPT = """
local out, n = {}, tonumber(ARGV[1])
local function text(v) if type(v) == 'string' then return v end return '' end
for i = 3, #KEYS do
  while #out < 2 * n do
    local raw = redis.call('RPOP', KEYS[i])
    if not raw then break end
    local ok, msg = pcall(cjson.decode, raw)
    local tag, entry
    if ok and type(msg) == 'table' and type(msg.properties) == 'table'
        and type(msg.properties.delivery_tag) == 'string' then
      local info = msg.properties.delivery_info
      if type(info) ~= 'table' then info = {} end
      tag = msg.properties.delivery_tag
      entry = '[' .. raw .. ',' .. cjson.encode(text(info.exchange)) .. ','
        .. cjson.encode(text(info.routing_key)) .. ']'
    else
      tag = ARGV[3] .. #out
      entry = cjson.encode({raw, '', ARGV[4]})
    end
    redis.call('ZADD', KEYS[1], ARGV[2], tag)
    redis.call('HSET', KEYS[2], tag, entry)
    out[#out + 1] = raw
    out[#out + 1] = tag
  end
end
return out
"""


class KombuRedisSession(KombuSession):
    """kombu's Redis transport with ack emulation; messages are taken atomically into kombu's unacked hash.

    kombu's own consumer (BRPOP, then a second command that records the message as unacked) loses the
    message it has popped when its process dies between the two, and it keeps a BRPOP outstanding the
    whole time it may consume: a kill -9 lost one message in most runs. Here one Lua call pops up to the
    prefetch's room and records each as kombu does (``unacked`` hash and ``unacked_index`` by time), so a
    message is always in the queue or in the unacked hash. An idle pump waits with ``BLMOVE q q RIGHT
    RIGHT`` (it takes nothing), and at most every ``RESTORE_EVERY_SECONDS`` a pump runs kombu's
    ``restore_visible``: messages unacked for ``visibility_timeout`` go back to the queue.
    A requeue and a close give messages back as kombu's reject and shutdown do.
    """

    connection_errors = tuple(get_redis_error_classes()[0]) + tuple(get_redis_error_classes()[1])
    default_options = REDIS_DEFAULT_OPTIONS

    def __init__(self, url: str, confirm: bool) -> None:
        super().__init__(url, confirm)
        channel = self.channel
        # A plain client on kombu's pool: kombu's prefixing client would prefix only the script's first key.
        self.redis = redis.Redis(connection_pool=channel.client.connection_pool)
        self.prefix: str = channel.global_keyprefix or ''
        self.take_script = self.redis.register_script(TAKE_SCRIPT)
        self.tag_prefix = f'fsdf-{uuid.uuid4().hex}-'
        self.taken = 0  # for the tags of texts that are not kombu's JSON
        self.held: set[str] = set()  # taken, not yet settled: given back on close
        self.restore_throttle = DueThrottle(RESTORE_EVERY_SECONDS)
        self.queue = ''
        self.prefetch = 1
        self.on_message: Optional[OnMessage] = None

    def count(self, queue: str) -> int:
        # A passive declare fails on an empty queue (Redis keeps no empty list); an ordinary one counts.
        return int(self.channel.queue_declare(queue=queue, durable=True, auto_delete=False).message_count)

    def consume(self, queue: str, prefetch: int, on_message: OnMessage) -> None:
        self.queue, self.prefetch, self.on_message = queue, prefetch, on_message

    def set_prefetch(self, prefetch: int) -> None:
        self.prefetch = prefetch

    def pump(self, seconds: float) -> None:
        assert self.on_message is not None, 'pump before consume'
        if self.restore_throttle.ready(time.time()):
            self.channel.qos.restore_visible(num=self.channel.unacked_restore_limit, interval=1)
        room = self.prefetch - len(self.held)
        taken = self.take(self.queue, room) if room > 0 else []
        for body, tag in taken:
            self.on_message(body, tag)
        if not taken and room > 0 and seconds > 0:
            key = self.prefix + self.queue  # wait for a message without taking it: it stays where it was
            self.redis.execute_command('BLMOVE', key, key, 'RIGHT', 'RIGHT', seconds)  # seconds: float

    def take(self, queue: str, count: int) -> list[tuple[Body, Any]]:
        """Up to ``count`` messages, each recorded unacked in the same step: (body, delivery tag)."""
        channel = self.channel
        keys = [self.prefix + channel.unacked_index_key, self.prefix + channel.unacked_key]
        keys += [self.prefix + channel._q_for_pri(queue, pri) for pri in channel.priority_steps]
        self.taken += 1
        flat = self.take_script(keys=keys, args=[count, time.time(), f'{self.tag_prefix}{self.taken}-', queue])
        taken = []
        for raw, tag in zip(flat[::2], flat[1::2]):
            tag = tag.decode()
            self.held.add(tag)
            taken.append((self.body_of(raw), tag))
        return taken

    def body_of(self, raw: bytes) -> Body:
        """A kombu message's body, decoded as kombu does; a text that is not kombu's JSON is the body itself."""
        try:
            payload = json.loads(raw)
            return self.channel.decode_body(payload['body'], payload['properties'].get('body_encoding'))
        except (ValueError, KeyError, TypeError, AttributeError):
            return raw

    def get(self, queue: str) -> Optional[tuple[Any, Any]]:
        taken = self.take(queue, 1)
        return taken[0] if taken else None

    def settle(self, acks: list[Any], requeues: list[Any]) -> None:  # kombu's tags are text
        if acks:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self.prefix + self.channel.unacked_index_key, *acks)
                pipe.hdel(self.prefix + self.channel.unacked_key, *acks)
                pipe.execute()
            self.held.difference_update(acks)
        for tag in requeues:  # behind the waiting ones, as kombu's reject(requeue=True)
            self.channel.qos.restore_by_tag(tag, leftmost=True)
            self.held.discard(tag)

    def close(self) -> None:
        try:  # to the front of the queue, as kombu's restore at shutdown
            for tag in list(self.held):
                self.channel.qos.restore_by_tag(tag)
        except self.connection_errors:  # gone: restore_visible gives them back after the visibility timeout
            pass
        super().close()


class KombuBroker(RabbitMQBroker):
    """A queue through kombu; ``KombuBroker(queue)`` is an instance of the subclass for ``KOMBU_URL``'s transport."""

    session_class: ClassVar[type[AmqpSession]] = KombuAmqpSession
    transport_name: ClassVar[str] = 'amqp'

    def __new__(cls, queue_name: str) -> 'KombuBroker':
        if cls is KombuBroker:
            cls = transport_class(settings.KOMBU_URL)
        return super().__new__(cls)

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self.url = settings.KOMBU_URL
        transport_options()  # a bad setting is told here, not at the first publish

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        # kombu reads the socket only while the fetch thread drains it: even a fetch that waits 0 s
        # reads once, for up to one slice (else a fetch(n, 0) would never see a message).
        return super().fetch(max_count, max(timeout, PUMP_SLICE_SECONDS))


class KombuAmqpBroker(KombuBroker):
    """KOMBU on RabbitMQ: the RabbitMQ kinds' semantics (delay queues included), through py-amqp."""

    guarantee = 'at-least-once, publisher confirms, persistent messages (RabbitMQ through kombu)'
    session_class = KombuAmqpSession


class KombuRedisBroker(KombuBroker):
    """KOMBU on Redis: kombu's ack emulation (visibility timeout), and delayed messages held by fsdf."""

    guarantee = ("at-least-once via kombu's visibility timeout: a dead consumer's messages return after "
                 "it (60 s by default), and a call running longer than it runs twice")
    session_class = KombuRedisSession
    transport_name = 'redis'
    requeue_to_front = False  # kombu puts a rejected message behind the waiting ones
    requeue_many_to_front = False
    publish_batch_size = 1000

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self.delays = HeldDelays(self)

    def publish_delayed_many(self, bodies: list[str], due: float) -> None:
        if due <= time.time():
            self.publish_many(bodies)
            return
        envelopes = [json.dumps({'due': due, 'body': body if isinstance(body, str) else body.decode()})
                     for body in bodies]
        delay_queue = self.delays.queue_name
        self._with_publisher(lambda session: _declared(session, delay_queue).publish_batch(delay_queue, envelopes))

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        # Slices, so a consumer waiting for messages still moves due delayed ones every 0.1 s.
        self.delays.promote()
        deadline = time.monotonic() + timeout  # counted from here: taking delayed messages is not waiting
        while True:
            remaining = deadline - time.monotonic()
            taken = super().fetch(max_count, min(remaining, PROMOTE_SLICE_SECONDS))
            if taken or remaining <= PROMOTE_SLICE_SECONDS or self._closed.is_set():
                return taken
            self.delays.promote()

    def close(self) -> None:
        super().close()
        self.delays.close()


def _declared(session: AmqpSession, queue: str) -> AmqpSession:
    session.declare(queue, {})
    return session


class HeldDelays:
    """Delayed messages of one queue on a transport without message TTL (kombu's Redis), moved in by fsdf.

    They wait in the kombu queue ``fsdf.delay.<queue>`` as ``{"due": epoch seconds, "body": text}``.
    Each consumer, at most every 0.1 s while it fetches, takes up to ``HOLD_MAX`` of them unacked
    on a connection of its own and holds them in memory by due time; a due one is published to the
    queue and then acked (at-least-once: a crash in between queues it twice). One held for
    ``HOLD_SECONDS`` (or a third of the visibility timeout, if less) goes back to the delay queue, so
    kombu's visibility timeout never restores one that is still held, and one due earlier behind the
    first ``HOLD_MAX`` is at most that late.
    A consumer's held messages return to the delay queue when it closes, or after the visibility
    timeout when it dies. ``count`` and ``purge`` of the queue do not see them.
    """

    def __init__(self, broker: KombuRedisBroker) -> None:
        self.broker = broker
        self.queue_name = f'fsdf.delay.{broker.queue_name}'
        self.session: Optional[KombuSession] = None
        self.held: list[tuple[float, int, Any, str, float]] = []  # (due, order, tag, envelope, taken at)
        self.order = itertools.count()
        self.throttle = DueThrottle()

    def promote(self) -> None:
        """Take waiting delayed messages and queue the due ones (throttled; the fetch thread calls it)."""
        if not self.throttle.ready(time.time()) or self.broker._closed.is_set():
            return
        try:
            self._promote()
        except (ConnectionError,) + self.broker.session_class.connection_errors as exc:
            self.broker.logger.warning('could not move delayed messages of %r: %s', self.broker.queue_name,
                                       redact(exc))
            self._drop_session()

    def _promote(self) -> None:
        session = self.session
        if session is None:
            opened = open_session(self.broker.session_class, self.broker.url, confirm=False)
            assert isinstance(opened, KombuSession)  # a KOMBU broker's session class is one
            opened.declare(self.queue_name, {})
            opened.declare(self.broker.queue_name, {})
            self.session = session = opened
        now = time.time()
        while len(self.held) < HOLD_MAX and (got := session.get(self.queue_name)) is not None:
            body, tag = got
            envelope = body.decode() if isinstance(body, bytes) else body
            heapq.heappush(self.held, (due_and_body(envelope)[0], next(self.order), tag, envelope, now))
        while self.held and self.held[0][0] <= now:
            _, _, tag, envelope, _ = heapq.heappop(self.held)
            session.publish(self.broker.queue_name, due_and_body(envelope)[1], None)
            session.settle([tag], [])
        # A third of the visibility timeout at most: a short one set by the user must not restore held ones.
        hold_seconds = min(HOLD_SECONDS, session.channel.visibility_timeout / 3)
        stale = [item for item in self.held if now - item[4] >= hold_seconds]
        if stale:
            self.held = [item for item in self.held if now - item[4] < hold_seconds]
            heapq.heapify(self.held)
            for _, _, tag, envelope, _ in stale:
                session.publish(self.queue_name, envelope, None)
                session.settle([tag], [])

    def _drop_session(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session, self.held = None, []

    def close(self) -> None:
        """Close the connection: kombu gives the held messages back to the delay queue."""
        self._drop_session()


def due_and_body(envelope: str) -> tuple[float, str]:
    """A delay queue's message: its due time and body. One that is not fsdf's envelope (another program's)
    is due now with itself as the body, so the consumer dead-letters it as malformed instead of failing here."""
    try:
        parsed = json.loads(envelope)
        return float(parsed['due']), str(parsed['body'])
    except (ValueError, KeyError, TypeError):
        return 0.0, envelope


TRANSPORTS: dict[str, type[KombuBroker]] = {
    'amqp': KombuAmqpBroker, 'pyamqp': KombuAmqpBroker, 'amqps': KombuAmqpBroker,
    'redis': KombuRedisBroker, 'rediss': KombuRedisBroker,
}


def transport_class(url: str) -> type[KombuBroker]:
    """The KOMBU broker class for a URL's transport; a clear ValueError for one fsdf does not offer."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in TRANSPORTS:
        return TRANSPORTS[scheme]
    if scheme.startswith('sqla') or scheme.startswith('sqlalchemy'):
        raise ValueError("KOMBU_URL: kombu's SQLAlchemy transport is not offered (a taken message never comes "
                         'back after a crash, and acked rows stay); use broker_kind=BrokerEnum.SQLACHEMY')
    offered = ', '.join(f'{name}://' for name in TRANSPORTS)
    raise ValueError(f'KOMBU_URL {redact(url)!r}: fsdf offers kombu transports {offered}')
