"""Logging: stdlib loggers per queue that the application's logging sees, a console for scripts that set up
nothing, optional rotating file, print left alone."""
from __future__ import annotations

import builtins
import logging
import os
import subprocess

import pytest

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


_LOG_TWO_LINES = '''
    import logging, sys
    if sys.argv[1] == 'before':
        logging.basicConfig(format='APP %(name)s: %(message)s')
    import fsdf
    from fsdf.log import get_logger
    if sys.argv[1] == 'after':
        logging.basicConfig(format='APP %(name)s: %(message)s')
    get_logger('orders').info('queue line')
    logging.getLogger('fsdf.pool').warning('pool line')
'''


@pytest.mark.parametrize('configured', ['before', 'after'])
def test_basic_config_before_or_after_import_sees_each_fsdf_record_once(configured: str, run_script) -> None:
    proc = run_script(_LOG_TWO_LINES, configured, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.splitlines() == ['APP fsdf.orders: queue line', 'APP fsdf.pool: pool line']


def test_a_script_that_configures_nothing_gets_colored_console_lines(run_script) -> None:
    controller, terminal = os.openpty()  # a real terminal on stderr, as a person running the script has
    proc = run_script(_LOG_TWO_LINES, 'nothing', stderr=terminal)
    os.close(terminal)
    proc.wait(timeout=30)
    lines = _read_all(controller).decode().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith('\033[32m') and lines[0].endswith('INFO fsdf.orders: queue line\033[0m')
    assert lines[1].startswith('\033[33m') and lines[1].endswith('WARNING fsdf.pool: pool line\033[0m')


def test_console_lines_are_plain_when_stderr_is_not_a_terminal(run_script) -> None:
    proc = run_script(_LOG_TWO_LINES, 'nothing', stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=30)
    lines = err.splitlines()
    assert len(lines) == 2 and '\033' not in err
    assert lines[0].endswith(' INFO fsdf.orders: queue line') and lines[1].endswith(' WARNING fsdf.pool: pool line')


def test_caplog_sees_fsdf_records(caplog: pytest.LogCaptureFixture, queue_name: str) -> None:
    @task_deco(queue_name, broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, max_retry_times=0)
    def fails(x):
        raise RuntimeError('boom')

    fails.push(1)
    fails.drain(timeout=10)
    errors = [r for r in caplog.records if r.name == f'fsdf.{queue_name}' and r.levelno == logging.ERROR]
    assert errors and 'RuntimeError' in caplog.text


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side of the terminal is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b''.join(chunks)
