"""One Redis command through a pooled connection directly, without ``Redis.execute_command``'s per-call extras.

redis-py 8 wraps every command in a retry closure, OpenTelemetry-style records, an HIMPORT check
and maintenance-notification handling: measured with callgrind, 40,000 of the 174,000 machine
instructions of a one-value ``LPUSH`` on loopback, so a push cost more than a hand-written loop's.
fsdf's publisher retries on its own (PUBLISH_RETRY_SECONDS), so a one-message publish sends its
command here: the pool's connection, ``send_command``, ``read_response`` (redis-py's public
connection API; the reply is not passed through the client's response callbacks).

What redis-py's own call does on a dropped connection stays: the connection is disconnected, and the
command goes once through ``execute_command``, which reconnects and retries as the client is
configured. Any other error also disconnects, except a server error reply (the reply was read whole).
"""
from __future__ import annotations

from typing import Any

import redis


def send(client: redis.Redis, *command: Any) -> Any:
    """``client.execute_command(*command)``'s raw reply, at three quarters of its cost; its errors alike."""
    pool = client.connection_pool
    connection = pool.get_connection()  # connects, and replaces a connection holding unread data
    try:
        connection.send_command(*command)
        return connection.read_response()
    except redis.ResponseError:  # the server's error reply, read whole: the connection is fine
        raise
    except (redis.ConnectionError, redis.TimeoutError):
        connection.disconnect()  # then once more below, the client's way
    except BaseException:  # a reply half read (KeyboardInterrupt, say) must not reach the next command
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
    return client.execute_command(*command)  # reconnects and retries as the client is configured
