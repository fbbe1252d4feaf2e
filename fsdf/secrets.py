"""Keeping connection secrets out of what fsdf prints: every error and log line about a connection
passes through :func:`redact` first.

``redact_url`` hides the password of every URL in a text (``amqp://guest:***@host/``), even one
whose password holds unescaped ``/``, ``@`` or ``:`` (everything up to the last ``@`` before the
host is hidden). ``redact`` also replaces the password settings' values wherever they appear
(``REDIS_PASSWORD``, and the passwords inside ``REDIS_URL``, ``RABBITMQ_URL``, ``MONGO_CONNECT_URL``,
``RESULT_STORE_URL``, ``KOMBU_URL``), escaped or not.
"""
from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit

MASK = '***'
# scheme://user:password@ — the password runs to the last '@' before whitespace or a quote, so a
# password with raw '/', '@' or ':' is hidden whole.
_URL_CREDENTIALS = re.compile(r'([a-zA-Z][a-zA-Z0-9+.-]*://)([^:/?#@\s\'"]*):([^\s\'"]*)@')
_URL_SETTINGS = ('REDIS_URL', 'RABBITMQ_URL', 'MONGO_CONNECT_URL', 'RESULT_STORE_URL', 'KOMBU_URL')


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (``user:***@``)."""
    if '://' not in text:  # no URL: a substring test is ~20x cheaper than the pattern (the dashboard scrubs every text)
        return text
    return _URL_CREDENTIALS.sub(lambda m: f'{m.group(1)}{m.group(2)}:{MASK}@', text)


def known_secrets() -> list[str]:
    """The password values of the current settings, raw and URL-escaped, longest first."""
    from fsdf.config import settings
    # Derived once per set of values (the dashboard asks on every page; parsing 5 URLs cost ~15 us).
    return list(_secrets_of(settings.REDIS_PASSWORD, tuple(getattr(settings, name) for name in _URL_SETTINGS)))


@functools.lru_cache(maxsize=8)
def _secrets_of(password: Any, urls: tuple[Any, ...]) -> tuple[str, ...]:
    values = {password}
    for url in urls:
        try:
            found = urlsplit(url).password
        except ValueError:  # not even a URL: its password cannot be told apart, redact_url covers it
            found = None
        if found:
            values.add(found)
    secrets = {form for value in values if value and isinstance(value, str)
               for form in (value, quote(value, safe=''), unquote(value))}
    return tuple(sorted(secrets, key=len, reverse=True))


def redact(value: object) -> str:
    """``str(value)`` (an exception, a URL, a message) with URL passwords and known secrets hidden."""
    text = redact_url(str(value))
    for secret in known_secrets():
        text = text.replace(secret, MASK)
    return text
