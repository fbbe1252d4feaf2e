"""Consumers and schedulers keep working after the main thread ends: the seed's examples end with
``consume()``, so their main thread returns at once and Python shuts concurrent.futures down.

Each example in test_frame/ runs as a script, judged by what it prints over a few seconds.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT
from helpers import wait_until

EXAMPLES = {
    # file: (a line each run prints, runs expected, seconds to wait)
    'example_quickstart.py': (r'^\d+ \+ \d+ = \d+$', 5, 10),         # qps 5, each call sleeps 3 s
    'example_decorator.py': (r'^\d+$', 1, 10),                          # qps 0.2 on REDIS_ACK_ABLE
    'example_get_consumer.py': (r'^\d+$', 1, 10),                       # qps 0.2 on PERSISTQUEUE
    'example_chained_queues.py': (r'^y is \d+$', 3, 10),                # step1 fans out to step2 at qps 3
    'example_timing_publish.py': (r'^(5 \+ 6|1 \+ 2) = (11|3)$', 2, 12),  # jobs every 3 and 7 s
}


@pytest.mark.parametrize('example', EXAMPLES)
def test_each_example_keeps_running_after_its_main_thread_ends(example: str, run_script, tmp_path: Path,
                                                               monkeypatch, redis_server) -> None:
    monkeypatch.setenv('FSDF_PERSIST_QUEUE_PATH', str(tmp_path / 'queues'))  # a fresh SQLite folder
    pattern, runs, seconds = EXAMPLES[example]
    out, err = tmp_path / 'out.txt', tmp_path / 'err.txt'
    with out.open('w') as stdout, err.open('w') as stderr:
        run_script((ROOT / 'test_frame' / example).read_text(), stdout=stdout, stderr=stderr)

    def ran() -> int:
        return sum(1 for line in out.read_text().splitlines() if re.match(pattern, line))

    assert wait_until(lambda: ran() >= runs, seconds, interval=0.2), \
        f'{ran()} runs of {runs} in {seconds} s; stderr:\n{err.read_text()[-3000:]}'
    assert 'after interpreter shutdown' not in err.read_text()


def test_a_plain_def_under_async_runs_after_the_main_thread_ends(run_script, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv('FSDF_PERSIST_QUEUE_PATH', str(tmp_path / 'queues'))
    out = tmp_path / 'out.txt'
    with out.open('w') as stdout:
        run_script('''
            from fsdf import BrokerEnum, ConcurrentModeEnum, task_deco

            @task_deco('plain_def_async', broker_kind=BrokerEnum.PERSISTQUEUE,
                       concurrent_mode=ConcurrentModeEnum.ASYNC, max_retry_times=0)
            def work(x):
                print(f'ran {x}', flush=True)

            work.push_many(range(20))
            work.consume()
        ''', stdout=stdout)
    assert wait_until(lambda: out.read_text().count('ran ') == 20, 15, interval=0.2), out.read_text()
