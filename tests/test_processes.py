"""PERSISTQUEUE across processes: shared queue, kill -9 recovery, graceful SIGTERM/SIGINT."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import wait_until

from fsdf import BrokerEnum, get_publisher

CONSUMER = '''
import os, sys, time
from pathlib import Path
from fsdf import task_deco, BrokerEnum

queue, out, sleep, mode = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

@task_deco(queue, broker_kind=BrokerEnum.PERSISTQUEUE, concurrent_num=4)
def work(i):
    with open(out, 'a') as f:
        f.write(f'start {i}\\n')
    time.sleep(sleep)
    with open(out, 'a') as f:
        f.write(f'end {i}\\n')

if mode == 'drain-on-go':
    Path(f'{out}.ready').touch()
    while not Path(f'{out.parent}/go').exists():
        time.sleep(0.01)
    work.drain(timeout=60)
else:
    work.consume()
'''


def lines(path: Path, kind: str) -> list[int]:
    if not path.exists():
        return []
    return [int(line.split()[1]) for line in path.read_text().splitlines() if line.startswith(kind)]


def test_two_processes_share_a_queue_and_run_each_message_once(queue_name, run_script, tmp_path) -> None:
    outs = [tmp_path / 'a.txt', tmp_path / 'b.txt']
    procs = [run_script(CONSUMER, queue_name, str(out), '0.01', 'drain-on-go') for out in outs]
    assert wait_until(lambda: all(Path(f'{out}.ready').exists() for out in outs))
    get_publisher(queue_name, BrokerEnum.PERSISTQUEUE).publish_many([{'i': i} for i in range(300)])
    (tmp_path / 'go').touch()
    for proc in procs:
        assert proc.wait(60) == 0
    done = [lines(out, 'end') for out in outs]
    assert sorted(done[0] + done[1]) == list(range(300))  # every message once, none twice
    assert done[0] and done[1]  # both processes took part


def test_kill_9_mid_run_loses_nothing(queue_name, run_script, tmp_path) -> None:
    publisher = get_publisher(queue_name, BrokerEnum.PERSISTQUEUE)
    publisher.publish_many([{'i': i} for i in range(60)])
    first = run_script(CONSUMER, queue_name, str(tmp_path / 'first.txt'), '0.2', 'consume')
    assert wait_until(lambda: len(lines(tmp_path / 'first.txt', 'end')) >= 5)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    finished_by_first = set(lines(tmp_path / 'first.txt', 'end'))
    second = run_script(CONSUMER, queue_name, str(tmp_path / 'second.txt'), '0.01', 'drain-on-go')
    (tmp_path / 'go').touch()
    assert second.wait(60) == 0
    finished = finished_by_first | set(lines(tmp_path / 'second.txt', 'end'))
    assert finished == set(range(60))
    assert publisher.get_message_count() == 0


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_signal_finishes_running_calls_and_gives_back_the_rest(queue_name, run_script, tmp_path, sig) -> None:
    out = tmp_path / 'out.txt'
    publisher = get_publisher(queue_name, BrokerEnum.PERSISTQUEUE)
    publisher.publish_many([{'i': i} for i in range(20)])
    proc = run_script(CONSUMER, queue_name, str(out), '1.0', 'consume')
    assert wait_until(lambda: len(lines(out, 'start')) == 4)
    proc.send_signal(sig)
    assert proc.wait(15) == 0
    started, ended = lines(out, 'start'), lines(out, 'end')
    assert sorted(started) == sorted(ended)  # every call that started was allowed to finish
    assert publisher.get_message_count() == 20 - len(ended)  # nothing taken and not run is lost
