"""The public API of SPEC §1: names, the task function, publishing and its errors."""
from __future__ import annotations

import json

import pytest

import fsdf
from fsdf import BrokerEnum, ConcurrentModeEnum, task_deco


def test_public_names_are_importable() -> None:
    for name in ['task_deco', 'get_consumer', 'get_publisher', 'AsyncResult', 'BrokerEnum', 'ConcurrentModeEnum',
                 'ExceptionForRetry', 'ExceptionForRequeue', 'patch_frame_config',
                 'FunctionResultStatusPersistanceConfig']:
        assert hasattr(fsdf, name), name


def test_enums_keep_the_seed_values() -> None:
    assert BrokerEnum.RABBITMQ_AMQPSTORM == 0 and BrokerEnum.REDIS == 2 and BrokerEnum.LOCAL_PYTHON_QUEUE == 3
    assert BrokerEnum.PERSISTQUEUE == 6 and BrokerEnum.REDIS_ACK_ABLE == 9 and BrokerEnum.REDIS_STREAM == 12
    assert BrokerEnum.RedisBrpopLpush == 14 and BrokerEnum.CONFLUENT_KAFKA == 16
    assert [m.value for m in ConcurrentModeEnum] == [1, 2, 3, 4, 5]


def test_decorated_function_is_still_a_plain_call(queue_name: str, broker_kind: BrokerEnum) -> None:
    @task_deco(queue_name, broker_kind=broker_kind)
    def add(a, b=10):
        """Adds."""
        return a + b

    assert add(1, 2) == 3 and add(1) == 11
    assert add.__name__ == 'add' and add.__doc__ == 'Adds.'
    assert add.get_message_count() == 0  # calling it published nothing


def test_push_pub_and_counts(queue_name: str, broker_kind: BrokerEnum) -> None:
    @task_deco(queue_name, broker_kind=broker_kind)
    def add(a, b):
        return a + b

    result = add.push(1, b=2)
    assert isinstance(result, fsdf.AsyncResult) and len(result.task_id) == 32
    assert add.pub({'a': 3, 'b': 4}, task_id='my-id').task_id == 'my-id'
    assert len(add.push_many((i, i) for i in range(5))) == 5
    assert len(add.pub_many({'a': i, 'b': 1} for i in range(7))) == 7
    assert add.get_message_count() == 14
    add.clear()
    assert add.get_message_count() == 0


def test_message_format_on_the_broker(queue_name: str, broker_kind: BrokerEnum) -> None:
    @task_deco(queue_name, broker_kind=broker_kind)
    def add(a, b):
        return a + b

    add.push(1, b=2)
    body = add.publisher.broker.fetch(1, 1)[0].body
    message = json.loads(body)
    assert message['a'] == 1 and message['b'] == 2
    assert set(message['extra']) >= {'task_id', 'publish_time', 'publish_time_format'}


@pytest.mark.parametrize('call, error', [
    (lambda f: f.push(1), "missing a required argument: 'b'"),
    (lambda f: f.push(1, 2, 3), 'too many positional arguments'),
    (lambda f: f.push(1, b=2, c=3), "unexpected keyword argument 'c'"),
    (lambda f: f.pub({'a': 1}), "missing a required argument: 'b'"),
    (lambda f: f.pub([1, 2]), 'must be a dict'),
    (lambda f: f.pub({'a': 1, 'extra': {'task_id': 'x'}}), "missing a required argument: 'b'"),
    (lambda f: f.pub({'a': 1, 'b': 2, 'c': 3}), "unexpected keyword argument 'c'"),
    (lambda f: f.pub_many([{'a': 1}]), "missing a required argument: 'b'"),
    (lambda f: f.push(1, b=object()), 'JSON-serializable'),
    (lambda f: f.push_many([(1,)]), "missing a required argument: 'b'"),
])
def test_wrong_calls_fail_at_publish_time(queue_name: str, call, error: str) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE)
    def add(a, b):
        return a + b

    with pytest.raises(TypeError, match=error):
        call(add)
    assert add.get_message_count() == 0


def test_get_consumer_and_its_publisher(queue_name: str) -> None:
    seen = []
    consumer = fsdf.get_consumer(queue_name, consuming_function=lambda x: seen.append(x),
                                 broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE)
    for i in range(3):
        consumer.publisher_of_same_queue.publish({'x': i})
    assert consumer.drain(timeout=10) == 3
    assert sorted(seen) == [0, 1, 2]


def test_get_publisher_counts_any_queue_including_a_dlq(queue_name: str) -> None:
    publisher = fsdf.get_publisher(f'{queue_name}_dlq', broker_kind=BrokerEnum.PERSISTQUEUE)
    publisher.publish({'anything': 1})
    assert publisher.get_message_count() == 1


def test_default_broker_comes_from_settings(queue_name: str) -> None:
    @task_deco(queue_name)
    def f(x):
        return x

    assert f.consumer.broker_kind == fsdf.settings.DEFAULT_BROKER_KIND == BrokerEnum.PERSISTQUEUE


def test_unbuilt_broker_names_the_built_ones(queue_name: str) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.NSQ)
    def f(x):
        return x

    with pytest.raises(fsdf.BrokerNotAvailableError, match='NSQ is not built.*no nsqd can be installed.*PERSISTQUEUE'):
        f.push(1)
