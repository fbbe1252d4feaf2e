"""The ``fsdf`` command against real data, through its real entry points in subprocesses.

A module fixture runs real consumers with run records on: a three-level tree on LOCAL_PYTHON_QUEUE,
successes and failures (so a dead-letter queue) on PERSISTQUEUE, and one consumer left running.
Every command then runs as ``python -m fsdf ...`` (and some as the installed ``fsdf`` script) and
its output (``--json`` parsed) and exit code are checked.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import tomllib
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

import fsdf
from fsdf import BrokerEnum, task_deco
from fsdf.brokers import get_broker
from fsdf.records.writer import flush_all
from helpers import default_signals, wait_until

ROOT = Path(__file__).resolve().parent.parent
LOCAL, PERSIST = BrokerEnum.LOCAL_PYTHON_QUEUE, BrokerEnum.PERSISTQUEUE
FAILING = (3, 7)


def _use_store(url: str) -> None:
    os.environ['FSDF_RESULT_STORE_URL'] = url
    fsdf.patch_frame_config(RESULT_STORE_URL=url)


@pytest.fixture(scope='module')
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Real runs in a fresh SQLite store: ``tree`` (root id), ``work`` (10 runs, 2 failed into its DLQ),
    ``live`` (a consumer left running), with their queue names."""
    previous = fsdf.config.settings.RESULT_STORE_URL
    _use_store(f"sqlite:///{tmp_path_factory.mktemp('store')}/runs.sqlite")
    tag = uuid.uuid4().hex[:6]
    names = {level: f'cli_tree{level}_{tag}' for level in (1, 2, 3)} | {'work': f'cli_work_{tag}',
                                                                         'live': f'cli_live_{tag}'}

    @task_deco(names[3], broker_kind=LOCAL, run_records=True)
    def leaf(x: int) -> int:
        if x == 11:
            raise KeyError('leaf eleven')
        return x

    @task_deco(names[2], broker_kind=LOCAL, run_records=True)
    def middle(x: int) -> None:
        for i in range(3):
            leaf.push(x * 10 + i)

    @task_deco(names[1], broker_kind=LOCAL, run_records=True)
    def top(x: int) -> None:
        middle.push(x)
        middle.push(x + 1)

    @task_deco(names['work'], broker_kind=PERSIST, run_records=True, max_retry_times=0)
    def work(x: int) -> int:
        if x in FAILING:
            raise ValueError(f'boom {x} needle')
        return x * 2

    @task_deco(names['live'], broker_kind=PERSIST, run_records=True, qps=50)
    def live(x: int) -> None:
        pass

    root = top.push(1)
    for task in (top, middle, leaf):
        task.drain(timeout=20)
    work.push_many(range(10))
    work.drain(timeout=20)
    live.consume()
    flush_all()
    yield {'root': root.task_id, 'names': names, 'work': work, 'live': live}
    live.stop(grace=2)
    flush_all()
    _use_store(previous)
    os.environ.pop('FSDF_RESULT_STORE_URL', None)


def fsdf_cli(*args: str, script: Any = None, env: Any = None, cwd: Any = None, timeout: float = 60,
             input_text: Any = None) -> subprocess.CompletedProcess:
    """Run ``fsdf ARGS`` as ``python -m fsdf`` (or ``script``) with this worktree's code; stdin is not a tty."""
    command = [str(script)] if script else [sys.executable, '-m', 'fsdf']
    full_env = {**os.environ, 'PYTHONPATH': str(ROOT), **(env or {})}
    return subprocess.run([*command, *args], env=full_env, cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, input=input_text if input_text is not None else '')


def as_json(result: subprocess.CompletedProcess) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope='module')
def fsdf_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed ``fsdf`` console script of this interpreter's environment.

    A venv installed before the entry point existed has none until it is reinstalled
    (``pip install -e .``); then this writes the wrapper installers write, for the entry point
    that pyproject.toml declares, so the declared ``module:function`` is what runs.
    """
    installed = Path(sys.executable).parent / 'fsdf'
    if installed.exists():
        return installed
    entry = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['scripts']['fsdf']
    module, function = entry.split(':')
    script = tmp_path_factory.mktemp('bin') / 'fsdf'
    script.write_text(f'#!{sys.executable}\nimport sys\nfrom {module} import {function}\n'
                      f'if __name__ == "__main__":\n    sys.exit({function}())\n')
    script.chmod(0o755)
    return script


# -- reads ----------------------------------------------------------------------------------------
def test_runs_filters_and_pages(data: dict[str, Any]) -> None:
    work_q = data['names']['work']
    records = as_json(fsdf_cli('runs', '--queue', work_q, '--json'))['records']
    assert len(records) == 10 and {r['queue'] for r in records} == {work_q}
    failed = as_json(fsdf_cli('runs', '--queue', work_q, '--status', 'failed', '--json'))['records']
    assert sorted(json.loads(r['arguments'])['x'] for r in failed) == list(FAILING)
    assert {r['exception_type'] for r in failed} == {'ValueError'}
    found = as_json(fsdf_cli('runs', '--search', 'needle', '--json'))['records']
    assert {r['task_id'] for r in found} == {r['task_id'] for r in failed}
    first = as_json(fsdf_cli('runs', '--queue', work_q, '--limit', '4', '--json'))
    second = as_json(fsdf_cli('runs', '--queue', work_q, '--limit', '4', '--after', first['next_cursor'], '--json'))
    assert len(first['records']) == 4 and len(second['records']) == 4
    assert not {r['task_id'] for r in first['records']} & {r['task_id'] for r in second['records']}
    one = records[0]
    by_prefix = as_json(fsdf_cli('runs', '--task-id', one['task_id'][:-2], '--json'))['records']
    assert one['task_id'] in {r['task_id'] for r in by_prefix}
    assert all(r['task_id'].startswith(one['task_id'][:-2]) for r in by_prefix)
    assert as_json(fsdf_cli('runs', '--queue', work_q, '--since', '1h', '--host', one['host'], '--json'))['records']
    assert not as_json(fsdf_cli('runs', '--queue', work_q, '--until', '2000-01-01', '--json'))['records']
    table = fsdf_cli('runs', '--queue', work_q, '--limit', '4')
    assert table.returncode == 0 and 'STATUS' in table.stdout and 'more: add --after ' in table.stdout


def test_run_shows_the_whole_record(data: dict[str, Any]) -> None:
    failed = as_json(fsdf_cli('runs', '--queue', data['names']['work'], '--status', 'failed', '--json'))['records']
    record = as_json(fsdf_cli('run', failed[0]['task_id'], '--json'))
    assert record['status'] == 'failed' and 'Traceback' in record['traceback'] and record['pid'] == os.getpid()
    table = fsdf_cli('run', failed[0]['task_id'])
    assert table.returncode == 0 and 'ValueError: boom' in table.stdout and 'Traceback' in table.stdout
    ambiguous = fsdf_cli('run', failed[0]['task_id'][:8])  # every id of a process starts alike
    assert ambiguous.returncode == 1 and 'more than one' in ambiguous.stderr
    missing = fsdf_cli('run', 'no-such-task')
    assert missing.returncode == 1 and 'no record of task' in missing.stderr and 'Traceback' not in missing.stderr


def test_tree_shows_three_levels_with_counts(data: dict[str, Any]) -> None:
    tree = as_json(fsdf_cli('tree', data['root'], '--json'))
    assert tree['record']['task_id'] == data['root']
    assert tree['descendants_counts'] == {'succeeded': 7, 'failed': 1}  # 2 middles, 6 leaves, leaf 11 failed
    assert tree['children_counts'] == {'succeeded': 2} and len(tree['children']) == 2
    leaves = [leaf for middle in tree['children'] for leaf in middle['children']]
    assert len(leaves) == 6 and {leaf['record']['queue'] for leaf in leaves} == {data['names'][3]}
    paged = as_json(fsdf_cli('tree', data['root'], '--limit', '1', '--json'))
    rest = as_json(fsdf_cli('tree', data['root'], '--limit', '1', '--after', paged['next_cursor'], '--json'))
    assert len(paged['children']) == len(rest['children']) == 1 and rest['next_cursor'] is None
    assert paged['children'][0]['record']['task_id'] != rest['children'][0]['record']['task_id']
    text = fsdf_cli('tree', data['root']).stdout
    assert 'whole tree: failed 1, succeeded 7' in text and 'KeyError' in text


def test_stats_window(data: dict[str, Any]) -> None:
    stats = as_json(fsdf_cli('stats', data['names']['work'], '--window', '60m', '--json'))
    assert stats['totals'] == {'succeeded': 8, 'failed': 2} and stats['granularity'] == 60
    assert as_json(fsdf_cli('stats', data['names']['work'], '--window', '10d', '--json'))['totals']['failed'] == 2
    bad = fsdf_cli('stats', data['names']['work'], '--window', '60x')
    assert bad.returncode == 2 and 'a window is a number' in bad.stderr


def test_queues_and_consumers(data: dict[str, Any]) -> None:
    names = data['names']

    def live_consumer() -> list[dict[str, Any]]:
        return [c for c in as_json(fsdf_cli('consumers', '--queue', names['live'], '--json')) if c['alive']]
    assert wait_until(lambda: bool(live_consumer()), 20)
    consumer = live_consumer()[0]
    assert consumer['pid'] == os.getpid() and consumer['broker_kind'] == 'PERSISTQUEUE' and consumer['qps'] == 50
    data['work'].push(100)  # waits: nothing consumes work any more
    data['work'].pub({'x': 101}, countdown=3600)  # delayed: held an hour
    queues = {q['name']: q for q in as_json(fsdf_cli('queues', '--json'))}
    work = queues[names['work']]
    assert work['broker_kind'] == 'PERSISTQUEUE'
    assert (work['waiting'], work['delayed'], work['dead_letters']) == (1, 1, len(FAILING))
    assert 0 <= work['oldest_age'] < 60
    assert queues[names['live']]['consumers_alive'] == 1
    assert queues[names[1]]['broker_kind'] == 'LOCAL_PYTHON_QUEUE' and queues[names[1]]['waiting'] is None
    assert queues[names[1]]['delayed'] is None and queues[names[1]]['oldest_age'] is None
    table = fsdf_cli('queues').stdout
    header = table.splitlines()[0].split()
    assert header[:6] == ['QUEUE', 'BROKER', 'WAITING', 'DELAYED', 'DEAD', 'OLDEST'] and 'TIME' in header
    assert names['work'] in table
    data['work'].clear()


def test_pause_and_resume(data: dict[str, Any]) -> None:
    live_q = data['names']['live']
    assert as_json(fsdf_cli('pause', live_q, '--json')) == {'queue': live_q, 'paused': True, 'registered': True}
    assert {q['name']: q for q in as_json(fsdf_cli('queues', '--no-count', '--json'))}[live_q]['paused'] is True
    assert wait_until(lambda: [c['paused'] for c in as_json(fsdf_cli('consumers', '--queue', live_q, '--json'))
                               if c['alive']] == [True], 20)  # the consumer itself says so in its beat
    resumed = fsdf_cli('resume', live_q)
    assert resumed.returncode == 0 and 'resumed' in resumed.stdout
    assert {q['name']: q for q in as_json(fsdf_cli('queues', '--no-count', '--json'))}[live_q]['paused'] is False


# -- writes ---------------------------------------------------------------------------------------
def test_push_validates_and_publishes(data: dict[str, Any], fsdf_script: Path) -> None:
    work_q = data['names']['work']
    pushed = as_json(fsdf_cli('push', work_q, '--kwargs', '{"x": 41}', '--json'))
    assert pushed['broker_kind'] == 'PERSISTQUEUE'
    own_id = f'order-42-{uuid.uuid4().hex}'
    by_script = fsdf_cli('push', work_q, '--kwargs', '{"x": 42}', '--task-id', own_id, script=fsdf_script)
    assert by_script.returncode == 0, by_script.stderr
    assert data['work'].drain(timeout=20) == 2
    flush_all()
    assert as_json(fsdf_cli('run', pushed['task_id'], '--json'))['result'] == '82'
    assert by_script.stdout.strip() == own_id
    assert as_json(fsdf_cli('run', own_id[:20], '--json'))['result'] == '84'  # a unique prefix is enough
    for bad in ('{"x": ', '[1, 2]'):
        result = fsdf_cli('push', work_q, '--kwargs', bad)
        assert result.returncode == 2 and '--kwargs' in result.stderr and 'Traceback' not in result.stderr
    unknown = fsdf_cli('push', f'never_seen_{uuid.uuid4().hex[:6]}', '--kwargs', '{}')
    assert unknown.returncode == 1 and '--broker' in unknown.stderr
    local = fsdf_cli('push', data['names'][1], '--kwargs', '{"x": 1}')
    assert local.returncode == 4 and 'LOCAL_PYTHON_QUEUE' in local.stderr
    assert fsdf_cli('push', 'fsdf_reserved', '--broker', 'PERSISTQUEUE').returncode == 2


def test_purge_asks_and_refuses_without_a_terminal(data: dict[str, Any]) -> None:
    work_q = data['names']['work']
    data['work'].push_many(range(3))
    refused = fsdf_cli('purge', work_q)  # stdin is a pipe: nobody to ask
    assert refused.returncode == 4 and '--yes' in refused.stderr
    assert data['work'].get_message_count() == 3
    purged = as_json(fsdf_cli('purge', work_q, '--yes', '--json'))
    assert purged['purged'] == 3 and data['work'].get_message_count() == 0


def test_dlq_list_redrive_and_purge(data: dict[str, Any], queue_name: str) -> None:
    @task_deco(queue_name, broker_kind=PERSIST, run_records=True, max_retry_times=0)
    def flaky(x: int) -> int:
        if not os.environ.get('CLI_TEST_FIXED'):
            raise RuntimeError(f'flaky {x}')
        return x

    flaky.push_many(range(4))
    flaky.drain(timeout=20)
    get_broker(PERSIST, queue_name).dlq.publish('{not json')  # a malformed dead letter is listed too
    listed = as_json(fsdf_cli('dlq', 'list', queue_name, '--broker', 'persistqueue', '--json'))
    assert len(listed) == 5 and sum(r['reason'] == 'failed' for r in listed) == 4
    assert {r['exception_type'] for r in listed if r['reason'] == 'failed'} == {'RuntimeError'}
    assert get_broker(PERSIST, queue_name).dlq.count() == 5  # listing gave them back
    assert fsdf_cli('dlq', 'purge', queue_name).returncode == 4
    os.environ['CLI_TEST_FIXED'] = '1'
    try:
        assert as_json(fsdf_cli('dlq', 'redrive', queue_name, '--limit', '4', '--json'))['redriven'] == 4
        assert flaky.get_message_count() == 4
        for body in [d.body for d in get_broker(PERSIST, queue_name).fetch(10, 1)]:
            assert 'dead_letter' not in json.loads(body)['extra']
    finally:
        os.environ.pop('CLI_TEST_FIXED')
    assert as_json(fsdf_cli('dlq', 'purge', queue_name, '--yes', '--json'))['purged'] == 1
    assert get_broker(PERSIST, queue_name).dlq.count() == 0


# -- errors, typos, init, consume ------------------------------------------------------------------
def test_unreachable_store_is_one_line_and_code_3(tmp_path: Path) -> None:
    import socket
    with socket.socket() as probe:  # a port nothing listens on once this closes
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    env = {'FSDF_RESULT_STORE_URL': f'mongodb://admin:s3cret-pw@127.0.0.1:{port}/fsdf'}
    commands = (('runs',), ('queues',), ('run', 'x'), ('pause', 'orders'))
    # At once: each waits out the store's 2-s server selection, and they need not wait in turn.
    with ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda command: fsdf_cli(*command, env=env, cwd=tmp_path), commands))
    for command, result in zip(commands, results):
        assert result.returncode == 3, (command, result.stderr)
        assert 'unreachable' in result.stderr and 'Traceback' not in result.stderr
        assert 's3cret-pw' not in result.stderr + result.stdout and len(result.stderr.strip().splitlines()) == 1


def test_typo_gives_usage_and_code_2(fsdf_script: Path) -> None:
    for run in (lambda: fsdf_cli('queus'), lambda: fsdf_cli('queus', script=fsdf_script)):
        result = run()
        assert result.returncode == 2 and result.stderr.startswith('usage: fsdf')
        assert "did you mean 'queues'" in result.stderr and "'consumers'" in result.stderr
    assert fsdf_cli('runs', '--limt', '3').returncode == 2
    assert fsdf_cli('dlq', 'lst', 'q').returncode == 2


def test_init_writes_the_template_and_keeps_an_edited_file(tmp_path: Path) -> None:
    target = tmp_path / 'distributed_frame_config.py'
    written = fsdf_cli('init', cwd=tmp_path)
    assert written.returncode == 0 and target.read_text() == (ROOT / 'fsdf' / 'distributed_frame_config_template.py'
                                                              ).read_text()
    target.write_text('REDIS_URL = "redis://mine"\n')
    refused = fsdf_cli('init', cwd=tmp_path)
    assert refused.returncode == 4 and '--force' in refused.stderr
    assert target.read_text() == 'REDIS_URL = "redis://mine"\n'
    assert fsdf_cli('init', '--force', cwd=tmp_path).returncode == 0 and 'REDIS_URL = "redis://mine"' \
        not in target.read_text()


CONSUMED_MODULE = '''
from fsdf import BrokerEnum, task_deco

@task_deco({queue!r}, broker_kind=BrokerEnum.PERSISTQUEUE, run_records=True)
def double(x):
    return x * 2

not_a_task = 1
'''


@pytest.mark.parametrize('processes', [1, 2])
def test_consume_from_the_shell_until_a_signal(data: dict[str, Any], queue_name: str, tmp_path: Path,
                                               processes: int) -> None:
    (tmp_path / 'shell_tasks.py').write_text(textwrap.dedent(CONSUMED_MODULE.format(queue=queue_name)))
    worker = subprocess.Popen([sys.executable, '-m', 'fsdf', 'consume', 'shell_tasks:double',
                               '--processes', str(processes)], cwd=tmp_path,
                              env={**os.environ, 'PYTHONPATH': str(ROOT)}, stderr=subprocess.PIPE, text=True,
                              preexec_fn=default_signals)
    try:
        ids = [as_json(fsdf_cli('push', queue_name, '--broker', 'PERSISTQUEUE', '--kwargs', json.dumps({'x': x}),
                                '--json'))['task_id'] for x in range(5)]

        def results() -> list[Any]:
            records = as_json(fsdf_cli('runs', '--queue', queue_name, '--json'))['records']
            return sorted(r['result'] for r in records if r['task_id'] in ids)
        assert wait_until(lambda: results() == ['0', '2', '4', '6', '8'], 40)
        worker.send_signal(signal.SIGINT)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert 'Traceback' not in worker.stderr.read()
    assert fsdf_cli('consume', 'shell_tasks:not_a_task', cwd=tmp_path).returncode == 2
    assert fsdf_cli('consume', 'shell_tasks:nothing', cwd=tmp_path).returncode == 1
    assert fsdf_cli('consume', 'no_such_module:f', cwd=tmp_path).returncode == 1
