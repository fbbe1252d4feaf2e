"""Who and where this process is, and whether another process of this host still lives."""
from __future__ import annotations

import os
import socket

HOST = socket.gethostname()


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
