"""What the throughput benchmarks share: a completion latch, medians, ratio tables, the machine's description,
and the fsdf source a run measures (this tree's, or another commit's exported to a temp dir).

Stdlib only: the peers' venv imports it too.
"""
from __future__ import annotations

import atexit
import itertools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rawloop import dispatch  # noqa: F401  (its home: a worker timed from its spawn imports only it)

REPO = Path(__file__).resolve().parent.parent
FSDF_SOURCE_VARIABLE = 'BENCH_FSDF_SOURCE'
"""Names the folder whose ``fsdf`` package a (sub)process must measure; unset means this tree's."""


class Countdown:
    """Counts finished tasks from any thread and records when the first and the ``total``-th one finished
    (perf_counter seconds)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._counter = itertools.count(1)  # next() on it is atomic under the GIL: no lock on the hot path
        self.done = threading.Event()
        self.first_at = 0.0
        self.finished_at = 0.0

    def tick(self) -> None:
        """One task finished."""
        count = next(self._counter)
        if count == 1:
            self.first_at = time.perf_counter()
        if count == self.total:
            self.finished_at = time.perf_counter()
            self.done.set()

    def wait(self, timeout: float) -> float:
        """Block until every task finished; the perf_counter time of the last one (TimeoutError if late)."""
        if not self.done.wait(timeout):
            raise TimeoutError(f'not all {self.total} tasks finished within {timeout:.0f} s')
        return self.finished_at


def rate(count: int, began: float, ended: float) -> float:
    """Tasks per second."""
    return count / max(ended - began, 1e-9)


@dataclass
class Measurements:
    """Values per (row, column) over several runs; the table shows medians and ratios to a baseline row."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    notes: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, row: str, column: str, value: float) -> None:
        """Record one run's value."""
        self.values.setdefault((row, column), []).append(value)

    def note(self, row: str, column: str, text: str) -> None:
        """Show ``text`` instead of a number (a peer that could not run, a step it has no way to do)."""
        self.notes[(row, column)] = text

    def median(self, row: str, column: str) -> Optional[float]:
        """Median over runs, or None if never measured."""
        runs = self.values.get((row, column))
        return statistics.median(runs) if runs else None

    def ratios(self, row: str, column: str, baseline: str, baseline_column: Optional[str] = None) -> list[float]:
        """The per-run ratios row/baseline (runs paired in order, so each ratio is within one run)."""
        runs = self.values.get((row, column)) or []
        base = self.values.get((baseline, baseline_column or column)) or []
        return [r / b for r, b in zip(runs, base) if b]

    def ratio(self, row: str, column: str, baseline: str, baseline_column: Optional[str] = None) -> Optional[float]:
        """Median of the per-run ratios row/baseline, or None if either was never measured."""
        ratios = self.ratios(row, column, baseline, baseline_column)
        return statistics.median(ratios) if ratios else None

    def ratio_table(self, pairs: list[tuple[str, str, str]], columns: list[str]) -> str:
        """A markdown table of ratios only: per (name, candidate row, baseline row), each column's
        median of per-run candidate/baseline ratios and, over several runs, [lowest–highest] so the
        noise is in sight; '–' where either was not measured."""
        lines = ['| | ' + ' | '.join(columns) + ' |', '|---' * (len(columns) + 1) + '|']
        for name, candidate, baseline in pairs:
            cells = []
            for column in columns:
                ratios = self.ratios(candidate, column, baseline)
                spread = f' [{min(ratios):.2f}–{max(ratios):.2f}]' if len(ratios) > 1 else ''
                cells.append(f'{statistics.median(ratios):.3f}{spread}' if ratios else '–')
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
        return '\n'.join(lines)

    def table(self, rows: list[str], columns: list[str], baselines: dict[str, str], digits: int = 0,
              with_ratio: bool = True) -> str:
        """A markdown table: median of each cell and, if ``with_ratio``, its ratio to the column's baseline row."""
        header = '| | ' + ' | '.join(columns) + ' |'
        lines = [header, '|---' * (len(columns) + 1) + '|']
        for row in rows:
            cells = []
            for column in columns:
                if (row, column) in self.notes:
                    cells.append(self.notes[(row, column)])
                    continue
                value = self.median(row, column)
                if value is None:
                    cells.append('–')
                    continue
                text = f'{value:,.{digits}f}'
                baseline = baselines.get(column)
                ratio = self.ratio(row, column, baseline) if with_ratio and baseline and baseline != row else None
                cells.append(f'{text} ({ratio:.2f}x)' if ratio is not None else text)
            lines.append(f'| {row} | ' + ' | '.join(cells) + ' |')
        return '\n'.join(lines)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as text."""
    return ', '.join(f'{x:.1f}' for x in os.getloadavg())


def machine_description() -> str:
    """Date, cores, CPU model, Python, redis-server and load average, for the record next to the numbers."""
    model = 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            model = next(line.split(':', 1)[1].strip() for line in cpuinfo if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    redis_version = 'not installed'
    redis_bin = shutil.which('redis-server')
    if redis_bin:
        redis_version = subprocess.run([redis_bin, '--version'], capture_output=True, text=True).stdout.split()[2]
    load = load_average()
    return (f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; nproc {os.cpu_count()}; {model}; '
            f'Python {platform.python_version()}; redis-server {redis_version.removeprefix("v=")}; '
            f'load average {load}')


def temp_dir(prefix: str) -> str:
    """A new temp dir, removed with its contents when this process exits."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# -- which fsdf is measured ------------------------------------------------------------------
def export_commit(rev: str) -> str:
    """A temp dir holding the ``fsdf`` package as it was at ``rev`` (removed when this process exits)."""
    source = temp_dir(f'fsdf-{short_rev(rev)}-')
    archive = subprocess.run(['git', '-C', str(REPO), 'archive', rev, 'fsdf'], capture_output=True, check=True)
    subprocess.run(['tar', '-x', '-C', source], input=archive.stdout, check=True)
    return source


def short_rev(rev: str) -> str:
    """The abbreviated commit hash ``rev`` names, for row labels."""
    return subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', rev], capture_output=True, text=True,
                          check=True).stdout.strip()


def fsdf_environment(source: str) -> dict[str, str]:
    """Environment variables that make a subprocess import fsdf from ``source`` (and check that it did)."""
    return {'PYTHONPATH': source, FSDF_SOURCE_VARIABLE: source}


def put_fsdf_source_first() -> str:
    """Put the fsdf source this process must measure first on sys.path, before fsdf is imported; returns it.

    Without this, a script run from a worktree would measure whichever fsdf the venv has installed
    (an editable install points at one checkout only)."""
    source = os.environ.get(FSDF_SOURCE_VARIABLE) or str(REPO)
    sys.path.insert(0, source)
    return source


def check_fsdf_source(source: str) -> None:
    """Raise if the imported fsdf is not the one in ``source`` (a wrong PYTHONPATH would measure the wrong code)."""
    import fsdf
    if not Path(fsdf.__file__).resolve().is_relative_to(Path(source).resolve()):
        raise RuntimeError(f'fsdf imported from {fsdf.__file__}, not from {source}')
