"""Where a consumer process's time goes, for ``bench/processes.py --probe``: CPU per thread kind, and the
SQLite brokers' process lock (``fsdf.brokers.file_lock.FileLock``): how long threads waited for it and held it,
and how much of the holding was the holder's own CPU (the rest: waiting for the GIL, I/O, the machine's other work).

Installed in a consumer process (``install(folder)``, from ``modes_trivial_task`` when ``FSDF_BENCH_PROBE``
names a folder), it wraps ``FileLock.__enter__``/``__exit__`` with two ``perf_counter`` reads each, and a
daemon thread writes ``<folder>/<pid>.json`` every ``WRITE_EVERY_SECONDS`` (replaced atomically):
cumulative seconds, so the bench reads it before and after a timed window and takes the difference.
Thread CPU comes from each thread's CPU clock (``pthread_getcpuclockid``), grouped by the name fsdf gives the
thread: fetch, workers, acks (the ack flusher), records (run records), other. A thread that has ended
takes its CPU with it (the pool's threads live through a run). Linux only; stdlib only.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

WRITE_EVERY_SECONDS = 0.01


class LockTimes:
    """Seconds spent waiting for and holding the process lock, and how many times it was taken."""

    def __init__(self) -> None:
        self.taken = 0
        self.waited = 0.0
        self.held = 0.0
        self.held_cpu = 0.0  # the holding thread's CPU while it held the lock (the rest: GIL waits, I/O, preemption)
        self._since: dict[int, tuple[float, float]] = {}  # thread id -> when it got the lock, its CPU clock then

    def wrap(self, lock_class: Any) -> None:
        enter, leave, times = lock_class.__enter__, lock_class.__exit__, self

        def timed_enter(lock: Any) -> None:
            began = time.perf_counter()
            enter(lock)
            got = time.perf_counter()
            times.taken += 1
            times.waited += got - began
            times._since[threading.get_ident()] = got, time.thread_time()

        def timed_exit(lock: Any, *exc: Any) -> None:
            leave(lock, *exc)
            got, cpu = times._since.pop(threading.get_ident())
            times.held += time.perf_counter() - got
            times.held_cpu += time.thread_time() - cpu

        lock_class.__enter__, lock_class.__exit__ = timed_enter, timed_exit


def thread_kind(name: str) -> str:
    """The group a thread's CPU is counted in, from the name fsdf gives it."""
    if name.startswith('fsdf-fetch-'):
        return 'fetch'
    if name.startswith('fsdf-acks-'):
        return 'acks'
    if name.startswith('fsdf-records'):
        return 'records'
    if name.startswith('fsdf-') and name.rsplit('-', 1)[-1].isdigit():
        return 'workers'
    return 'other'


def thread_cpu() -> dict[str, float]:
    """CPU seconds of the live threads of this process, per kind."""
    kinds: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            seconds = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, ProcessLookupError):  # ended since enumerate()
            continue
        kind = thread_kind(thread.name)
        kinds[kind] = kinds.get(kind, 0.0) + seconds
    return kinds


def install(folder: str) -> None:
    """Time the process lock and write this process's figures to ``folder`` until it exits."""
    lock = LockTimes()
    try:
        from fsdf.brokers.file_lock import FileLock
    except ImportError:  # an older fsdf (--compare-commit) has no process lock: thread CPU only
        pass
    else:
        lock.wrap(FileLock)
    path = Path(folder) / f'{os.getpid()}.json'

    def write_forever() -> None:
        while True:
            figures = {'lock_taken': lock.taken, 'lock_waited': lock.waited, 'lock_held': lock.held,
                       'lock_held_cpu': lock.held_cpu,
                       'threads': thread_cpu()}
            partial = path.with_suffix('.part')
            partial.write_text(json.dumps(figures))
            partial.replace(path)
            time.sleep(WRITE_EVERY_SECONDS)

    threading.Thread(target=write_forever, name='bench-probe', daemon=True).start()


def read(folder: str, pid: int) -> dict[str, Any]:
    """The figures process ``pid`` last wrote (empty if none yet)."""
    try:
        return json.loads((Path(folder) / f'{pid}.json').read_text())
    except (OSError, ValueError):
        return {}
