"""Who and where this process is, and whether another process of this host still lives."""
from __future__ import annotations

import os


def _host_name() -> str:
    # os.uname's node name is what socket.gethostname() returns on POSIX, without importing socket,
    # which a worker on an embedded broker never needs otherwise (issue 19: start time).
    if hasattr(os, 'uname'):
        return os.uname().nodename
    import socket
    return socket.gethostname()


HOST = _host_name()


def process_alive(pid: int) -> bool:
    """A process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
