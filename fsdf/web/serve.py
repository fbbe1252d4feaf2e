"""Running the dashboard: :func:`serve` (uvicorn, one process) and :func:`main` (``python -m fsdf.web``).

It serves with uvloop's event loop and httptools' HTTP parser when they are installed (the ``web``
extra brings both where they build): together they cut the dashboard's own cost of a request by
about a third against asyncio and h11, the pure-Python parser uvicorn falls back to.

Binding anything but a loopback address without a token is refused (ValueError): the dashboard
shows task arguments and can pause and purge queues. ``FSDF_WEB_TOKEN`` in the environment is read
when ``--token`` is not given, so the token need not appear in a process list.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import os
import socket
from typing import Any, Callable, Optional, Sequence

from fsdf.web.security import is_loopback

DEFAULT_PORT = 27018
"""The seed framework's dashboard port."""
TOKEN_ENV = 'FSDF_WEB_TOKEN'
READ_ONLY_ENV = 'FSDF_WEB_READ_ONLY'
"""How :func:`serve` hands the token and read-only mode to its worker processes (and ``main`` reads a token)."""
READ_THREADS = 8
"""Threads of Starlette's own pool (anyio's default is 40), which runs actions and file answers; read routes
have the app's pool (:data:`fsdf.web.app.READ_THREADS`). Each thread adds a stack and a malloc arena."""


def serve(host: str = '127.0.0.1', port: int = DEFAULT_PORT, token: Optional[str] = None,
          read_only: bool = False, log_level: str = 'warning', workers: int = 1) -> None:
    """Serve the dashboard until interrupted; ValueError for a non-loopback ``host`` without a token.

    ``workers`` > 1: that many processes (uvicorn's supervisor) share the socket, each with its own
    app; safe because no process keeps per-task state (the store is the truth). They are spawned, so
    each makes its app from the environment: the token travels as FSDF_WEB_TOKEN, read-only as
    FSDF_WEB_READ_ONLY=1 (this process's environment, which its children inherit).
    """
    import uvicorn

    from fsdf.web.app import create_app
    if not is_loopback(host) and not token:
        raise ValueError(f'refusing to serve on {host!r} without a token: anyone who reaches it could read '
                         'task arguments and act on queues; pass --token (or set FSDF_WEB_TOKEN), or bind 127.0.0.1')
    if workers < 1:
        raise ValueError(f'workers is a whole number from 1, got {workers}')
    app: Any = create_app(token=token, read_only=read_only) if workers == 1 else f'{__name__}:app_from_environment'
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            http='auto', factory=workers > 1, workers=workers)  # auto: httptools if installed
    if workers == 1:
        _run(uvicorn.Server(config))
        return
    from uvicorn.supervisors import Multiprocess
    os.environ.update({TOKEN_ENV: token or '', READ_ONLY_ENV: '1' if read_only else ''})
    Multiprocess(config, target=functools.partial(_run, uvicorn.Server(config)), sockets=[config.bind_socket()]).run()


def app_from_environment() -> Any:
    """The app a worker process serves: token and read-only mode from the environment :func:`serve` set."""
    from fsdf.web.app import create_app
    return create_app(token=os.environ.get(TOKEN_ENV) or None, read_only=os.environ.get(READ_ONLY_ENV) == '1')


def _run(server: Any, sockets: Optional[list[socket.socket]] = None) -> None:
    """Run a uvicorn server on uvloop (when installed) until it stops; ``sockets``: a worker's shared socket."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_serve(server, sockets))


def event_loop_factory() -> Optional[Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop's loop when it is installed (a speed-up, never required), else None: asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(server: Any, sockets: Optional[list[socket.socket]] = None) -> None:
    """Run a uvicorn server with the read threads capped (the cap is per event loop, so set inside it)."""
    import anyio.to_thread
    anyio.to_thread.current_default_thread_limiter().total_tokens = READ_THREADS
    await server.serve(sockets=sockets)


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m fsdf.web`` (and of ``fsdf web``)."""
    cli = argparse.ArgumentParser(prog='fsdf web', description='Serve the fsdf dashboard (queues, runs, trees).')
    cli.add_argument('--host', default='127.0.0.1', help='address to bind (default 127.0.0.1; others need --token)')
    cli.add_argument('--port', type=int, default=DEFAULT_PORT, help=f'port (default {DEFAULT_PORT})')
    cli.add_argument('--token', default=None, help='token every request needs (default: $FSDF_WEB_TOKEN)')
    cli.add_argument('--read-only', action='store_true', help='hide and refuse every action')
    cli.add_argument('--log-level', default='warning', help='uvicorn log level (default warning)')
    cli.add_argument('--workers', type=int, default=1,
                     help='processes serving the same port (default 1; each reads the store on its own)')
    return cli


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` and serve; 2 with a message when the address needs a token."""
    args = parser().parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        serve(args.host, args.port, token, args.read_only, args.log_level, args.workers)
    except ValueError as exc:
        parser().exit(2, f'fsdf web: {exc}\n')
    return 0
