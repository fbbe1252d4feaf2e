"""Logging: stdlib loggers per queue, optional rotating file, print left alone."""
from __future__ import annotations

import builtins
import logging

from fsdf import BrokerEnum, settings, task_deco


def test_queue_logger_level_prefix_and_file(queue_name: str) -> None:
    print_before = builtins.print

    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, log_level=logging.WARNING,
               logger_prefix='svc.', create_logger_file=True, max_retry_times=0, is_print_detail_exception=False)
    def fails(x):
        raise RuntimeError('boom')

    fails.push(1)
    fails.drain(timeout=10)
    logger = fails.consumer.logger
    assert logger.name == f'fsdf.svc.{queue_name}' and logger.level == logging.WARNING
    log_file = settings.path('LOG_PATH') / f'{queue_name}.log'
    text = log_file.read_text()
    assert 'RuntimeError: boom' in text and 'consuming' not in text  # INFO lines are below the level
    assert builtins.print is print_before
