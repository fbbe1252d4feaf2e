"""fsdf: turn any plain function into a distributed task.

    from fsdf import task_deco, BrokerEnum

    @task_deco('add_queue', broker_kind=BrokerEnum.PERSISTQUEUE)
    def add(a, b):
        return a + b

    add.push(1, b=2)   # publish
    add.consume()      # consume in background threads
"""
from fsdf.enums import BrokerEnum, ConcurrentModeEnum  # noqa: I001  (first: the config file imports it)
from fsdf.config import load_settings, patch_frame_config, settings
from typing import TYPE_CHECKING, Any

load_settings()

from fsdf.brokers import get_broker  # noqa: E402
from fsdf.consumer import Consumer  # noqa: E402
from fsdf.controls import (  # noqa: E402
    ConsumerContext, Middleware, RunOutcome, add_middleware, remove_middleware)
from fsdf.exceptions import (  # noqa: E402
    BrokerNotAvailableError, BrokerUnreachableError, ExceptionForRequeue, ExceptionForRetry, MalformedMessageError,
    MissingDependencyError)
from fsdf.options import FunctionResultStatusPersistanceConfig, TaskOptions  # noqa: E402
from fsdf.publisher import Publisher  # noqa: E402
from fsdf.result import AsyncResult  # noqa: E402
from fsdf.task import TaskFunction, get_consumer, get_publisher, task_deco  # noqa: E402

if TYPE_CHECKING:
    from fsdf.multiprocess import run_consumer_with_multi_process

__version__ = '0.1.0'

_SCHEDULING = ('fsdf_background_scheduler', 'timing_publish_deco', 'FsdfBackgroundScheduler', 'FsdfBlockingScheduler')


def __getattr__(name: str) -> Any:
    # Imported on first use, to keep workers quick to start (issue 19): apscheduler only by code that
    # schedules, multiprocessing (about a tenth of fsdf's import) only by code that starts processes.
    if name in _SCHEDULING:
        from fsdf import scheduling
        return getattr(scheduling, name)
    if name == 'run_consumer_with_multi_process':
        from fsdf.multiprocess import run_consumer_with_multi_process
        return run_consumer_with_multi_process
    raise AttributeError(f'module fsdf has no attribute {name!r}')

__all__ = [
    'AsyncResult', 'BrokerEnum', 'BrokerNotAvailableError', 'BrokerUnreachableError', 'ConcurrentModeEnum', 'Consumer',
    'ConsumerContext',
    'ExceptionForRequeue', 'ExceptionForRetry', 'FunctionResultStatusPersistanceConfig',
    'MalformedMessageError', 'Middleware', 'MissingDependencyError', 'Publisher', 'RunOutcome', 'TaskFunction',
    'TaskOptions', 'add_middleware', 'get_broker', 'get_consumer', 'get_publisher', 'patch_frame_config',
    'remove_middleware', 'run_consumer_with_multi_process', 'settings', 'task_deco',
    *_SCHEDULING,
]
