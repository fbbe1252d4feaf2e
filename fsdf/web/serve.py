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
import os
from typing import Any, Callable, Optional, Sequence

from fsdf.web.security import is_loopback

DEFAULT_PORT = 27018
"""The seed framework's dashboard port."""
READ_THREADS = 8
"""Threads of Starlette's own pool (anyio's default is 40), which runs actions and file answers; read routes
have the app's pool (:data:`fsdf.web.app.READ_THREADS`). Each thread adds a stack and a malloc arena."""


def serve(host: str = '127.0.0.1', port: int = DEFAULT_PORT, token: Optional[str] = None,
          read_only: bool = False, log_level: str = 'warning') -> None:
    """Serve the dashboard until interrupted; ValueError for a non-loopback ``host`` without a token."""
    import uvicorn

    from fsdf.web.app import create_app
    if not is_loopback(host) and not token:
        raise ValueError(f'refusing to serve on {host!r} without a token: anyone who reaches it could read '
                         'task arguments and act on queues; pass --token (or set FSDF_WEB_TOKEN), or bind 127.0.0.1')
    config = uvicorn.Config(create_app(token=token, read_only=read_only), host=host, port=port,
                            log_level=log_level, access_log=False, http='auto')  # auto: httptools if installed
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_serve(uvicorn.Server(config)))


def event_loop_factory() -> Optional[Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop's loop when it is installed (a speed-up, never required), else None: asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(server: Any) -> None:
    """Run a uvicorn server with the read threads capped (the cap is per event loop, so set inside it)."""
    import anyio.to_thread
    anyio.to_thread.current_default_thread_limiter().total_tokens = READ_THREADS
    await server.serve()


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m fsdf.web`` (and of ``fsdf web``)."""
    cli = argparse.ArgumentParser(prog='fsdf web', description='Serve the fsdf dashboard (queues, runs, trees).')
    cli.add_argument('--host', default='127.0.0.1', help='address to bind (default 127.0.0.1; others need --token)')
    cli.add_argument('--port', type=int, default=DEFAULT_PORT, help=f'port (default {DEFAULT_PORT})')
    cli.add_argument('--token', default=None, help='token every request needs (default: $FSDF_WEB_TOKEN)')
    cli.add_argument('--read-only', action='store_true', help='hide and refuse every action')
    cli.add_argument('--log-level', default='warning', help='uvicorn log level (default warning)')
    return cli


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` and serve; 2 with a message when the address needs a token."""
    args = parser().parse_args(argv)
    token = args.token or os.environ.get('FSDF_WEB_TOKEN') or None
    try:
        serve(args.host, args.port, token, args.read_only, args.log_level)
    except ValueError as exc:
        parser().exit(2, f'fsdf web: {exc}\n')
    return 0
