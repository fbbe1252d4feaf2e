"""GEVENT and EVENTLET modes, each in its own process (monkey-patching must come first)."""
from __future__ import annotations

import json
import subprocess

import pytest

SCRIPT = '''
import sys
library = sys.argv[1]
if sys.argv[2] == 'patched':
    if library == 'gevent':
        from gevent import monkey; monkey.patch_all()
    else:
        import eventlet; eventlet.monkey_patch()
import json, time
from fsdf import task_deco, BrokerEnum, ConcurrentModeEnum

running = peak = 0

@task_deco(sys.argv[3], broker_kind=BrokerEnum.PERSISTQUEUE, concurrent_num=100, max_retry_times=1,
           concurrent_mode=getattr(ConcurrentModeEnum, library.upper()))
def wait(i):
    global running, peak
    running += 1
    peak = max(peak, running)
    time.sleep(0.2)  # patched: yields to the other greenlets
    running -= 1
    if i == 0:
        raise ValueError('zero fails')

wait.push_many(range(300))
settled = wait.drain(timeout=60)
print(json.dumps({'settled': settled, 'peak': peak, **wait.consumer.counters.snapshot(),
                  'dlq': wait.publisher.broker.dlq.count()}))
'''


@pytest.mark.parametrize('library', ['gevent', 'eventlet'])
def test_green_mode_runs_calls_concurrently_with_retries_and_dlq(library, run_script, queue_name) -> None:
    proc = run_script(SCRIPT, library, 'patched', queue_name, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report['settled'] == 300 and report['succeeded'] == 299
    assert report['retried'] == 1 and report['dead_lettered'] == 1 and report['dlq'] == 1
    assert report['peak'] >= 50  # greenlets really overlapped their sleeps


@pytest.mark.parametrize('library', ['gevent', 'eventlet'])
def test_green_mode_without_the_monkey_patch_is_a_clear_error(library, run_script, queue_name) -> None:
    proc = run_script(SCRIPT, library, 'unpatched', queue_name, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert f'concurrent_mode {library.upper()} needs' in err and 'monkey' in err
