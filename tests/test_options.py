"""Options: one typed definition, unknown names rejected with suggestions, the seed's old spellings kept."""
from __future__ import annotations

import typing
from dataclasses import fields

import pytest

from fsdf import BrokerEnum, ConcurrentModeEnum, get_consumer, task_deco
from fsdf.options import TaskOptions, TaskOptionsKwargs, build_options


def test_every_spec_option_has_a_typed_default() -> None:
    spec = ['broker_kind', 'concurrent_mode', 'concurrent_num', 'specify_concurrent_pool', 'qps',
            'is_using_distributed_frequency_control', 'max_retry_times', 'function_timeout', 'msg_expire_seconds',
            'do_task_filtering', 'task_filtering_expire_seconds', 'is_do_not_run_by_specify_time_effect',
            'do_not_run_by_specify_time', 'is_using_rpc_mode', 'is_send_consumer_heartbeat_to_redis',
            'function_result_status_persistance_conf', 'is_consuming_function_use_multi_params',
            'schedule_tasks_on_main_thread', 'log_level', 'logger_prefix', 'create_logger_file',
            'is_print_detail_exception',
            # beyond the seed: delayed retries and the middleware API
            'retry_delay', 'retry_backoff', 'retry_backoff_max', 'middleware']
    assert sorted(f.name for f in fields(TaskOptions)) == sorted(spec)


def test_keyword_form_for_editors_matches_the_dataclass() -> None:
    aliases = {'run_records'}  # a short spelling of a field, for editors too
    assert set(typing.get_type_hints(TaskOptionsKwargs)) - aliases == {f.name for f in fields(TaskOptions)}


def test_unknown_option_is_a_type_error_naming_close_matches() -> None:
    with pytest.raises(TypeError, match="unknown fsdf option 'concurent_num'.*did you mean concurrent_num"):
        task_deco('q', concurent_num=5)
    with pytest.raises(TypeError, match="unknown fsdf option 'qsp'"):
        get_consumer('q', consuming_function=print, qsp=5)


def test_old_spellings_work_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match='msg_expire_senconds'):
        options = build_options(msg_expire_senconds=10, is_send_consumer_hearbeat_to_redis=True)
    assert options.msg_expire_seconds == 10 and options.is_send_consumer_heartbeat_to_redis
    with pytest.warns(DeprecationWarning, match='msg_schedule_time_intercal'):
        assert build_options(msg_schedule_time_intercal=0.5).qps == 2


@pytest.mark.parametrize('bad', [dict(concurrent_num=0), dict(qps=-1), dict(max_retry_times=-1),
                                 dict(broker_kind=99), dict(concurrent_mode=7), dict(function_timeout='3'),
                                 dict(do_not_run_by_specify_time='10:00')])
def test_bad_values_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        build_options(**bad)


def test_integers_become_enum_members() -> None:
    options = build_options(broker_kind=3, concurrent_mode=5)
    assert options.broker_kind is BrokerEnum.LOCAL_PYTHON_QUEUE
    assert options.concurrent_mode is ConcurrentModeEnum.SINGLE_THREAD


