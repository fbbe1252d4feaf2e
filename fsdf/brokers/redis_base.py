"""What every Redis kind shares: the client, publishing, count, purge, giving messages back, delays.

A queue ``q`` is the Redis key ``q`` (a list here; REDIS_STREAM overrides for a stream). Another
program publishes with ``LPUSH q '{"a": 1, "b": 2}'``; consumers take from the other end, so the
order is first in, first out. Delayed messages wait in the sorted set ``fsdf:delayed:<q>`` (score:
due time, epoch seconds); consumers move due ones into the queue, at most every 0.1 s each.
Bodies are read as bytes (``_raw``) and decoded one message at a time by the runner, so a body
another program pushed that is not UTF-8 is dead-lettered alone, not the whole reply it came in.
"""
from __future__ import annotations

import functools
import itertools
import math
import time
import uuid
from importlib import resources
from typing import ClassVar, Iterable, Optional, Sequence, cast

import redis

from fsdf._compat import redis_commands
from fsdf.brokers.base import Body, Broker, Delivery, waited
from fsdf.brokers.polling import PROMOTE_EVERY_SECONDS, DueThrottle
from fsdf.redis_connection import redis_client
from fsdf.secrets import redact

PUBLISH_CHUNK = 10_000        # values in one LPUSH
PROMOTE_AT_MOST = 1000        # delayed messages moved by one script run
# A blocking pop waits at most this long, so a delayed message another process publishes meanwhile
# is moved into the queue soon after it is due.
MAX_BLOCK_SECONDS = 0.5
MIN_BLOCK_SECONDS = 0.01      # Redis reads a timeout of 0 as "forever"


@functools.cache
def lua(*names: str) -> str:
    """The Redis scripts ``fsdf/brokers/lua/<name>``, joined in order (a helper such as ``chunked.lua`` first)."""
    folder = resources.files('fsdf.brokers') / 'lua'
    return ''.join((folder / name).read_text(encoding='utf-8') for name in names)


class RedisBroker(Broker):
    """A Redis list as a queue; the base of every Redis kind (each says how it takes and acks)."""

    # The Lua function promote.lua calls to queue one body (the stream kind adds to a stream instead).
    push_one_lua: ClassVar[str] = "local function push_one(key, body) redis.call('LPUSH', key, body) end\n"
    connection_errors = (redis.ConnectionError, redis.TimeoutError)  # a BusyLoadingError is one
    groups_publishes = True  # one LPUSH carries any number of values

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self._redis = redis_client()
        self._raw = redis_client(raw=True)  # every read of message bodies: replies as bytes
        self._delayed_key = f'fsdf:delayed:{queue_name}'
        self._promote = self._redis.register_script(self.push_one_lua + lua('promote.lua'))
        self._promotion = DueThrottle()
        self._next_due = 0.0
        self._delay_prefix = uuid.uuid4().hex
        self._delay_numbers = itertools.count()

    # -- publishing ----------------------------------------------------------------------
    def publish(self, body: str, priority: Optional[int] = None) -> None:
        redis_commands.send(self._redis, 'LPUSH', self.queue_name, body)

    def publish_many(self, bodies: list[str]) -> None:
        if len(bodies) <= PUBLISH_CHUNK:  # one command: a pipeline around it only costs (group commit sends few)
            if bodies:
                self._push(self._redis, bodies)
            return
        with self._redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(bodies), PUBLISH_CHUNK):
                self._push(pipe, bodies[start:start + PUBLISH_CHUNK])
            pipe.execute()

    def _push(self, pipe: redis.Redis, bodies: list[str]) -> None:
        """Queue bodies at the publishing end (the back of the line), through a client or a pipeline."""
        pipe.lpush(self.queue_name, *bodies)

    def _push_front(self, pipe: redis.client.Pipeline, bodies: list[str]) -> None:
        """Queue bodies at the consuming end, in their order, so they are taken next."""
        pipe.rpush(self.queue_name, *reversed(bodies))

    def publish_delayed_many(self, bodies: Sequence[Body], due: float) -> None:
        prefix, numbers = self._delay_prefix, self._delay_numbers
        members: dict[Body, float] = {}
        for body in bodies:  # a fetched body going back (a message early for its eta) is bytes
            tag = f'{prefix}{next(numbers)}:'
            members[tag.encode() + body if isinstance(body, bytes) else tag + body] = due
        self._redis.zadd(self._delayed_key, members)  # type: ignore[type-var]  # str or bytes members
        self._next_due = min(self._next_due, due)

    def _promote_due(self) -> None:
        """Move due delayed messages into the queue, and note when the next one is due."""
        now = time.time()
        if not self._promotion.ready(now):
            return
        next_due = self._promote(keys=[self._delayed_key, self.queue_name], args=[repr(now), PROMOTE_AT_MOST])
        self._next_due = float(next_due) if next_due is not None else math.inf

    # -- consuming -----------------------------------------------------------------------
    def start_leases(self) -> None:
        """Load this broker's scripts into Redis first (``load_scripts``), then start as ``Broker.start_leases``."""
        self.load_scripts()
        super().start_leases()

    def load_scripts(self) -> None:
        """Load every script this broker runs (its ``Script`` attributes) in one round trip, so its first fetch
        runs each with one EVALSHA instead of three round trips (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA)
        before the first task. Redis away: nothing loaded, each script loads itself on its first run."""
        scripts = [value for value in vars(self).values() if isinstance(value, redis.commands.core.Script)]
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for script in scripts:
                    pipe.script_load(script.script)
                pipe.execute()
        except redis.RedisError as exc:
            self.logger.debug('could not load the scripts of %r (each loads on its first run): %s',
                              self.queue_name, redact(exc))

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        if max_count < 1 or self._closed.is_set():  # nothing to take (and XREADGROUP refuses a count of 0)
            return []
        deadline = time.monotonic() + timeout
        while True:
            self._promote_due()
            taken = self._take(max_count)
            remaining = deadline - time.monotonic()
            if taken or remaining <= 0 or self._closed.is_set():
                return taken
            until_due = max(self._next_due - time.time(), 0.0) + PROMOTE_EVERY_SECONDS
            wait = max(min(remaining, until_due, MAX_BLOCK_SECONDS), MIN_BLOCK_SECONDS)
            taken = self._take_blocking(max_count, wait)
            if taken:
                return taken

    def _take(self, max_count: int) -> list[Delivery]:
        """Take up to ``max_count`` waiting messages without blocking."""
        raise NotImplementedError

    def _take_blocking(self, max_count: int, wait: float) -> list[Delivery]:
        """Wait up to ``wait`` s for a message to arrive; take it (and maybe more)."""
        raise NotImplementedError

    def requeue(self, delivery: Delivery) -> None:
        self._give_back([delivery], to_front=False)

    def requeue_many(self, deliveries: Iterable[Delivery]) -> None:
        """Give prefetched messages back to the consuming end, in their order, so they run next."""
        deliveries = list(deliveries)
        if deliveries:
            self._give_back(deliveries, to_front=True)

    def _give_back(self, deliveries: list[Delivery], to_front: bool) -> None:
        """Queue the messages again and release them from this consumer, in one transaction."""
        with self._redis.pipeline(transaction=True) as pipe:
            bodies = cast(list[str], [d.body for d in deliveries])  # bytes as fetched: redis-py sends them as they are
            (self._push_front if to_front else self._push)(pipe, bodies)
            self._release(pipe, deliveries)
            pipe.execute()

    def _release(self, pipe: redis.client.Pipeline, deliveries: list[Delivery]) -> None:
        """Forget that this consumer holds the messages (kinds that lend messages override this)."""

    # -- the queue as a whole ------------------------------------------------------------
    def count(self) -> int:
        return self._redis.llen(self.queue_name)

    def oldest_age(self) -> Optional[float]:
        """The head's age: consumers take from the right end, so the head is index -1 (one LINDEX)."""
        head = self._raw.lindex(self.queue_name, -1)
        return 0.0 if head is None else waited(cast(bytes, head))

    def count_delayed(self) -> Optional[int]:
        """The sorted set of delayed messages (one ZCARD): every Redis kind keeps them there."""
        return self._redis.zcard(self._delayed_key)

    def purge(self) -> None:
        self._redis.delete(self.queue_name, self._delayed_key)
