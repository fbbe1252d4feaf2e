"""Every option a task accepts, in one typed place, with validation and the seed's old spellings."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional, Sequence, Tuple, TypedDict

from fsdf.controls.base import Middleware
from fsdf.enums import BrokerEnum, ConcurrentModeEnum


@dataclass(frozen=True)
class FunctionResultStatusPersistanceConfig:
    """Whether to store a record of each run, with its result, and for how long (the seed's name kept;
    ``fsdf.records.RunRecordsConfig`` is the same class). ``is_save_status`` (or ``is_save_result``) turns
    records on; ``is_save_result`` also keeps the result; records are pruned ``expire_seconds`` after the run."""

    is_save_status: bool = False
    is_save_result: bool = False
    expire_seconds: int = 7 * 24 * 3600


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """The options of one task queue; ``task_deco`` and ``get_consumer`` take these as keywords."""

    broker_kind: Optional[BrokerEnum] = None
    """Broker to use; None takes ``DEFAULT_BROKER_KIND`` from the config."""
    concurrent_mode: ConcurrentModeEnum = ConcurrentModeEnum.THREADING
    """How calls run: THREADING (a pool of threads), SINGLE_THREAD (one at a time in the fetch thread), ASYNC
    (coroutines on one event loop; plain functions in its threads), GEVENT or EVENTLET (greenlets; the script must
    monkey-patch first, and the library comes with ``pip install "fsdf[gevent]"`` / ``"fsdf[eventlet]"``)."""
    concurrent_num: int = 50
    """Most calls running at once; also bounds how many unacked messages a consumer holds."""
    specify_concurrent_pool: Any = None
    """A pool shared by several consumers (from ``fsdf.concurrency``); overrides concurrent_num."""
    qps: float = 0
    """Calls started per second whatever each takes, 0 = unlimited; the pool grows up to concurrent_num
    to hold it (reachable while qps * call duration <= concurrent_num; else a warning says so)."""
    is_using_distributed_frequency_control: bool = False
    """Share ``qps`` across all consumers of the queue, on every machine, through one schedule in Redis
    (``fsdf:rate:<queue>``, on Redis's clock); a consumer joining or leaving does not disturb the rate."""
    max_retry_times: int = 3
    """Retries after a failing run before the message goes to ``<queue>_dlq``."""
    retry_delay: float = 0
    """Seconds before a failed run is retried, 0 = at once in the same worker. A delayed retry goes back
    through the broker's delayed path (the worker is freed meanwhile), carrying its retry count."""
    retry_backoff: bool = False
    """Double the delay at each further retry: ``retry_delay * 2 ** (retry - 1)``, capped by retry_backoff_max."""
    retry_backoff_max: float = 600
    """The longest delay backoff reaches, in seconds."""
    function_timeout: float = 0
    """Seconds a run may take, 0 = unlimited; a longer run counts as a failure (retried or dead-lettered
    at once). THREADING, SINGLE_THREAD and a plain ``def`` under ASYNC: the call runs in a call thread and
    is interrupted at the deadline; one blocked in C (a sleep, a socket read without timeout) is abandoned
    to end on its own, its late result ignored, and the worker moves on (at most
    ``FUNCTION_TIMEOUT_MAX_ABANDONED`` such threads, then the worker waits and a warning says so).
    GEVENT/EVENTLET: the library's ``Timeout`` in the greenlet; ASYNC ``async def``: cancellation."""
    msg_expire_seconds: float = 0
    """Ack without running (counted as expired) messages older than this when their turn comes, 0 = never."""
    do_task_filtering: bool = False
    """Ack without running (counted as filtered) calls whose arguments already ran successfully. Keys live
    in the process (LOCAL_PYTHON_QUEUE), in SQLite (PERSISTQUEUE) or in Redis (server brokers)."""
    task_filtering_expire_seconds: float = 0
    """How long a successful call filters its twins, 0 = forever."""
    is_do_not_run_by_specify_time_effect: bool = False
    """Turn on the do-not-run window: nothing is fetched or started inside it."""
    do_not_run_by_specify_time: Tuple[str, str] = ('10:00:00', '22:00:00')
    """The do-not-run window, local ``HH:MM:SS`` start and end; it may span midnight (22:00 to 06:00)."""
    is_using_rpc_mode: bool = False
    """Send each result back to the publisher's ``AsyncResult`` (Redis; in-process or SQLite for embedded)."""
    is_send_consumer_heartbeat_to_redis: bool = False
    """Report this consumer (host, pid, queue, broker, concurrency, qps, run counters and rates) to the
    Redis registry ``fsdf:consumers:<queue>`` every few seconds; works with any broker."""
    function_result_status_persistance_conf: FunctionResultStatusPersistanceConfig = field(
        default_factory=FunctionResultStatusPersistanceConfig)
    """Store a record of every run (status, arguments, result, exception, times, host, parent and root task)
    in the store at ``RESULT_STORE_URL``; ``run_records=True`` is the short way to say save status and result."""
    is_consuming_function_use_multi_params: bool = True
    """True: the message's keys are the function's parameters; False: it takes one dict."""
    schedule_tasks_on_main_thread: bool = False
    """Run the fetch loop in the thread that calls ``consume()``, which then blocks."""
    log_level: int = logging.INFO
    """Level of this queue's logger."""
    logger_prefix: str = ''
    """Text put before the logger's name, to tell consumers apart."""
    create_logger_file: bool = False
    """Also log to a rotating file named after the queue, under ``LOG_PATH``."""
    is_print_detail_exception: bool = True
    """Log full tracebacks of failing runs (False: one line)."""
    middleware: Sequence[Middleware] = ()
    """Extra :class:`fsdf.Middleware` for this task's consumers and publishers, after fsdf's own."""

    def __post_init__(self) -> None:
        if self.broker_kind is not None:
            object.__setattr__(self, 'broker_kind', _enum_member(BrokerEnum, self.broker_kind, 'broker_kind'))
        object.__setattr__(self, 'concurrent_mode',
                           _enum_member(ConcurrentModeEnum, self.concurrent_mode, 'concurrent_mode'))
        _check(isinstance(self.concurrent_num, int) and self.concurrent_num >= 1,
               f'concurrent_num must be an int >= 1, got {self.concurrent_num!r}')
        _check(isinstance(self.max_retry_times, int) and self.max_retry_times >= 0,
               f'max_retry_times must be an int >= 0, got {self.max_retry_times!r}')
        for name in ('qps', 'function_timeout', 'msg_expire_seconds', 'task_filtering_expire_seconds',
                     'retry_delay', 'retry_backoff_max'):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
                   f'{name} must be a number >= 0, got {value!r}')
        object.__setattr__(self, 'middleware', _middleware_tuple(self.middleware))
        window = self.do_not_run_by_specify_time
        _check(isinstance(window, (tuple, list)) and len(window) == 2,
               f'do_not_run_by_specify_time must be (start, end), got {window!r}')

    def merged(self, **changes: Any) -> 'TaskOptions':
        """A copy with some options changed, validated like the original."""
        return replace(self, **normalize_option_names(changes))


class TaskOptionsKwargs(TypedDict, total=False):
    """The keyword form of :class:`TaskOptions`, so editors complete ``task_deco(...)``."""

    broker_kind: BrokerEnum
    concurrent_mode: ConcurrentModeEnum
    concurrent_num: int
    specify_concurrent_pool: Any
    qps: float
    is_using_distributed_frequency_control: bool
    max_retry_times: int
    function_timeout: float
    msg_expire_seconds: float
    do_task_filtering: bool
    task_filtering_expire_seconds: float
    is_do_not_run_by_specify_time_effect: bool
    do_not_run_by_specify_time: Tuple[str, str]
    is_using_rpc_mode: bool
    is_send_consumer_heartbeat_to_redis: bool
    function_result_status_persistance_conf: FunctionResultStatusPersistanceConfig
    run_records: Any
    is_consuming_function_use_multi_params: bool
    schedule_tasks_on_main_thread: bool
    log_level: int
    logger_prefix: str
    create_logger_file: bool
    is_print_detail_exception: bool
    retry_delay: float
    retry_backoff: bool
    retry_backoff_max: float
    middleware: Sequence[Middleware]


_OLD_SPELLINGS = {
    'msg_expire_senconds': 'msg_expire_seconds',
    'is_send_consumer_hearbeat_to_redis': 'is_send_consumer_heartbeat_to_redis',
    'threads_num': 'concurrent_num',
}
OPTION_NAMES = frozenset(f.name for f in fields(TaskOptions))


def normalize_option_names(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Map the seed's old spellings to current names; raise TypeError on unknown names."""
    out: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name == 'run_records':  # the short modern alias, not a deprecated spelling
            out['function_result_status_persistance_conf'] = _records_config(value)
            continue
        if name == 'msg_schedule_time_intercal':
            _deprecated(name, 'qps')
            out.setdefault('qps', 1 / value if value else 0)
            continue
        if name in _OLD_SPELLINGS:
            _deprecated(name, _OLD_SPELLINGS[name])
            name = _OLD_SPELLINGS[name]
        if name not in OPTION_NAMES:
            import difflib  # only for this error's hint: not on every import of fsdf
            close = difflib.get_close_matches(name, OPTION_NAMES, n=3, cutoff=0.6)
            hint = f'; did you mean {" or ".join(close)}?' if close else ''
            raise TypeError(f'unknown fsdf option {name!r}{hint}')
        out[name] = value
    return out


def build_options(**kwargs: Any) -> TaskOptions:
    """Validate keyword options (old spellings included) into a :class:`TaskOptions`."""
    return TaskOptions(**normalize_option_names(kwargs))


def _records_config(value: Any) -> FunctionResultStatusPersistanceConfig:
    """``run_records=``: True (status and result), False (off), or a config."""
    if isinstance(value, FunctionResultStatusPersistanceConfig):
        return value
    _check(isinstance(value, bool), f'run_records must be True, False or a RunRecordsConfig, got {value!r}')
    return FunctionResultStatusPersistanceConfig(is_save_status=value, is_save_result=value)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f'fsdf option {old!r} is deprecated; use {new!r}', DeprecationWarning, stacklevel=4)


def _enum_member(enum_cls: Any, value: Any, name: str) -> Any:
    try:
        return enum_cls(value)
    except ValueError:
        raise ValueError(f'{name} must be one of {[m.name for m in enum_cls]}, got {value!r}') from None


def _middleware_tuple(middleware: Any) -> tuple[Middleware, ...]:
    _check(isinstance(middleware, (list, tuple)), f'middleware must be a list of fsdf.Middleware, got {middleware!r}')
    for item in middleware:
        _check(isinstance(item, Middleware),
               f'middleware must be fsdf.Middleware instances, got {type(item).__name__}')
    return tuple(middleware)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
