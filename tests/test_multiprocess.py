"""Multi-process consuming: processes x threads, graceful stop, no orphans, restart of dead children."""
from __future__ import annotations

import signal
from pathlib import Path

import psutil
from helpers import wait_until

from fsdf import BrokerEnum, get_publisher

SCRIPT = '''
import os, sys, time
from fsdf import task_deco, BrokerEnum, run_consumer_with_multi_process

OUT = sys.argv[2]

@task_deco(sys.argv[1], broker_kind=BrokerEnum.PERSISTQUEUE, concurrent_num=4)
def work(i):
    time.sleep(0.02)
    with open(OUT, 'a') as f:
        f.write(f'{os.getpid()} {i}\\n')

if __name__ == '__main__':
    run_consumer_with_multi_process(work, 2, restart=sys.argv[3] == 'restart')
'''


def done(out: Path) -> list[tuple[int, int]]:
    if not out.exists():
        return []
    return [tuple(map(int, line.split())) for line in out.read_text().splitlines()]


def children_of(pid: int) -> list[psutil.Process]:
    """Live consumer children: spawned ones (not multiprocessing's resource tracker, nor a child forked a moment
    ago that still shows the parent's command line), not zombies."""
    alive = []
    for child in psutil.Process(pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and 'multiprocessing.spawn' in ' '.join(child.cmdline()):
                alive.append(child)
        except psutil.Error:
            pass
    return alive


def test_two_processes_share_the_work_and_stop_on_sigterm(queue_name, run_script, tmp_path) -> None:
    out = tmp_path / 'out.txt'
    get_publisher(queue_name, BrokerEnum.PERSISTQUEUE).publish_many([{'i': i} for i in range(400)])
    parent = run_script(SCRIPT, queue_name, str(out), 'once')
    assert wait_until(lambda: len(done(out)) == 400, timeout=60)
    records = done(out)
    assert sorted(i for _, i in records) == list(range(400))
    assert len({pid for pid, _ in records}) == 2  # both children consumed
    children = children_of(parent.pid)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(20) == 0
    assert wait_until(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), 10)


def test_children_stop_when_the_parent_is_killed(queue_name, run_script, tmp_path) -> None:
    parent = run_script(SCRIPT, queue_name, str(tmp_path / 'out.txt'), 'once')
    assert wait_until(lambda: len(children_of(parent.pid)) == 2)
    children = children_of(parent.pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    assert wait_until(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), 15)


def test_a_dead_child_is_restarted_when_asked(queue_name, run_script, tmp_path) -> None:
    parent = run_script(SCRIPT, queue_name, str(tmp_path / 'out.txt'), 'restart')
    try:
        assert wait_until(lambda: len(children_of(parent.pid)) == 2)
        first = children_of(parent.pid)
        first[0].kill()
        assert wait_until(lambda: len(children_of(parent.pid)) == 2
                          and {c.pid for c in children_of(parent.pid)} != {c.pid for c in first})
        assert first[1].pid in {c.pid for c in children_of(parent.pid)}
    finally:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(20) == 0


def test_a_dead_child_is_reported_once_when_not_restarted(queue_name, run_script, tmp_path) -> None:
    """Without restart, a dead child stays in the parent's list: its exit is logged once, not every 0.5 s."""
    log = tmp_path / 'parent.log'
    with log.open('w') as stderr:
        parent = run_script(SCRIPT, queue_name, str(tmp_path / 'out.txt'), 'once', stderr=stderr)
    assert wait_until(lambda: len(children_of(parent.pid)) == 2)
    first, second = children_of(parent.pid)
    first.kill()
    assert wait_until(lambda: f'consumer process {first.pid} ' in log.read_text())
    # What must not happen is a repeat, so no event marks the moment: give the parent's 0.5-s loop three turns.
    psutil.wait_procs([second], timeout=1.5)
    second.kill()
    assert parent.wait(20) == 0
    reports = [line for line in log.read_text().splitlines() if 'exited with code' in line]
    assert [line.split('consumer process ')[1].split()[0] for line in reports] == [str(first.pid), str(second.pid)]
