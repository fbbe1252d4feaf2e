"""One Redis connection pool per process, built from the settings (``REDIS_URL`` or the ``REDIS_*`` fields).

Every Redis user in fsdf (brokers, RPC results, filters, the rate limiter, heartbeats, schedule
claims) takes its client from here, so a process opens one pool however many queues it serves.
Clients retry a command once after a dropped connection; longer outages surface as
``redis.ConnectionError`` to the caller, whose loop backs off and tries again.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from fsdf.config import settings
from fsdf.runtime import default_runtime
from fsdf.secrets import redact

SOCKET_TIMEOUT_SECONDS = 30.0  # above any blocking command fsdf issues (those wait at most a few seconds)


def redis_client(url: Optional[str] = None, raw: bool = False) -> redis.Redis:
    """The shared client for ``url`` (default: the settings' Redis); replies are decoded as UTF-8 text.

    ``raw``: replies are bytes, for reading message bodies, which any program may have pushed (one
    body that is not UTF-8 would make a whole decoded reply fail after Redis has moved its messages).
    """
    url = url or settings.redis_url()
    key = ('redis', os.getpid(), url, raw)  # a forked child must not share its parent's sockets
    return default_runtime().shared(key, lambda: _new_client(url, raw), redis.Redis.close)


def _new_client(url: str, raw: bool = False) -> redis.Redis:
    try:
        return redis.Redis.from_url(
            url, decode_responses=not raw, socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=5,
            health_check_interval=30, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 1),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError], max_connections=512,
            redis_connect_func=_handshake_unchecked, **_driver_info())
    except ValueError:
        # redis-py's own message quotes the part of the URL it could not read: often a password prefix.
        raise ValueError(f'{redact(url)} is not a valid Redis URL; escape special characters of its '
                         f'password with urllib.parse.quote(password, safe="")') from None


def _handshake_unchecked(connection: Any) -> None:
    """A new connection's handshake (HELLO, CLIENT SETINFO, SELECT), without a health-check PING before it.

    With ``health_check_interval``, redis-py sends a PING ahead of the first handshake command of every new
    connection (its next check is due at 0): one round trip per connection, and a consumer opens three or
    four before its first task (issue 19). The socket was connected a moment ago and the handshake's own
    replies show it works; the periodic checks run as before from its first reply on. redis-py without
    ``on_connect_check_health`` (older releases): its own handshake, unchanged.
    """
    handshake = getattr(connection, 'on_connect_check_health', None)
    if handshake is None:
        connection.on_connect()
    else:
        handshake(check_health=False)


def _driver_info() -> dict[str, Any]:
    """The client's ``CLIENT SETINFO`` name and version, looked up once per client instead of once per connection.

    redis-py 8 builds a ``DriverInfo`` for each new connection, and each reads redis-py's version from its
    installed metadata (``importlib.metadata.version``: about 0.7 ms of CPU); a consumer opens four
    connections before its first task. Earlier redis-py has no ``DriverInfo`` and looked the version up
    once, at import: nothing to pass.
    """
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py < 8
        return {}
    return {'driver_info': DriverInfo()}


def describe_redis(url: Optional[str] = None) -> str:
    """The Redis URL with its password hidden, for logs."""
    return redact(url or settings.redis_url())
