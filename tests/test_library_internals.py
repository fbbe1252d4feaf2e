"""The private attributes of other libraries that fsdf/_compat/ uses, checked against the installed versions.

Each test calls the adapter on the real library (and a real RabbitMQ where the client needs one) and
asserts what fsdf relies on, so a release that renames or changes one of them fails here, by name,
before it breaks a broker. The bounds in pyproject.toml keep users below versions not yet checked.
"""
from __future__ import annotations

import inspect
import json

import pytest

from fsdf._compat import json_internals
from helpers import wait_until


# -- the stdlib's json: the C encoder and scanner -------------------------------------------------------------
def test_compact_encoder_writes_what_json_dumps_writes() -> None:
    def default(value):
        raise TypeError('not JSON')

    encoder = json_internals.compact_encoder(default)
    assert encoder is not None, 'json.encoder.c_make_encoder is gone: fsdf falls back to the slower JSONEncoder'
    value = {'a': 1, 'b': [1.5, None, True], 'ü': 'ünï "q"\n', 'nested': {'x': -2}}
    assert ''.join(encoder(value, 0)) == json.dumps(value, ensure_ascii=False, separators=(',', ':'))
    with pytest.raises(TypeError, match='not JSON'):
        encoder({'when': object()}, 0)


def test_scanner_returns_the_value_and_where_it_ends() -> None:
    scan = json_internals.scanner()
    text = '{"a": [1, "ü"]}  \n'
    value, end = scan(text, 0)
    assert value == {'a': [1, 'ü']} and text[end:] == '  \n'
    assert json_internals.whitespace_match(text, end).end() == len(text)
    with pytest.raises(StopIteration):
        scan(' {}', 0)  # leading whitespace is not a value; fsdf then calls json.loads


# -- pika: queue frames on the channel underneath, then one flush ---------------------------------------------
def test_pika_queuing_channel_and_flush(rabbitmq_server, queue_name: str) -> None:
    import pika
    from pika.channel import Channel

    from fsdf._compat import pika_internals
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_server.url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue_name, auto_delete=True)
        queued = pika_internals.queuing_channel(channel)
        assert isinstance(queued, Channel)
        for body in (b'1', b'2', b'3'):
            queued.basic_publish('', queue_name, body)
        pika_internals.flush(channel)
        assert wait_until(lambda: channel.queue_declare(queue_name, passive=True).method.message_count == 3)
        for _ in range(3):
            method, _, _ = channel.basic_get(queue_name)
            queued.basic_nack(method.delivery_tag, requeue=False)
        pika_internals.flush(channel)
        assert wait_until(lambda: channel.queue_declare(queue_name, passive=True).method.message_count == 0)
    finally:
        connection.close()


# -- AMQPStorm: the frames its I/O thread has read for a channel ----------------------------------------------
def test_amqpstorm_has_inbound_sees_arrived_deliveries(rabbitmq_server, queue_name: str) -> None:
    import amqpstorm

    from fsdf._compat.amqpstorm_internals import has_inbound
    connection = amqpstorm.UriConnection(rabbitmq_server.url)
    try:
        channel = connection.channel()
        channel.queue.declare(queue_name, auto_delete=True)
        channel.basic.consume(lambda *delivery: None, queue_name, no_ack=True)
        assert not has_inbound(channel)
        channel.basic.publish('hello', queue_name)
        assert wait_until(lambda: has_inbound(channel), timeout=10)
        bodies = [body for body, *_ in channel.build_inbound_messages(
            break_on_empty=True, to_tuple=True, auto_decode=False, empty_timeout=None)]
        assert bodies == [b'hello'] and not has_inbound(channel)
    finally:
        connection.close()


# -- apscheduler: the executor hook scheduling.OncePerTickExecutor overrides ----------------------------------
def test_apscheduler_submits_each_job_through_do_submit_job() -> None:
    from apscheduler.executors.base import BaseExecutor
    from apscheduler.executors.pool import ThreadPoolExecutor
    # OncePerTickExecutor claims each run time in _do_submit_job(job, run_times); tests/test_scheduling.py checks
    # the claims end to end, this says which hook moved if that fails after an upgrade.
    assert list(inspect.signature(ThreadPoolExecutor._do_submit_job).parameters) == ['self', 'job', 'run_times']
    assert 'self._do_submit_job(job, run_times)' in inspect.getsource(BaseExecutor.submit_job)


# -- redis-py: a command through a pooled connection (fsdf/_compat/redis_commands.py) ------------------------
def test_redis_pools_lend_connections_without_a_command_name_and_connections_send_and_read() -> None:
    import redis

    for pool_class in (redis.ConnectionPool, redis.BlockingConnectionPool):
        parameter = inspect.signature(pool_class.get_connection).parameters.get('command_name')
        assert parameter is None or parameter.default is None, f'{pool_class.__name__}.get_connection needs a name'
    for name in ('send_command', 'read_response', 'disconnect'):
        assert callable(getattr(redis.Connection, name, None)), f'redis.Connection.{name} is gone'
