"""Reading a request's query string into the query functions' arguments; bad input is a BadRequest (400).

Times (``since``, ``until``) are epoch seconds (``1718000000.5``), an ISO date-time
(``2024-06-10T08:00:00``, local time unless it says ``Z`` or an offset), or an age back from now
(``90s``, ``15m``, ``2h``, ``7d``). Names (queue, function, host, status) are plain text up to
``MAX_NAME`` characters without control characters; a keyword or task id up to ``MAX_TEXT``.
A cursor is the opaque ``next_cursor`` of an earlier page, passed back unchanged.
"""
from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any, Mapping, Optional

from fsdf.records.queries import CHILDREN_PAGE, DEFAULT_PAGE, MAX_PAGE, parse_window

MAX_NAME = 200
MAX_TEXT = 500
_AGE = re.compile(r'(\d+(?:\.\d+)?)([smhd])')
_UNIT_SECONDS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')
RUN_FILTERS = ('queue', 'function', 'status', 'since', 'until', 'task_id', 'host', 'q')


class BadRequest(ValueError):
    """A request the dashboard refuses with 400 and this message (never a 500)."""


def text(params: Mapping[str, str], name: str, longest: int = MAX_NAME) -> Optional[str]:
    """A text parameter, None when absent or empty; BadRequest when too long or holding control characters."""
    value = params.get(name)
    if value is None or value.strip() == '':
        return None
    if len(value) > longest:
        raise BadRequest(f'{name} is at most {longest} characters, got {len(value)}')
    if _CONTROL.search(value):
        raise BadRequest(f'{name} must not hold control characters')
    return value.strip()


def moment(params: Mapping[str, str], name: str, now: Optional[float] = None) -> Optional[float]:
    """A time parameter as epoch seconds (see the module's docstring for the forms it takes)."""
    value = text(params, name, 64)
    if value is None:
        return None
    age = _AGE.fullmatch(value)
    if age:
        return (time.time() if now is None else now) - float(age.group(1)) * _UNIT_SECONDS[age.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace('Z', '+00:00')).timestamp()
    except ValueError:
        raise BadRequest(f'{name} is epoch seconds, an ISO date-time or an age like 15m, 2h, 7d; '
                         f'got {value!r}') from None


def limit(params: Mapping[str, str], default: int = DEFAULT_PAGE) -> int:
    """``limit``: a page size from 1 to MAX_PAGE."""
    value = params.get('limit')
    if value is None or value == '':
        return default
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequest(f'limit is a whole number from 1 to {MAX_PAGE}, got {value!r}')
    return int(value)


def run_filters(params: Mapping[str, str]) -> dict[str, Any]:
    """The filters of the runs page as :func:`fsdf.records.queries.list_runs` keywords."""
    unknown = sorted(set(params) - set(RUN_FILTERS) - {'limit', 'cursor', 'token'})
    if unknown:
        raise BadRequest(f'unknown parameter(s) {", ".join(unknown)}; filters are {", ".join(RUN_FILTERS)}')
    since, until = moment(params, 'since'), moment(params, 'until')
    if since is not None and until is not None and since >= until:
        raise BadRequest('since must be before until')
    return {'queue': text(params, 'queue'), 'function': text(params, 'function'),
            'status': status(params), 'since': since, 'until': until,
            'task_id': text(params, 'task_id', MAX_TEXT), 'host': text(params, 'host'),
            'search': text(params, 'q', MAX_TEXT)}


def status(params: Mapping[str, str]) -> Optional[str]:
    """``status``: a recorded status name (letters and underscores; a user's middleware may add its own)."""
    value = text(params, 'status', 64)
    if value is not None and not re.fullmatch(r'[A-Za-z_]+', value):
        raise BadRequest(f'status is a word such as succeeded or failed, got {value!r}')
    return value


def cursor(params: Mapping[str, str]) -> Optional[str]:
    """``cursor``: an earlier page's ``next_cursor``."""
    return text(params, 'cursor', MAX_TEXT)


def children_limit(params: Mapping[str, str]) -> int:
    return limit(params, CHILDREN_PAGE)


def window(params: Mapping[str, str]) -> str:
    """``window``: ``60s``, ``60m``, ``24h``, ``10d`` (any count and unit; at most 1,000 buckets)."""
    value = params.get('window') or '60m'
    try:
        _, buckets = parse_window(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if buckets > 1000:
        raise BadRequest(f'a window has at most 1000 buckets, got {value!r}')
    return value
