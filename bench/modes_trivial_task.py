"""The trivial task of ``bench/modes.py processes`` and ``bench/processes.py``, importable by the processes
``multi_process_consume`` spawns.

Its queue name comes from ``FSDF_BENCH_QUEUE`` (every run starts on a fresh queue), its concurrency per
process from ``FSDF_BENCH_CONCURRENCY`` (default 50, fsdf's own default), its mode from ``FSDF_BENCH_MODE``
(a ``ConcurrentModeEnum`` name, default THREADING), its broker kind from ``FSDF_BENCH_BROKER`` (default
PERSISTQUEUE). With ``BENCH_FSDF_SOURCE`` set, it checks that fsdf was
imported from there (the spawned children must measure the same fsdf as their parent).
"""
from __future__ import annotations

import logging
import os

from fsdf import BrokerEnum, ConcurrentModeEnum, task_deco

if os.environ.get('BENCH_FSDF_SOURCE'):
    from benchlib import check_fsdf_source
    check_fsdf_source(os.environ['BENCH_FSDF_SOURCE'])
if os.environ.get('FSDF_BENCH_PROBE'):  # bench/processes.py --probe: lock and thread CPU figures
    from consumer_probe import install
    install(os.environ['FSDF_BENCH_PROBE'])


@task_deco(os.environ.get('FSDF_BENCH_QUEUE', 'bench_processes'),
           broker_kind=BrokerEnum[os.environ.get('FSDF_BENCH_BROKER', 'PERSISTQUEUE')],
           concurrent_mode=ConcurrentModeEnum[os.environ.get('FSDF_BENCH_MODE', 'THREADING')],
           concurrent_num=int(os.environ.get('FSDF_BENCH_CONCURRENCY', '50')), log_level=logging.WARNING)
def trivial(i: int) -> int:
    """Return its argument: all the cost is the framework's."""
    return i
