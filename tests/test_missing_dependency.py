"""Every optional extra, when its library is not installed, fails with one MissingDependencyError naming the extra.

A script blocks the extras' modules with a ``sys.meta_path`` finder before importing fsdf (as if they had never been
installed), then takes each path that needs one and prints what it raised.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fsdf import BrokerEnum, MissingDependencyError
from fsdf._optional import EXTRA_MODULES

_PROBE = '''
    import json, sys

    BLOCKED = set(sys.argv[1].split(','))

    class NotInstalled:
        """A finder that says the blocked packages are not installed."""
        def find_spec(self, name, path=None, target=None):
            if name.partition('.')[0] in BLOCKED:
                raise ModuleNotFoundError(f'No module named {name!r}', name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    import fsdf  # must work without any extra
    from fsdf import BrokerEnum, ConcurrentModeEnum
    from fsdf.brokers import broker_class
    from fsdf.concurrency import make_pool
    from fsdf.controls.filtering import filter_store
    from fsdf.rpc import result_backend_for
    from fsdf.scheduling import RedisTickClaims

    def consume_with(**options):
        @fsdf.task_deco(f'missing_{len(options)}_{sorted(options)[0]}', broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE,
                        **options)
        def f(x):
            pass
        f.consumer  # building the consumer builds its controls

    paths = {f'broker {kind.name}': lambda kind=kind: broker_class(kind)
             for kind in fsdf.brokers.built_broker_kinds() if kind not in (
                 BrokerEnum.LOCAL_PYTHON_QUEUE, BrokerEnum.PERSISTQUEUE, BrokerEnum.RABBITMQ_RABBITPY)}
    paths.update({
        'distributed qps': lambda: consume_with(qps=2, is_using_distributed_frequency_control=True),
        'heartbeat': lambda: consume_with(is_send_consumer_heartbeat_to_redis=True),
        'task filter on Redis': lambda: filter_store(BrokerEnum.REDIS, 'missing_filter'),
        'rpc results on Redis': lambda: result_backend_for(BrokerEnum.REDIS),
        'schedule claims on Redis': lambda: RedisTickClaims(),
        'concurrent_mode GEVENT': lambda: make_pool(ConcurrentModeEnum.GEVENT, 2, 'p'),
        'concurrent_mode EVENTLET': lambda: make_pool(ConcurrentModeEnum.EVENTLET, 2, 'p'),
    })
    raised = {}
    for path, call in paths.items():
        try:
            call()
            raised[path] = None
        except Exception as exc:
            raised[path] = [type(exc).__name__, isinstance(exc, ImportError), getattr(exc, 'name', None), str(exc)]
    print(json.dumps(raised))
'''

# path -> the extra it needs
_NEEDS = {
    **{f'broker {kind.name}': extra for kind, extra in [
        (BrokerEnum.RABBITMQ_AMQPSTORM, 'rabbitmq'), (BrokerEnum.RABBITMQ_PIKA, 'rabbitmq'),
        (BrokerEnum.MONGOMQ, 'mongo'), (BrokerEnum.REDIS, 'redis'), (BrokerEnum.REDIS_ACK_ABLE, 'redis'),
        (BrokerEnum.RedisBrpopLpush, 'redis'), (BrokerEnum.REDIS_STREAM, 'redis'), (BrokerEnum.KAFKA, 'kafka'),
        (BrokerEnum.CONFLUENT_KAFKA, 'kafka'), (BrokerEnum.SQLACHEMY, 'sql'),
        (BrokerEnum.NATS, 'nats'), (BrokerEnum.ZEROMQ, 'zeromq'), (BrokerEnum.KOMBU, 'kombu')]},
    'distributed qps': 'redis', 'heartbeat': 'redis', 'task filter on Redis': 'redis',
    'rpc results on Redis': 'redis', 'schedule claims on Redis': 'redis',
    'concurrent_mode GEVENT': 'gevent', 'concurrent_mode EVENTLET': 'eventlet',
}


@pytest.fixture(scope='module')
def raised_without_extras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """What each path raised in a process where no optional extra is installed."""
    script = tmp_path_factory.mktemp('missing') / 'probe.py'
    script.write_text(textwrap.dedent(_PROBE))
    blocked = ','.join(sorted(set().union(*EXTRA_MODULES.values())))
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, str(script), blocked], env=env, capture_output=True, text=True,
                         timeout=60, cwd=script.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_every_path_that_needs_an_extra_is_probed(raised_without_extras: dict[str, list]) -> None:
    assert set(raised_without_extras) == set(_NEEDS)


@pytest.mark.parametrize('path', sorted(_NEEDS))
def test_a_missing_extra_raises_missing_dependency_error_naming_it(path: str, raised_without_extras) -> None:
    assert raised_without_extras[path] is not None, f'{path} worked without its extra'
    kind, is_import_error, missing, message = raised_without_extras[path]
    extra = _NEEDS[path]
    assert kind == 'MissingDependencyError' and is_import_error
    assert missing in EXTRA_MODULES[extra]
    assert f'pip install "fsdf[{extra}]"' in message and missing in message


def test_missing_dependency_error_is_an_import_error() -> None:
    assert issubclass(MissingDependencyError, ImportError)


def test_an_unrelated_missing_module_is_not_dressed_up_as_a_missing_extra() -> None:
    from fsdf._optional import import_optional
    with pytest.raises(ModuleNotFoundError) as caught:
        import_optional('fsdf_no_such_module', 'redis', 'a test')
    assert not isinstance(caught.value, MissingDependencyError)
