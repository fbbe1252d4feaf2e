"""The dashboard's JSON reads answered without Starlette's router: an ASGI layer in front of the Starlette app.

Under load (30 clients on one process) every request's Python time counts: Starlette's way to a read
route passes two exception middlewares, tries each route's pattern in turn and wraps the endpoint in a
request/response adapter with its own exception layer, about a tenth of the dashboard's CPU a read.
:class:`ReadRoutes` looks an exact path up in a dict (a path with a parameter is matched by the route's
own compiled pattern), makes the same :class:`~starlette.requests.Request` Starlette would and awaits
the same endpoint; its answer is sent as Starlette sends it.

Only GET requests for the given routes come this way; any other method (HEAD, a POST to a read: 405),
path (a trailing slash: redirected), scope type, or an app mounted under a prefix (``root_path``) goes
to Starlette unchanged. The security layer (:class:`fsdf.web.security.Guard`) stands in front of this
one, so every request passes it whichever way it is answered. An exception the endpoint does not turn
into an answer (a bug) reaches the server, which answers 500 and logs it, as Starlette's own layer does.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class ReadRoutes:
    """Answers GET on ``routes`` (Starlette routes whose endpoints are coroutines) itself; the rest goes to ``app``.

    ``app`` is the Starlette app that also holds these routes (so a HEAD or a mounted use still finds
    them) and is what ``request.app`` names, as under Starlette's router.
    """

    def __init__(self, app: ASGIApp, routes: list[Route]) -> None:
        self.app = app
        self._exact: dict[str, Endpoint] = {}
        self._patterns: list[Route] = []
        for route in routes:
            if route.param_convertors:
                self._patterns.append(route)
            else:
                self._exact[route.path] = route.endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] != 'http' or scope['method'] != 'GET' or scope.get('root_path'):
            await self.app(scope, receive, send)
            return
        path = scope['path']
        endpoint = self._exact.get(path)
        params: dict[str, Any] = {}
        if endpoint is None:
            for route in self._patterns:
                match = route.path_regex.match(path)
                if match:
                    endpoint = route.endpoint
                    params = {key: route.param_convertors[key].convert(value)
                              for key, value in match.groupdict().items()}
                    break
            else:
                await self.app(scope, receive, send)
                return
        scope['app'] = self.app  # what Starlette sets: request.app, its state
        scope['path_params'] = params
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)
