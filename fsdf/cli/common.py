"""What every ``fsdf`` command shares: exit codes, the one error type, output (tables or JSON), times.

Exit codes (documented in the README, relied on by scripts):

- ``0`` OK;
- ``1`` NOT_FOUND: no such task record, queue, module or function;
- ``2`` USAGE: a mistyped command or option (argparse's own code), or a bad value (JSON, date, window,
  queue name, broker kind);
- ``3`` UNREACHABLE: the run store or a broker could not be reached;
- ``4`` REFUSED: the command would lose data without a ``--yes``/``--force``, or cannot act on that
  queue from outside its process (LOCAL_PYTHON_QUEUE lives in one process's memory).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import sys
import time
from typing import Any, Callable, Optional, Sequence, TextIO

from fsdf.secrets import redact

OK, NOT_FOUND, USAGE, UNREACHABLE, REFUSED = 0, 1, 2, 3, 4
CELL_WIDTH = 60
"""Longest cell of a table, in characters: a longer value is cut with an ellipsis (``--json`` has it whole)."""
_RELATIVE = re.compile(r'\s*(\d+(?:\.\d+)?)\s*([smhd])\s*')
_UNIT_SECONDS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}


class CliError(Exception):
    """A failure the command reports as one line on stderr and an exit code, never a traceback."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = redact(message)


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """The exception types meaning "the store or a broker is away", from the client libraries loaded.

    Only libraries already imported are looked at: one never imported cannot have raised.
    """
    found: list[type[BaseException]] = [ConnectionError, TimeoutError, sqlite3.OperationalError]
    for module_name, names in (('pymongo.errors', ('ConnectionFailure', 'ServerSelectionTimeoutError')),
                               ('redis.exceptions', ('ConnectionError', 'TimeoutError')),
                               ('amqpstorm.exception', ('AMQPConnectionError',)),
                               ('pika.exceptions', ('AMQPConnectionError',)),
                               ('confluent_kafka', ('KafkaException',))):
        module = sys.modules.get(module_name)
        found.extend(getattr(module, name) for name in names if module is not None and hasattr(module, name))
    return tuple(found)


def describe_unreachable(exc: BaseException, what: str) -> str:
    """The one line said when ``what`` (the run store, a broker) is away; secrets redacted."""
    first_line = (str(exc).strip().splitlines() or [''])[0][:300]
    return f'{what} is unreachable: {type(exc).__name__}: {redact(first_line)}'


# -- values from the command line ----------------------------------------------------------------
def parse_time(text: str, now: Optional[float] = None) -> float:
    """``--since``/``--until``: an ISO time (``2024-05-01``, ``2024-05-01T12:00``, local unless it has an
    offset) or a span ago (``90s``, ``10m``, ``2h``, ``3d``); epoch seconds. CliError(USAGE) otherwise."""
    match = _RELATIVE.fullmatch(text)
    if match:
        return (time.time() if now is None else now) - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise CliError(USAGE, f'{text!r} is neither an ISO time (2024-05-01T12:00) nor a span ago '
                              f'(90s, 10m, 2h, 3d)') from None


def parse_json_object(text: str, option: str) -> dict[str, Any]:
    """A JSON object given on the command line; CliError(USAGE) saying what is wrong otherwise."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(USAGE, f'{option} is not valid JSON ({exc})') from None
    if not isinstance(value, dict):
        raise CliError(USAGE, f'{option} must be a JSON object like {{"x": 1}}, got {type(value).__name__}')
    return value


def checked_queue(name: str) -> str:
    """A queue name from the user, through fsdf's one rule (fsdf/names.py)."""
    from fsdf.names import check_queue_name
    try:
        return check_queue_name(name)
    except ValueError as exc:
        raise CliError(USAGE, str(exc)) from None


# -- output ------------------------------------------------------------------------------------------
def print_json(value: Any, out: TextIO = sys.stdout) -> None:
    """One JSON document, for scripts (non-JSON values such as enums are written as text)."""
    out.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + '\n')


def show_time(epoch: Optional[float]) -> str:
    """Epoch seconds as local ``YYYY-MM-DD HH:MM:SS``; ``-`` for none."""
    if epoch is None:
        return '-'
    return dt.datetime.fromtimestamp(epoch).strftime('%Y-%m-%d %H:%M:%S')


def show_seconds(seconds: Optional[float]) -> str:
    """A duration for people: ``0.012s``, ``3m 20s``, ``2h 05m``; ``-`` for none."""
    if seconds is None:
        return '-'
    if seconds < 60:
        return f'{seconds:.3f}s' if seconds < 10 else f'{seconds:.1f}s'
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f'{minutes}m {secs:02d}s'
    hours, minutes = divmod(minutes, 60)
    return f'{hours}h {minutes:02d}m' if hours < 48 else f'{hours // 24}d {hours % 24:02d}h'


def _cell(value: Any) -> str:
    text = '-' if value is None or value == '' else str(value)
    text = ' '.join(text.split())  # one line per row, whatever the value holds
    return text if len(text) <= CELL_WIDTH else text[:CELL_WIDTH - 1] + '…'


Column = tuple[str, Callable[[dict[str, Any]], Any]]


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], out: TextIO = sys.stdout,
                empty: str = '(none)') -> None:
    """Rows as aligned columns under upper-case headers; ``empty`` when there are none."""
    if not rows:
        out.write(empty + '\n')
        return
    cells = [[_cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(header), *(len(line[i]) for line in cells)) for i, (header, _) in enumerate(columns)]
    out.write('  '.join(h.upper().ljust(w) for (h, _), w in zip(columns, widths)).rstrip() + '\n')
    for line in cells:
        out.write('  '.join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + '\n')


def confirm(question: str, assume_yes: bool, refusal: str) -> None:
    """Go on if ``--yes`` was given or a person at a terminal answers y; else CliError(REFUSED, refusal)."""
    if assume_yes:
        return
    if not (sys.stdin is not None and sys.stdin.isatty()):
        raise CliError(REFUSED, f'{refusal}: no terminal to ask on; pass --yes to do it anyway')
    try:
        answer = input(f'{question} [y/N] ')
    except EOFError:
        answer = ''
    if answer.strip().lower() not in ('y', 'yes'):
        raise CliError(REFUSED, f'{refusal}: not confirmed')
