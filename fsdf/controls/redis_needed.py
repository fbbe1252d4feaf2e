"""The Redis-backed controls load through here, so a missing redis client is a clear error naming the option."""
from __future__ import annotations

import importlib
from types import ModuleType


def load_redis_control(module_name: str, option: str) -> ModuleType:
    """Import a control module that needs redis-py; ImportError saying how to install it if it is missing."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != 'redis':
            raise
        raise ImportError(f'{option} keeps its state in Redis and needs the redis client: '
                          f'pip install "fsdf[redis]"') from exc
