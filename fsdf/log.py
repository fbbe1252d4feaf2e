"""Loggers for fsdf: standard ``logging``, a colored console handler, optional rotating files."""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading

from fsdf.config import settings

_COLORS = {logging.DEBUG: '\033[36m', logging.INFO: '\033[32m', logging.WARNING: '\033[33m',
           logging.ERROR: '\033[31m', logging.CRITICAL: '\033[1;31m'}
_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'
_lock = threading.Lock()
_file_handlers: dict[str, logging.Handler] = {}


class ColorFormatter(logging.Formatter):
    """Colors the level name when the stream is a terminal."""

    def __init__(self, use_color: bool) -> None:
        super().__init__(_FORMAT)
        self.use_color = use_color

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.use_color:
            return f'{_COLORS.get(record.levelno, "")}{text}\033[0m'
        return text


def _root_logger() -> logging.Logger:
    root = logging.getLogger('fsdf')
    with _lock:
        if not root.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(ColorFormatter(sys.stderr.isatty() and 'NO_COLOR' not in os.environ))
            root.addHandler(handler)
            root.propagate = False
    return root


def get_logger(name: str, level: int = logging.INFO, prefix: str = '', to_file: bool = False) -> logging.Logger:
    """The logger ``fsdf.<prefix><name>``, optionally also writing ``LOG_PATH/<name>.log``."""
    _root_logger()
    logger = logging.getLogger(f'fsdf.{prefix}{name}')
    logger.setLevel(level)
    if to_file:
        with _lock:
            if name not in _file_handlers:
                folder = settings.path('LOG_PATH')
                folder.mkdir(parents=True, exist_ok=True)
                handler = logging.handlers.RotatingFileHandler(
                    folder / f'{name}.log', maxBytes=10 * 1024 * 1024, backupCount=5, encoding='utf-8')
                handler.setFormatter(logging.Formatter(_FORMAT))
                _file_handlers[name] = handler
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
