"""Small helpers shared by the tests (fixtures live in conftest.py)."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from fsdf import BrokerEnum, task_deco


def default_signals() -> None:
    """In a child before exec: SIGINT and SIGTERM at their defaults and unblocked, as from a shell.

    A child inherits an ignored or blocked signal from the test process (whatever a library in it set),
    and Python then leaves SIGINT ignored, so fsdf rightly installs no handler: a test sending SIGINT
    must not depend on that.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def push_from_threads(task, threads: int, each: int) -> None:
    """``threads`` threads each push ``each`` calls at once (thread i pushes i * 100 + n); returns when all have."""
    started = [threading.Thread(target=lambda i=i: [task.push(i * 100 + n) for n in range(each)])
               for i in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` s pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def every_call_runs_across_a_restart(queue_name: str, kind, restart: Callable[[], None],
                                     settled: Optional[Callable[[], bool]] = None) -> None:
    """Consume 100 calls with 4 threads, ``restart()`` the server after 10 have run, publish 50 more,
    and assert that all 150 run, and then that ``settled()`` (nothing left on the server) holds."""
    seen = set()
    lock = threading.Lock()

    @task_deco(queue_name, broker_kind=kind, concurrent_num=4)
    def work(x):
        time.sleep(0.01)
        with lock:
            seen.add(x)

    work.push_many(range(100))
    work.consume()
    try:
        assert wait_until(lambda: len(seen) >= 10, 30)
        restart()
        work.push_many(range(100, 150))  # publishing works again after the restart
        assert wait_until(lambda: len(seen) == 150, 60), f'{150 - len(seen)} calls never ran'
        if settled is not None:
            assert wait_until(settled, 20)
    finally:
        work.consumer.stop()


KILLED_CONSUMER_SCRIPT = '''
import faulthandler, os, sys, time
from fsdf import BrokerEnum, task_deco

faulthandler.dump_traceback_later(25)  # still alive then (killed at 300 runs): its threads' stacks say why

out = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND)

@task_deco(sys.argv[1], broker_kind=BrokerEnum[sys.argv[3]], concurrent_num=50)
def work(x):
    time.sleep(0.05)
    os.write(out, f'{x}\\n'.encode())

work.consume()
'''
KILL_TOTAL = 2000  # tasks queued before the consumer starts
KILL_AFTER = 300  # tasks the consumer has run when it is killed
MAX_DUPLICATES = 150  # what a consumer of 50 threads holds: running, prefetched, and acks not yet sent


def every_task_runs_after_a_kill_9(queue_name: str, kind: BrokerEnum, run_script, folder: Path, label: str,
                                   held: Optional[Callable[[], bool]] = None,
                                   settled: Optional[Callable[[], bool]] = None,
                                   within: float = 60.0) -> None:
    """Queue 2,000 tasks, start a consumer process (50 threads, 50 ms a call), kill -9 it after 300 have
    run, then consume here: every task runs within ``within`` s, and at most 150 run twice.

    ``held()``, checked right after the kill, says the dead consumer held messages (the test shows their
    return); ``settled()`` (nothing left on the server) must hold within 10 s after this consumer stops.
    ``run_script`` is conftest's fixture; ``label`` names the kind in the printed line."""
    done = folder / 'done.txt'
    done.touch()
    out = os.open(done, os.O_WRONLY | os.O_APPEND)

    @task_deco(queue_name, broker_kind=kind, concurrent_num=50)
    def work(x):
        os.write(out, f'{x}\n'.encode())

    def runs() -> list[int]:
        return list(map(int, done.read_text().split()))

    work.push_many(range(KILL_TOTAL))
    child = run_script(KILLED_CONSUMER_SCRIPT, queue_name, str(done), kind.name)
    try:
        assert wait_until(lambda: len(runs()) >= KILL_AFTER, 60)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    if held is not None:
        assert held(), 'the killed consumer held no messages: the test shows nothing'
    started = time.monotonic()
    work.consume()
    try:
        # drain() would stop at the first empty fetch, before a dead consumer's messages are back.
        assert wait_until(lambda: len(set(runs())) >= KILL_TOTAL, within), \
            f'{KILL_TOTAL - len(set(runs()))} tasks never ran'
        seconds = time.monotonic() - started
    finally:
        work.consumer.stop()
        os.close(out)
    duplicates = len(runs()) - len(set(runs()))
    print(f'{label}: 0 lost, {duplicates} ran twice after kill -9, all ran {seconds:.1f} s after')
    assert set(runs()) == set(range(KILL_TOTAL))
    assert duplicates <= MAX_DUPLICATES
    if settled is not None:
        assert wait_until(settled, 10)
