"""The message: a JSON object of keyword arguments plus the optional reserved key ``extra``."""
from __future__ import annotations

import inspect
import itertools
import json
import os
import time
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Iterator, Optional

from fsdf._compat.json_internals import compact_encoder, scanner, whitespace_match
from fsdf.brokers.base import Body
from fsdf.exceptions import MalformedMessageError

EXTRA = 'extra'
# (task id, root task id) of the call running in this thread or coroutine, so calls it publishes name
# their parent and their root. One variable, not two: it is set for every message run.
running_task: ContextVar[Optional[tuple[str, str]]] = ContextVar('fsdf_running_task', default=None)


def current_task_id() -> Optional[str]:
    """The task id of the call running in this thread or coroutine, None outside a task."""
    running = running_task.get()
    return running[0] if running else None


def _not_serializable(value: Any) -> Any:
    raise TypeError(f'Object of type {type(value).__name__} is not JSON serializable')


# JSONEncoder.encode builds this C encoder anew on every call: one made once is a fifth of a publish.
_encoder = compact_encoder(_not_serializable)


def _compact_dumps() -> Callable[[Any], str]:
    """Compact JSON text, UTF-8 kept as is; a cycle raises RecursionError."""
    encoder = _encoder
    if encoder is None:
        return json.JSONEncoder(ensure_ascii=False, separators=(',', ':'), check_circular=False).encode
    return lambda value: ''.join(encoder(value, 0))


_dumps = _compact_dumps()
_scan = scanner()  # the C scanner json.loads ends up in
_whitespace = whitespace_match


def _loads(body: Body) -> Any:
    """``json.loads``, at half its cost for UTF-8 text: it finds the encoding of bytes and goes
    through two Python layers before the C scanner. Anything unusual (a BOM, UTF-16, an error
    to word) is left to ``json.loads`` itself. A string that is not valid Unicode (an escaped lone
    surrogate, ``"\\ud800"``) raises ValueError: no broker could publish it again, nor its dead letter."""
    try:
        text = body.decode() if isinstance(body, bytes) else body
        value, end = _scan(text, 0)  # leading whitespace: StopIteration, then json.loads
        if end == len(text) or _whitespace(text, end).end() == len(text):
            if '\\u' in text:  # only escapes can make a lone surrogate: the usual message skips the check
                _check_unicode(value)
            return value
    except (StopIteration, ValueError, TypeError):  # ValueError covers bad UTF-8 and bad JSON
        pass
    if not isinstance(body, (str, bytes, bytearray)):  # e.g. a Kafka record without a value
        raise ValueError(f'the body is {type(body).__name__}, not text')
    value = json.loads(body)
    _check_unicode(value)
    return value


def _check_unicode(value: Any) -> None:
    """ValueError if a string in ``value`` holds a lone surrogate (it cannot be encoded as UTF-8)."""
    try:
        _dumps(value).encode()
    except UnicodeEncodeError:
        raise ValueError('a string in it is not valid Unicode (a lone surrogate escape)') from None


class CallSignature:
    """Binds calls to a function's parameters, at publish time and again at consume time."""

    def __init__(self, fn: Callable[..., Any], multi_params: bool = True) -> None:
        self.signature = inspect.signature(fn)
        self.multi_params = multi_params
        self.name = getattr(fn, '__qualname__', repr(fn))
        params = self.signature.parameters.values()
        # Signature.bind is most of the cost of publishing a call; for signatures of plain named
        # parameters the same check is a few set operations, and bind runs only to word an error.
        self._plain = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)
        self._positional = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
        self._order = tuple(p.name for p in params)
        self._names = frozenset(self._order)
        self._required = frozenset(p.name for p in params if p.default is p.empty)
        # Positional arguments alone fit if there are at least this many and at most all: every
        # required parameter is among them (none if a keyword-only one is required, or not plain).
        required_at = [i for i, name in enumerate(self._positional) if name in self._required]
        self._enough_positional = (max(required_at, default=-1) + 1
                                   if self._plain and self._required <= set(self._positional) else len(self._order) + 1)

    def arguments_of(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call ``f(*args, **kwargs)`` as keyword arguments; TypeError if it does not fit."""
        if not kwargs and self._enough_positional <= len(args) <= len(self._positional):
            return dict(zip(self._positional, args))  # push(1, 2): fits without a check
        if self._plain and len(args) <= len(self._positional):
            arguments = dict(zip(self._positional, args))
            if not kwargs:
                if self._fits_plain(arguments):
                    return arguments
            elif arguments.keys().isdisjoint(kwargs):
                arguments.update(kwargs)
                if self._fits_plain(arguments):  # in parameter order, as bind gives them
                    return {name: arguments[name] for name in self._order if name in arguments}
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f'{self.name}{self.signature}: {exc}') from None
        arguments = dict(bound.arguments)
        for name, param in self.signature.parameters.items():
            if param.kind is param.VAR_KEYWORD and name in arguments:
                arguments.update(arguments.pop(name))
            elif param.kind is param.VAR_POSITIONAL and name in arguments:
                raise TypeError(f'{self.name}: *{name} cannot be sent in a message; pass keywords')
        return arguments

    def arguments_of_many(self, calls: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """``arguments_of`` of each call: a tuple of positional arguments, or any other value as the one argument."""
        names, fitting = self._positional, range(self._enough_positional, len(self._positional) + 1)
        single = names[0] if 1 in fitting else None  # push_many(range(n)) of f(i): a dict of one key each
        for call in calls:
            if isinstance(call, tuple):
                yield dict(zip(names, call)) if len(call) in fitting else self.arguments_of(call, {})
            elif single is not None:
                yield {single: call}
            else:
                yield self.arguments_of((call,), {})

    def check_fits(self, arguments: dict[str, Any]) -> None:
        """Raise TypeError if a message's arguments cannot call the function."""
        if not self.multi_params:
            return
        keys = arguments.keys()
        if self._plain and self._required <= keys and keys <= self._names:  # _fits_plain inlined: once a message
            return
        try:
            self.signature.bind(**arguments)
        except TypeError as exc:
            raise TypeError(f'does not fit {self.name}{self.signature}: {exc}') from None

    def _fits_plain(self, arguments: dict[str, Any]) -> bool:
        keys = arguments.keys()
        return self._required <= keys and keys <= self._names


_formatted_second: tuple[int, str] = (-1, '')  # (epoch second, its text): publishes in one second share it


def _format_time(now: float) -> str:
    global _formatted_second
    second = int(now)
    cached_second, text = _formatted_second
    if second != cached_second:
        text = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(second))
        _formatted_second = (second, text)
    return text


def _first_task_number() -> itertools.count:
    """A count starting at 64 random bits shifted left by 64: ids unique across processes, cheap within one."""
    return itertools.count(int.from_bytes(os.urandom(8), 'big') << 64)


_task_numbers = _first_task_number()


def _new_task_numbers() -> None:
    global _task_numbers
    _task_numbers = _first_task_number()


os.register_at_fork(after_in_child=_new_task_numbers)  # a forked child must not repeat its parent's ids


def new_task_id() -> str:
    """32 hex digits like ``uuid4().hex``: 64 random bits per process, then a count (uuid4 per call is slow).

    No other call of any process publishes the same id. ``%`` on one integer is half the cost of
    formatting a prefix and a count.
    """
    return '%032x' % next(_task_numbers)


def new_extra(task_id: Optional[str] = None, priority: Optional[int] = None, eta: Optional[float] = None
              ) -> dict[str, Any]:
    """The ``extra`` of a newly published message."""
    now = time.time()
    # Cut to 0.1 ms by integer division: round(now, 4) is a third of this function.
    extra = {'task_id': task_id or new_task_id(), 'publish_time': int(now * 10000) / 10000,
             'publish_time_format': _format_time(now)}
    running = running_task.get()
    if running:
        extra['parent_task_id'], extra['root_task_id'] = running
    if priority is not None:
        extra['priority'] = priority
    if eta is not None:
        extra['eta'] = eta
    return extra


def encode(arguments: dict[str, Any], extra: dict[str, Any]) -> str:
    """A message body; TypeError if an argument is not JSON-serializable."""
    if EXTRA in arguments:
        raise TypeError(f"'{EXTRA}' is reserved in fsdf messages and cannot be an argument name")
    try:
        return _dumps({**arguments, EXTRA: extra})
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f'task arguments must be JSON-serializable: {exc}') from None


def new_body(arguments: dict[str, Any]) -> tuple[str, str]:
    """``(task_id, body)`` of a new message: ``encode(arguments, new_extra())`` at about half its cost.

    TypeError as ``encode``. Only the arguments go through the JSON encoder; the ``extra`` a push
    writes (a hex id, a number, an ASCII time, and the running task's ids, which are encoded) is
    formatted as text in one operation, its time texts made once a second (``repr`` of the publish
    time alone was a third of ``encode``). The publish time is written with 4 decimals, ``1.5000``:
    the same number as ``encode`` writes. A test holds the two to the same message.
    """
    if EXTRA in arguments:
        raise TypeError(f"'{EXTRA}' is reserved in fsdf messages and cannot be an argument name")
    try:
        head = ''.join(_encoder(arguments, 0)) if _encoder is not None else _dumps(arguments)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f'task arguments must be JSON-serializable: {exc}') from None
    task_id = '%032x' % next(_task_numbers)  # new_task_id(), without its call
    second, tenths = divmod(int(time.time() * 10000), 10000)  # cut to 0.1 ms, as new_extra does
    texts = _second_texts
    if texts[0] != second:
        texts = _texts_of_second(second)
    running = running_task.get()
    return task_id, '%s"extra":{"task_id":"%s","publish_time":%s.%04d,"publish_time_format":"%s"%s}}' % (
        head[:-1] + ',' if len(head) > 2 else '{', task_id, texts[1], tenths, texts[2],
        f',"parent_task_id":{_dumps(running[0])},"root_task_id":{_dumps(running[1])}' if running else '')


_second_texts: tuple[int, str, str] = (-1, '', '')  # (epoch second, its digits, its local time): shared in a second


def _texts_of_second(second: int) -> tuple[int, str, str]:
    global _second_texts
    _second_texts = (second, str(second), _format_time(second))
    return _second_texts


def decode(body: Body) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(arguments, extra)`` of a message body; MalformedMessageError if it is not a JSON object
    or its ``extra`` is not what fsdf would have written (see :func:`check_extra`)."""
    try:  # _loads' usual case inlined (one compact value, no escapes): its call was a sixth of a no-op task's decode
        text = body.decode() if type(body) is bytes else body
        message, end = _scan(text, 0)  # type: ignore[arg-type]  # not text: TypeError, then _loads says so
        if end != len(text) or '\\u' in text:  # whitespace after it, or escapes to check: _loads
            raise ValueError
    except (StopIteration, ValueError, TypeError, RecursionError):
        try:
            message = _loads(body)
        except (ValueError, RecursionError) as exc:  # ValueError: bad UTF-8 too; RecursionError: nested too deep
            raise MalformedMessageError(f'not JSON: {type(exc).__name__}: {exc}') from None
    if not isinstance(message, dict):
        raise MalformedMessageError(f'not a JSON object but {type(message).__name__}')
    extra = message.pop(EXTRA, None)
    if extra is None:
        extra = {}
    elif not isinstance(extra, dict):
        raise MalformedMessageError(f"'{EXTRA}' is not an object but {type(extra).__name__}")
    elif not (len(extra) == 3 and type(extra.get('task_id')) is str and type(extra.get('publish_time')) is float
              and type(extra.get('publish_time_format')) is str):  # not the extra every push writes (half the cost)
        check_extra(extra)
    return message, extra


_TEXT = (str, type(None))
_NUMBER = (int, float, type(None))  # a tuple, and checked with type(): True is not a number here
_INTEGER = (int, type(None))
# The keys of ``extra`` fsdf reads, and the types their values may have; null means absent.
# The per-message overrides follow fsdf/controls/overrides.py (MESSAGE_OVERRIDES; a test holds them equal).
EXTRA_TYPES: dict[str, tuple[type, ...]] = {
    'task_id': _TEXT, 'publish_time': _NUMBER, 'publish_time_format': _TEXT, 'parent_task_id': _TEXT,
    'root_task_id': _TEXT, 'eta': _NUMBER, 'priority': _INTEGER, 'retries': _INTEGER,
    'msg_expire_seconds': _NUMBER, 'function_timeout': _NUMBER, 'max_retry_times': _INTEGER}
_NOT_NEGATIVE = frozenset({'retries', 'msg_expire_seconds', 'function_timeout', 'max_retry_times'})
# Keys whose range matters too: an eta becomes a broker's due time, the others per-message settings.
# publish_time is left out: any number only ages a message, and it is in every message.
_RANGED = _NOT_NEGATIVE | {'eta'}
_LARGEST_NUMBER = 1e15  # beyond any epoch second, timeout or count; also keeps NaN and infinities out


def check_extra(extra: dict[str, Any]) -> None:
    """MalformedMessageError if a key fsdf reads has a value of the wrong type or out of range.

    One type lookup per present key (a published message has three to five) and one set operation
    for the ranges; keys fsdf does not read are left alone, for middleware and other programs.
    """
    for key, value in extra.items():
        kinds = EXTRA_TYPES.get(key)
        if kinds is not None and type(value) not in kinds:
            raise MalformedMessageError(
                f"'{EXTRA}.{key}' must be {_KIND_NAMES[kinds]}, not {type(value).__name__}")
    if not _RANGED.isdisjoint(extra):
        for key in _RANGED.intersection(extra):
            value = extra[key]
            if value is not None and not (
                    (0 if key in _NOT_NEGATIVE else -_LARGEST_NUMBER) <= value <= _LARGEST_NUMBER):
                raise MalformedMessageError(f"'{EXTRA}.{key}' is out of range: {value!r}")


_KIND_NAMES = {_TEXT: 'a string', _NUMBER: 'a number', _INTEGER: 'an integer'}


def dead_letter_body(body: Body, reason: str, **details: Any) -> str:
    """The body stored in ``<queue>_dlq``: the original message with ``extra.dead_letter`` saying why.

    A body that is not a message is kept whole: its text under ``raw_body``, or, if it is not
    UTF-8 text, its bytes in base64 under ``raw_body_base64``. Never raises for any body.
    """
    try:
        arguments, extra = decode(body)
    except MalformedMessageError:
        arguments, extra = _raw_body(body), {}
    extra['dead_letter'] = {'reason': reason, 'time': round(time.time(), 4), **details}
    text = _dumps({**arguments, EXTRA: extra})
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate in a str body of an in-process queue: escape it
        text = json.dumps({**arguments, EXTRA: extra}, separators=(',', ':'))
    return text


def _raw_body(body: Any) -> dict[str, Any]:
    if isinstance(body, str):
        return {'raw_body': body}
    if isinstance(body, (bytes, bytearray)):
        try:
            return {'raw_body': bytes(body).decode()}
        except UnicodeDecodeError:
            import base64  # here: only a body that is not UTF-8 needs it
            return {'raw_body_base64': base64.b64encode(body).decode('ascii')}
    return {'raw_body': None if body is None else repr(body)}


def waiting_since(body: Optional[Body], stored: Optional[float] = None) -> Optional[float]:
    """When a queued message became fetchable (epoch seconds): its ``publish_time``, or its ``eta`` when later.

    For a body without them (a message another program published, or not a message at all):
    ``stored``, the broker's own time for the entry where it keeps one, else None. Reads one body;
    used by :meth:`fsdf.brokers.base.Broker.oldest_age`, never on the consume path.
    """
    try:
        extra = decode(body)[1] if body is not None else {}
    except MalformedMessageError:
        extra = {}
    published, eta = extra.get('publish_time'), extra.get('eta')
    if published is None:
        return stored
    return max(published, eta) if eta is not None else float(published)
