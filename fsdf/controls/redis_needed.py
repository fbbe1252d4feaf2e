"""The Redis-backed controls load through here, so a missing redis client is a clear error naming the option."""
from __future__ import annotations

from types import ModuleType

from fsdf._optional import import_optional


def load_redis_control(module_name: str, option: str) -> ModuleType:
    """Import a control module that needs redis-py; MissingDependencyError naming the extra if it is missing."""
    return import_optional(module_name, 'redis', f'{option} keeps its state in Redis and needs the redis client')
