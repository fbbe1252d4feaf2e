"""The one way fsdf imports something that needs an optional extra: a missing client is a ``MissingDependencyError``.

Each extra of pyproject.toml lists the top-level modules it brings. Only a missing module of the extra asked for is
turned into the error; any other ImportError (a bug, a broken install of something else) goes up unchanged.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from fsdf.exceptions import MissingDependencyError

# extra of pyproject.toml -> the top-level modules it installs (with their own dependencies fsdf imports directly)
EXTRA_MODULES: dict[str, frozenset[str]] = {
    'redis': frozenset({'redis'}),
    'rabbitmq': frozenset({'amqpstorm', 'pamqp', 'pika'}),
    'kafka': frozenset({'confluent_kafka'}),
    'mongo': frozenset({'pymongo', 'bson'}),
    'sql': frozenset({'sqlalchemy', 'psycopg', 'pymysql'}),
    'nats': frozenset({'nats'}),
    'zeromq': frozenset({'zmq'}),
    'kombu': frozenset({'kombu', 'amqp', 'vine', 'redis'}),
    'gevent': frozenset({'gevent'}),
    'eventlet': frozenset({'eventlet'}),
    'web': frozenset({'starlette', 'uvicorn', 'anyio'}),
}


def import_optional(module_name: str, extra: str, why: str) -> ModuleType:
    """Import ``module_name`` (a client library, or an fsdf module that imports one) that needs ``extra``.

    ``why`` says what needs it, e.g. ``'broker REDIS needs the redis client'``; it starts the error message.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or '').partition('.')[0]
        if missing not in EXTRA_MODULES[extra]:
            raise
        raise MissingDependencyError(f'{why}, and {missing} is not installed: pip install "fsdf[{extra}]"',
                                     name=missing) from exc
