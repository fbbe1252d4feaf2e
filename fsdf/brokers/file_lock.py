"""A lock that processes of one machine take in turns, held on a file (``flock``).

A process waiting for it sleeps in the kernel and is woken as soon as the holder lets go, and the
kernel lets go for a process that dies. SQLite's own lock is taken by polling (its busy handler
sleeps 1, 2, 5 ... 100 ms between tries), so a writer that writes back to back can starve another
process for seconds; fsdf's SQLite brokers take this lock around each write transaction first.

Where ``fcntl`` does not exist (Windows) the lock does nothing and SQLite's lock alone serves.
Not for threads of one process: it is held per open file, so callers serialize their own threads.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Optional

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing, never removed: another process may hold it).

    Use as a context manager; ``close()`` releases the file (and the lock, if held).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644) if fcntl is not None else -1

    def __enter__(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, kind: Optional[type[BaseException]], error: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the file; calling it again is harmless."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
