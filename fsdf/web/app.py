"""The dashboard's ASGI app: the list of routes, read top to bottom, and how each answers.

Reads are thin functions in :mod:`fsdf.web.api`, actions in :mod:`fsdf.web.actions`, both over
:mod:`fsdf.records.queries` (what the ``fsdf`` command calls). Pages are plain HTML and JavaScript
files in ``static/``; every page fetches its JSON twin under ``/api/``. Answers: 400 with
``{"error": ...}`` for bad input, 404 for an unknown queue or task, 503 when a broker cannot be
reached for an action; :class:`fsdf.web.security.Guard` answers 401/403/415 before any route runs.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fsdf.records.store import ReadTooLong, RunStore, quick_reads
from fsdf.secrets import redact
from fsdf.web import actions, api, metrics
from fsdf.web.encode import JSONResponse
from fsdf.web.params import BadRequest
from fsdf.web.reads import ReadRoutes
from fsdf.web.security import Guard

STATIC = Path(__file__).parent / 'static'
PAGES = ('overview', 'queues', 'queue', 'runs', 'run', 'tree', 'consumers', 'dlq')
READ_THREADS = 8
"""Threads that run read routes at once. The store reads through 4 connections on a few cores; more threads
only queue behind them, each adding a stack and a malloc arena to the resident memory."""
INLINE_SECONDS = 0.002
"""CPU seconds a quick read may spend on the event loop before it is stopped and made again in a thread."""
logger = logging.getLogger('fsdf.web')


def _read(fn: Callable[[Request], Any], quick: bool = False) -> Callable[[Request], Any]:
    """A read route: ``fn`` and the JSON encoding run in the app's read threads (or, quick, on the loop);
    bad input 400, unknown 404.

    ``quick``: ``fn`` reads only the store (no broker, no network). With a store that stops slow reads
    (SQLite) it is tried first on the event loop, for at most INLINE_SECONDS of CPU: most reads here take well
    under a millisecond, and a hand-off to a thread and back (GIL switches between 8 threads at every
    step of SQLite) cost more CPU than the read itself. A read that runs late or finds every
    connection lent is stopped and made again in a thread; a keyword scan does not stall the loop.
    """
    def answer(request: Request) -> Response:
        try:
            return JSONResponse(fn(request))
        except BadRequest as exc:
            return JSONResponse({'error': str(exc)}, 400)
        except LookupError as exc:
            return JSONResponse({'error': str(exc)}, 404)

    async def endpoint(request: Request) -> Response:
        if quick and _stops_slow_reads(request):
            try:
                with quick_reads(INLINE_SECONDS):
                    return answer(request)
            except ReadTooLong:
                pass
        return await asyncio.get_running_loop().run_in_executor(request.app.state.readers, answer, request)
    endpoint.__name__ = fn.__name__
    return endpoint


def _stops_slow_reads(request: Request) -> bool:
    """Whether the request's store honours quick_reads; False when no store can be opened (the read says why)."""
    try:
        return api.store_of(request).stops_slow_reads
    except Exception:  # a bad RESULT_STORE_URL: the read, made as before in a thread, answers with the reason
        return False


def _act(fn: Callable[[Request, dict[str, Any]], Any]) -> Callable[[Request], Any]:
    """An action route: the JSON body read here, the action run in the thread pool."""
    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        try:
            body = (await request.json()) if raw else {}
        except ValueError:
            return JSONResponse({'error': 'the body is not JSON'}, 400)
        if not isinstance(body, dict):
            return JSONResponse({'error': 'the body is a JSON object'}, 400)
        try:
            return JSONResponse(await run_in_threadpool(fn, request, body))
        except BadRequest as exc:
            return JSONResponse({'error': str(exc)}, 400)
        except LookupError as exc:
            return JSONResponse({'error': str(exc)}, 404)
        except Exception as exc:  # a broker away or refusing: say so, with no secret, and log it
            logger.warning('action %s failed: %s', request.url.path, redact(exc))
            return JSONResponse({'error': f'the action failed: {redact(exc)}'}, 503)
    endpoint.__name__ = fn.__name__
    return endpoint


def _name(request: Request) -> str:
    return request.path_params['name']


def _store(request: Request) -> Optional[RunStore]:
    return request.app.state.store


ACTIONS = [
    Route('/api/queues/{name}/pause', _act(lambda r, b: actions.pause(_name(r), _store(r))), methods=['POST']),
    Route('/api/queues/{name}/resume', _act(lambda r, b: actions.resume(_name(r), _store(r))), methods=['POST']),
    Route('/api/queues/{name}/purge', _act(lambda r, b: actions.purge(_name(r), b, _store(r))), methods=['POST']),
    Route('/api/dlq/{name}/redrive', _act(lambda r, b: actions.dlq_redrive(_name(r), b, _store(r))),
          methods=['POST']),
    Route('/api/dlq/{name}/delete', _act(lambda r, b: actions.dlq_delete(_name(r), b, _store(r))), methods=['POST']),
    Route('/api/runs/{task_id}/republish',
          _act(lambda r, b: actions.republish(r.path_params['task_id'], _store(r))), methods=['POST']),
]

JSON_READS = [
    Route('/api/config', _read(lambda r: {'read_only': r.app.state.read_only,
                                          'token_required': r.app.state.token_required}, quick=True)),
    Route('/api/overview', _read(api.overview, quick=True)),
    Route('/api/queues', _read(api.queues)),
    Route('/api/queue/{name}', _read(api.queue)),
    Route('/api/runs', _read(api.runs, quick=True)),
    Route('/api/runs/{task_id}', _read(api.run, quick=True)),
    Route('/api/runs/{task_id}/children', _read(api.children, quick=True)),
    Route('/api/tree/{task_id}', _read(api.tree, quick=True)),
    Route('/api/consumers', _read(api.consumers, quick=True)),
    Route('/api/dlq/{name}', _read(lambda r: actions.dlq_list(_name(r), _store(r)))),
    Route('/api/stats/{queue}', _read(api.stats, quick=True)),
]
"""The JSON read routes: answered by :class:`fsdf.web.reads.ReadRoutes` for GET, by Starlette otherwise."""

READS = JSON_READS + [
    Route('/healthz', lambda r: JSONResponse({'ok': True})),
    Route('/metrics', lambda r: PlainTextResponse(metrics.render(_store(r)),
                                                  media_type='text/plain; version=0.0.4')),
]


def _page(name: str) -> Route:
    path = '/' if name == 'overview' else f'/{name}'
    return Route(path, lambda request: FileResponse(STATIC / f'{name}.html'), name=f'page_{name}')


def create_app(token: Optional[str] = None, read_only: bool = False, store: Optional[RunStore] = None) -> Guard:
    """The dashboard as an ASGI app (mountable in another Starlette or FastAPI app).

    ``token``: needed by every route but /healthz and the assets (see :mod:`fsdf.web.security`);
    None: the app answers only requests addressed to localhost. ``read_only``: every action is
    refused (403) and hidden. ``store``: the run store to read (None: the one at RESULT_STORE_URL).
    """
    routes = READS + ([] if read_only else ACTIONS) + [_page(name) for name in PAGES] + [
        Mount('/static', StaticFiles(directory=STATIC), name='static')]
    app = Starlette(routes=routes)
    # Its own pool, not Starlette's (anyio's): a hand-off through a C SimpleQueue costs a third of anyio's
    # Condition-based queue and cancel scope, about 10 % of the dashboard's CPU a request under load.
    app.state.readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix='fsdf-web-read')
    app.state.store = store
    app.state.read_only = read_only
    app.state.token_required = bool(token)
    return Guard(ReadRoutes(app, JSON_READS), token, read_only)
