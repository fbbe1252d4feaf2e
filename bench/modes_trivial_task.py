"""The trivial task of ``bench/modes.py processes``, importable by the processes ``multi_process_consume`` spawns.

Its queue name comes from ``FSDF_BENCH_QUEUE`` (every run starts on a fresh PERSISTQUEUE table), its
concurrency per process from ``FSDF_BENCH_CONCURRENCY`` (default 50, fsdf's own default).
"""
from __future__ import annotations

import logging
import os

from fsdf import BrokerEnum, task_deco


@task_deco(os.environ.get('FSDF_BENCH_QUEUE', 'bench_processes'), broker_kind=BrokerEnum.PERSISTQUEUE,
           concurrent_num=int(os.environ.get('FSDF_BENCH_CONCURRENCY', '50')), log_level=logging.WARNING)
def trivial(i: int) -> int:
    """Return its argument: all the cost is the framework's."""
    return i
