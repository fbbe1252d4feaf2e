"""When a consumer is taken for dead: the one rule every broker with leases applies.

Consumers that hold messages beat every ``lease_check_seconds`` (2 s on Redis, 4 s on SQLite and
MongoDB). Another consumer of the queue takes one for dead, and puts its messages back, when its
last beat is ``STALE_AFTER_SECONDS`` old, or at once when it ran on this host and its process is
gone (a pid can be checked only where it lives). 12 s is three missed beats of the slowest beater:
a busy machine or a short outage of the backend is not a death, and a dead consumer elsewhere has
its messages back within seconds.
"""
from __future__ import annotations

from typing import Optional

from fsdf.hosts import HOST, process_alive

STALE_AFTER_SECONDS = 12.0


def is_dead(host: Optional[str], pid: Optional[int], last_beat: float, now: float,
            stale_after: Optional[float] = None) -> bool:
    """A consumer that last beat at ``last_beat`` (epoch seconds) is dead at ``now``.

    ``stale_after`` defaults to ``STALE_AFTER_SECONDS`` as it is when called; ``math.inf`` trusts
    no staleness (only a gone process of this host counts). A ``pid`` of None is not checked.
    """
    if now - last_beat >= (STALE_AFTER_SECONDS if stale_after is None else stale_after):
        return True
    return host == HOST and pid is not None and not process_alive(pid)


def host_and_pid(consumer_id: str) -> tuple[str, Optional[int]]:
    """The host and pid in a ``Broker.consumer_id`` (``<host>:<pid>:<suffix>``); pid None if it is not one."""
    host, _, rest = consumer_id.partition(':')
    pid = rest.partition(':')[0]
    return host, int(pid) if pid.isdigit() else None
