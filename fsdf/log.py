"""Loggers for fsdf: standard ``logging`` under ``fsdf.``, a colored console fallback, optional rotating files.

fsdf's loggers propagate, so an application's own logging setup (``logging.basicConfig()``, dictConfig, pytest's
caplog) sees every fsdf record, whether it was configured before or after ``import fsdf``. For a script that
configures nothing, the ``fsdf`` logger carries one ``ConsoleFallback`` handler that prints colored lines to the
current ``sys.stderr``; it stays silent as soon as any handler that is not fsdf's own would get the record, so a
record is never printed twice.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TextIO

from fsdf.config import settings

_COLORS = {logging.DEBUG: '\033[36m', logging.INFO: '\033[32m', logging.WARNING: '\033[33m',
           logging.ERROR: '\033[31m', logging.CRITICAL: '\033[1;31m'}
_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'
_lock = threading.Lock()
_file_handlers: dict[str, logging.Handler] = {}
_own_handlers: set[logging.Handler] = set()  # the console fallback and the create_logger_file files


class ColorFormatter(logging.Formatter):
    """Colors the whole line by level when ``use_color``; plain ``_FORMAT`` otherwise."""

    def __init__(self, use_color: bool) -> None:
        super().__init__(_FORMAT)
        self.use_color = use_color

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.use_color:
            return f'{_COLORS.get(record.levelno, "")}{text}\033[0m'
        return text


class ConsoleFallback(logging.Handler):
    """fsdf's console output for scripts that configure no logging: colored lines on the current ``sys.stderr``.

    It prints a record only when no other handler would: none on the root logger and none on the loggers between,
    other than fsdf's own (this one and the ``create_logger_file`` files). Checked per record, so configuring
    logging at any time, before or after importing fsdf, moves fsdf's output there without printing it twice.
    Colors only when stderr is a terminal and ``NO_COLOR`` is not set.
    """

    def __init__(self) -> None:
        super().__init__()
        self._plain = ColorFormatter(use_color=False)
        self._colored = ColorFormatter(use_color=True)

    @property
    def stream(self) -> TextIO:  # the stderr of the moment, as logging.lastResort does, so redirections are followed
        return sys.stderr

    def handle(self, record: logging.LogRecord) -> bool:
        if _someone_else_handles(record.name):
            return False
        return bool(super().handle(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self.stream
            colored = stream.isatty() and 'NO_COLOR' not in os.environ
            stream.write((self._colored if colored else self._plain).format(record) + '\n')
            stream.flush()
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def _someone_else_handles(name: str) -> bool:
    """Whether a record of logger ``name`` reaches a handler that fsdf did not add."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        if any(handler not in _own_handlers for handler in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False


console = ConsoleFallback()
_own_handlers.add(console)
logging.getLogger('fsdf').addHandler(console)


def get_logger(name: str, level: int = logging.INFO, prefix: str = '', to_file: bool = False) -> logging.Logger:
    """The logger ``fsdf.<prefix><name>``, optionally also writing ``LOG_PATH/<name>.log``."""
    logger = logging.getLogger(f'fsdf.{prefix}{name}')
    logger.setLevel(level)
    if to_file:
        with _lock:
            if name not in _file_handlers:
                folder = settings.path('LOG_PATH')
                folder.mkdir(parents=True, exist_ok=True)
                # Imported here: it imports socket, pickle and queue, and few tasks log to files.
                from logging.handlers import RotatingFileHandler
                handler = RotatingFileHandler(
                    folder / f'{name}.log', maxBytes=10 * 1024 * 1024, backupCount=5, encoding='utf-8')
                handler.setFormatter(logging.Formatter(_FORMAT))
                _file_handlers[name] = handler
                _own_handlers.add(handler)
                logger.addHandler(handler)
    return logger


class EveryNSeconds:
    """Says whether to log now, so a flood of one event prints one line per interval."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._next = 0.0
        self.suppressed = 0

    def ready(self, now: float) -> bool:
        """True at most once per interval; counts the calls it turned down in ``suppressed``."""
        if now >= self._next:
            self._next = now + self.seconds
            return True
        self.suppressed += 1
        return False
