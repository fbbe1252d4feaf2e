"""``is_using_distributed_frequency_control``: one ``qps`` shared by every consumer of a queue, through Redis.

:class:`RedisPacer` is the :class:`~fsdf.controls.rate.LocalPacer` schedule kept in Redis
(``fsdf:rate:<queue>``, a hash of ``next_due`` and ``issued``) and advanced by one Lua script,
so every consumer of the queue, on every machine, takes its starts from one schedule. The
script reads Redis's ``TIME``: all machines share one clock and their own clocks never matter.

It behaves like the local pacer: start n is due at ``t0 + n / qps``; after a pause only
``BURST_SECONDS`` of credit is kept, so no burst of catch-up starts; a consumer waits at most
``MAX_WAIT_SECONDS`` at a time, so a stop is noticed within a second. A consumer that joins
or leaves changes nothing in the schedule, so the queue's rate holds through it (it does not
wait for shares to be handed out again). Consumers of one queue should agree on ``qps``: each
start is spaced by the interval of the consumer that takes it.

While Redis cannot be reached the consumer starts nothing (it logs why every 10 s and asks
again every second): running past a shared limit is what the option exists to prevent.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

import redis

from fsdf.controls.rate import BURST_SECONDS, EARLY_SECONDS, MAX_WAIT_SECONDS, Pacer
from fsdf.log import EveryNSeconds
from fsdf.redis_connection import redis_client

RETRY_SECONDS = 1.0  # how long to wait before asking an unreachable Redis again

# KEYS[1] the schedule; ARGV: qps, most, max_credit (starts), early (s). Returns {count, wait in us, issued}.
_TAKE_SCRIPT = """
redis.replicate_commands()  -- writes after TIME: needed before Redis 5, a no-op since
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local qps, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_credit, early = tonumber(ARGV[3]), tonumber(ARGV[4])
local interval = 1 / qps
local state = redis.call('HMGET', KEYS[1], 'next_due', 'issued')
local next_due = math.max(tonumber(state[1]) or now, now - max_credit * interval)
local issued = tonumber(state[2]) or 0
local count = 0
if next_due - now <= early then
  count = math.min(most, math.floor((now + early - next_due) * qps) + 1)
  next_due = next_due + count * interval
  issued = issued + count
  redis.call('HSET', KEYS[1], 'next_due', string.format('%.6f', next_due), 'issued', issued)
  redis.call('PEXPIRE', KEYS[1], math.ceil((next_due - now + 60) * 1000))
end
return {count, math.floor((next_due - now) * 1000000), issued}
"""


def rate_key(queue_name: str) -> str:
    """The Redis hash holding a queue's shared start schedule."""
    return f'fsdf:rate:{queue_name}'


class RedisPacer(Pacer):
    """Hands out start permits from a schedule in Redis shared by every consumer of the queue."""

    def __init__(self, queue_name: str, qps: float, logger: Optional[logging.Logger] = None,
                 client: Optional[redis.Redis] = None) -> None:
        if qps <= 0:
            raise ValueError(f'qps must be > 0, got {qps}')
        self.qps = qps
        self.key = rate_key(queue_name)
        self.max_credit = max(1.0, qps * BURST_SECONDS)
        self.logger = logger or logging.getLogger(f'fsdf.{queue_name}')
        self._redis = client or redis_client()
        self._script = self._redis.register_script(_TAKE_SCRIPT)
        self._errors = EveryNSeconds(10)
        self._issued: Optional[int] = None        # the queue's total permits, as last seen
        self._window_issued: Optional[int] = None  # the same at the start of the governor's window

    def take(self, most: int, stopping: threading.Event) -> int:
        if most <= 0:
            return 0
        while not stopping.is_set():
            try:
                count, wait_us, issued = self._script(keys=[self.key],
                                                      args=[self.qps, most, self.max_credit, EARLY_SECONDS])
            except redis.RedisError as exc:
                if self._errors.ready(time.monotonic()):
                    self.logger.error('distributed qps: no answer from Redis, starting nothing until it answers: %s',
                                      exc)
                stopping.wait(RETRY_SECONDS)
                continue
            self._issued = issued
            if count:
                return count
            stopping.wait(min(MAX_WAIT_SECONDS, wait_us / 1e6))
        return 0

    def window_starts(self, given: int) -> int:
        """Permits every consumer of the queue took since the last call (``given`` the first time)."""
        previous, self._window_issued = self._window_issued, self._issued
        if previous is None or self._issued is None or self._issued < previous:  # first window, or key expired
            return given
        return self._issued - previous
