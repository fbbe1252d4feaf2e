"""Per-message overrides: a message's ``extra`` may set a few options for itself, and wins."""
from __future__ import annotations

from typing import Any, TypedDict

from fsdf.message import EXTRA

# The options a single message may override, with the type its value must have.
MESSAGE_OVERRIDES: dict[str, type] = {'msg_expire_seconds': float, 'function_timeout': float, 'max_retry_times': int}
OVERRIDABLE = frozenset(MESSAGE_OVERRIDES)


class MessageOverrides(TypedDict, total=False):
    """What ``pub(msg, **overrides)`` accepts: options one message sets for itself."""

    msg_expire_seconds: float
    function_timeout: float
    max_retry_times: int


def check_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Validate publish-time overrides (``f.pub(msg, function_timeout=5)``); TypeError/ValueError if wrong."""
    for name, value in overrides.items():
        if name not in MESSAGE_OVERRIDES:
            raise TypeError(f'{name!r} cannot be set per message; these can: {", ".join(MESSAGE_OVERRIDES)}')
        if not _valid(MESSAGE_OVERRIDES[name], value):
            kind = 'an int' if MESSAGE_OVERRIDES[name] is int else 'a number'
            raise ValueError(f'{name} must be {kind} >= 0, got {value!r}')
    return overrides


def with_overrides(msg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of a message dict whose ``extra`` carries the checked overrides."""
    check_overrides(overrides)
    return {**msg, EXTRA: {**(msg.get(EXTRA) or {}), **overrides}}


def message_setting(extra: dict[str, Any], name: str, default: Any) -> Any:
    """The value of an option for one message: its ``extra`` if valid there, else the task's ``default``."""
    value = extra.get(name)
    if value is None or not _valid(MESSAGE_OVERRIDES[name], value):
        return default  # absent, or garbage from a foreign publisher: the decorator's value holds
    return value


def _valid(kind: type, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    allowed = (int,) if kind is int else (int, float)
    return isinstance(value, allowed) and value >= 0
