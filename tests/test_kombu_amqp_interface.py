"""The interface tests of test_broker_interface.py, on KOMBU through kombu's AMQP transport (RabbitMQ).

test_broker_interface.py runs KOMBU on Redis; the transport is picked by ``KOMBU_URL``, so this module
points it at the suite's RabbitMQ and imports the same tests with its own ``broker_kind``.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from fsdf import BrokerEnum
from test_broker_interface import *  # noqa: F401,F403  (the tests and their broker/open_broker fixtures)
from test_broker_interface import broker, open_broker  # noqa: F401  (fixtures: not in the * import)


@pytest.fixture
def broker_kind(rabbitmq_server) -> Iterator[BrokerEnum]:
    """KOMBU pointed at the suite's RabbitMQ for one test, then back to what it was."""
    from conftest import _point_fsdf_at
    from fsdf.config import settings
    before = settings.KOMBU_URL
    _point_fsdf_at('KOMBU_URL', rabbitmq_server.url)
    yield BrokerEnum.KOMBU
    _point_fsdf_at('KOMBU_URL', before)
