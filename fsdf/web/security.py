"""Who may read and act: the token, the cross-site guard, the host check and read-only mode, in one ASGI layer.

The design (one home for it):

- **Loopback without a token.** :func:`fsdf.web.serve` binds 127.0.0.1 by default and refuses any
  other address unless a token is given. Without a token every request must name a loopback host
  (``Host: localhost``/``127.0.0.1``/``[::1]``): a page on another site that points its own domain at
  127.0.0.1 (DNS rebinding) gets 403, so it cannot read the data either.
- **With a token** every route but ``/healthz`` and the static assets needs it: the header
  ``Authorization: Bearer <token>`` (scripts, Prometheus), or the cookie ``fsdf_token`` that visiting
  any page with ``?token=<token>`` sets (HttpOnly, SameSite=Strict) before redirecting to the same
  page without the token in its address. Tokens are compared in constant time.
- **Actions** (every POST) must be JSON (``Content-Type: application/json``) and carry the header
  ``X-Fsdf-Action: 1``. A cross-site form cannot set either, and a cross-site ``fetch`` that does
  needs a CORS preflight this server never approves; on top, an ``Origin`` (or ``Referer``) naming
  another site, or ``Sec-Fetch-Site: cross-site``, is refused. So is every action in read-only mode
  (403; the pages hide the buttons, reading ``/api/config``).
"""
from __future__ import annotations

import hmac
import json
from typing import Optional
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = 'fsdf_token'
ACTION_HEADER = 'x-fsdf-action'
LOOPBACK_NAMES = frozenset({'localhost', '127.0.0.1', '::1', '[::1]'})
OPEN_PATHS = ('/healthz', '/static/')


def is_loopback(host: str) -> bool:
    """Whether a bind address or Host header names this machine only (``127.0.0.0/8``, ``::1``, localhost)."""
    name = host.strip().lower()
    if name.startswith('['):
        name = name[:name.find(']') + 1]
    elif name.count(':') == 1:
        name = name.partition(':')[0]
    return name in LOOPBACK_NAMES or name.startswith('127.')


def _same(given: Optional[str], token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class Guard:
    """The ASGI layer in front of every route (see the module's docstring for the rules)."""

    def __init__(self, app: ASGIApp, token: Optional[str], read_only: bool) -> None:
        self.app = app
        self.token = token
        self.read_only = read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            await _answer(send, status, {'error': message})
            return
        if self.token and scope['method'] == 'GET' and b'token=' in scope.get('query_string', b''):
            await self._set_cookie_and_redirect(scope, send)
            return
        await self.app(scope, receive, _with_headers(send))

    def _refusal(self, scope: Scope, headers: Headers) -> Optional[tuple[int, str]]:
        """(status, message) when the request may not go on, else None."""
        path = scope['path']
        if not self.token and not is_loopback(headers.get('host', '')):
            return 403, 'without a token this dashboard answers only requests to localhost'
        if self.token and not path.startswith(OPEN_PATHS) and not self._has_token(scope, headers):
            return 401, 'a token is needed: open the page with ?token=... or send Authorization: Bearer ...'
        if scope['method'] in ('GET', 'HEAD'):
            return None
        if self.read_only:
            return 403, 'this dashboard is read-only'
        return cross_site_problem(scope, headers)

    def _has_token(self, scope: Scope, headers: Headers) -> bool:
        assert self.token is not None
        bearer = headers.get('authorization', '')
        if bearer.startswith('Bearer ') and _same(bearer[7:], self.token):
            return True
        cookie = _cookie(headers.get('cookie', ''), COOKIE)
        if _same(cookie, self.token):
            return True
        # A page visited with ?token= is let through to the redirect that sets the cookie.
        query = dict(parse_qsl(scope.get('query_string', b'').decode('latin-1')))
        return scope['method'] == 'GET' and _same(query.get('token'), self.token)

    async def _set_cookie_and_redirect(self, scope: Scope, send: Send) -> None:
        query = [(k, v) for k, v in parse_qsl(scope['query_string'].decode('latin-1')) if k != 'token']
        location = scope['path'] + ('?' + urlencode(query) if query else '')
        cookie = f'{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/'
        await send({'type': 'http.response.start', 'status': 303,
                    'headers': [(b'location', location.encode()), (b'set-cookie', cookie.encode()),
                                (b'content-length', b'0')]})
        await send({'type': 'http.response.body', 'body': b''})


def cross_site_problem(scope: Scope, headers: Headers) -> Optional[tuple[int, str]]:
    """Why an action may come from another site (status, message), or None when it comes from the dashboard."""
    if headers.get(ACTION_HEADER) != '1':
        return 403, f'actions need the header {ACTION_HEADER}: 1 (the dashboard\'s pages send it)'
    if not headers.get('content-type', '').startswith('application/json'):
        return 415, 'actions take a JSON body (Content-Type: application/json)'
    if headers.get('sec-fetch-site') == 'cross-site':
        return 403, 'cross-site requests may not act'
    source = headers.get('origin') or headers.get('referer')
    if source and source != 'null':
        own = headers.get('host', '')
        if urlsplit(source).netloc != own:
            return 403, 'a request from another site may not act'
    return None


# The pages load only their own files; no page of another site may frame them (clickjacking an action).
SECURITY_HEADERS = [(b'content-security-policy',
                     b"default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
                    (b'x-content-type-options', b'nosniff'), (b'referrer-policy', b'same-origin')]


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message['type'] == 'http.response.start':
            message = {**message, 'headers': [*message.get('headers', []), *SECURITY_HEADERS]}
        await send(message)
    return sending


def _cookie(header: str, name: str) -> Optional[str]:
    for part in header.split(';'):
        key, _, value = part.strip().partition('=')
        if key == name:
            return value
    return None


async def _answer(send: Send, status: int, body: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    await send({'type': 'http.response.start', 'status': status,
                'headers': [(b'content-type', b'application/json'), (b'content-length', str(len(payload)).encode())]})
    await send({'type': 'http.response.body', 'body': payload})
