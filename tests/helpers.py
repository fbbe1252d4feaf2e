"""Small helpers shared by the tests (fixtures live in conftest.py)."""
from __future__ import annotations

import time
from typing import Callable


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` s pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
