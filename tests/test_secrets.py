"""Connection secrets: a password with '/', '@' and ':' works, and never shows in an error or a log line."""
from __future__ import annotations

import threading
import traceback

import pytest

from fsdf import BrokerEnum, get_publisher, task_deco
from fsdf.config import settings
from fsdf.secrets import redact, redact_url
from helpers import wait_until

PASSWORD = 'PassPrefix/with@odd:chars'
WRONG = 'WrongPrefix/not@the:one'


@pytest.fixture(scope='module')
def password_redis():
    """A second redis-server that requires PASSWORD."""
    from servers._server_process import need
    from servers.redis_server import RedisServer
    server = need(lambda: RedisServer(port=16479, password=PASSWORD).start())
    yield server
    server.stop()


@pytest.fixture
def redis_fields(monkeypatch, password_redis):
    """Point fsdf at the password Redis through REDIS_HOST/PORT/PASSWORD (REDIS_URL empty); returns a setter."""
    monkeypatch.setattr(settings, 'REDIS_URL', '')
    monkeypatch.setattr(settings, 'REDIS_HOST', '127.0.0.1')
    monkeypatch.setattr(settings, 'REDIS_PORT', password_redis.port)
    monkeypatch.setattr(settings, 'PUBLISH_RETRY_SECONDS', 0, raising=False)

    def use(password: str) -> None:
        monkeypatch.setattr(settings, 'REDIS_PASSWORD', password)
    return use


def _every_text_of(exc: BaseException) -> str:
    return ''.join(traceback.format_exception(exc))


def test_a_password_with_slash_at_and_colon_connects(queue_name: str, redis_fields) -> None:
    # REDIS only: a lease kind's broker, closed here, is closed again at the session's end (conftest),
    # when this module's Redis is gone, and RedisLeaseBroker.close is not idempotent.
    redis_fields(PASSWORD)
    seen = []

    @task_deco(queue_name, broker_kind=BrokerEnum.REDIS)
    def work(x):
        seen.append(x)

    try:
        work.push_many(range(5))
        assert work.drain(timeout=20) == 5
        assert sorted(seen) == list(range(5))
    finally:
        work.consumer.broker.close()


def test_a_wrong_password_never_shows_in_errors_or_logs(queue_name: str, redis_fields, fsdf_logs) -> None:
    redis_fields(WRONG)

    @task_deco(queue_name, broker_kind=BrokerEnum.REDIS)  # no leases: close() has nothing to give back
    def work(x):
        pass

    with pytest.raises(Exception) as raised:
        work.push(1)
    work.consume()  # its fetch loop logs each failure
    try:
        assert wait_until(lambda: 'fetching from' in fsdf_logs.text, 10)
    finally:
        work.consumer.stop(grace=1)
        work.consumer.broker.close()
    for text in (_every_text_of(raised.value), fsdf_logs.text):
        assert 'WrongPrefix' not in text and 'not@the' not in text
    assert 'fetching from' in fsdf_logs.text  # the failure itself is still told


def test_an_unescaped_password_in_redis_url_is_not_quoted_back(queue_name: str, monkeypatch, password_redis) -> None:
    """redis-py's own error would say "Port could not be cast to integer value as 'PassPrefix'"."""
    monkeypatch.setattr(settings, 'REDIS_URL', f'redis://:{PASSWORD}@127.0.0.1:{password_redis.port}/0')
    with pytest.raises(ValueError, match='not a valid Redis URL.*urllib.parse.quote') as raised:
        get_publisher(queue_name, broker_kind=BrokerEnum.REDIS).publish({'x': 1})
    assert 'PassPrefix' not in _every_text_of(raised.value)


def test_an_escaped_redis_url_works(queue_name: str, monkeypatch, password_redis) -> None:
    monkeypatch.setattr(settings, 'REDIS_URL', password_redis.url)
    publisher = get_publisher(queue_name, broker_kind=BrokerEnum.REDIS)
    try:
        publisher.publish({'x': 1})
        assert publisher.get_message_count() == 1
    finally:
        publisher.broker.close()


def test_redact_hides_url_passwords_and_password_settings(monkeypatch) -> None:
    assert redact_url('at amqp://guest:pw@host:5672/ and mongodb://u:p/q@h:1/db') == \
        'at amqp://guest:***@host:5672/ and mongodb://u:***@h:1/db'
    assert redact_url('mongodb://h:27017/db') == 'mongodb://h:27017/db'
    monkeypatch.setattr(settings, 'REDIS_PASSWORD', 'a/b@c')
    monkeypatch.setattr(settings, 'RABBITMQ_URL', 'amqp://guest:s%2Fcret@h/')
    assert redact('auth a/b@c failed, a%2Fb%40c too; s/cret and s%2Fcret') == \
        'auth *** failed, *** too; *** and ***'
    lock = threading.Lock()  # any object: redact takes str() of what it is given
    assert redact(lock) == str(lock)
