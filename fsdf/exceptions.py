"""Exceptions users raise inside tasks, and the errors fsdf raises at them."""
from __future__ import annotations


class ExceptionForRetry(Exception):
    """Raise inside a task to have it retried now (counts against ``max_retry_times``)."""


class ExceptionForRequeue(Exception):
    """Raise inside a task to give its message back to the broker, to be run again later."""


class BrokerNotAvailableError(RuntimeError):
    """The chosen broker kind is not built yet, or its client library is not installed."""


class BrokerUnreachableError(ConnectionError):
    """A publish could not reach its broker within ``PUBLISH_RETRY_SECONDS``; names the broker and queue."""


class MalformedMessageError(ValueError):
    """A message is not JSON, not an object, or does not fit the function's signature."""


class MissingDependencyError(ImportError):
    """An optional client library is not installed; the message names the ``pip install "fsdf[extra]"`` that brings it.

    ``name`` is the missing top-level module (``redis``, ``pika``...). Raised where the library is first needed
    (a broker kind, a Redis-backed option, a concurrency mode), never at ``import fsdf``.
    """
