"""The web dashboard (``pip install "fsdf[web]"``): queues, consumers, runs, task trees and dead letters.

``python -m fsdf.web [--host H] [--port P] [--token T] [--read-only] [--workers N]`` serves it; :func:`create_app`
gives the ASGI app to mount elsewhere. Layout: ``app.py`` (the routes), ``reads.py`` (GET on them without
Starlette's router), ``api.py`` (reads),
``actions.py`` (pause, purge, re-drive, re-publish), ``security.py`` (token, cross-site guard,
read-only), ``metrics.py`` (Prometheus), ``params.py`` (query strings, 400s), ``static/`` (pages).
The process keeps no per-task state: every answer is read from the run store and the brokers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

from fsdf._optional import import_optional

if TYPE_CHECKING:
    from fsdf.records.store import RunStore


def create_app(token: Optional[str] = None, read_only: bool = False, store: 'Optional[RunStore]' = None) -> Any:
    """The dashboard's ASGI app; see :func:`fsdf.web.app.create_app`."""
    app = import_optional('fsdf.web.app', 'web', 'the dashboard needs starlette')
    return app.create_app(token=token, read_only=read_only, store=store)


def serve(host: str = '127.0.0.1', port: int = 27018, token: Optional[str] = None, read_only: bool = False,
          workers: int = 1) -> None:
    """Serve the dashboard; see :func:`fsdf.web.serve.serve`."""
    import_optional('uvicorn', 'web', 'the dashboard needs uvicorn')
    from fsdf.web.serve import serve as run
    run(host, port, token, read_only, workers=workers)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fsdf.web``; see :func:`fsdf.web.serve.main`."""
    import_optional('uvicorn', 'web', 'the dashboard needs uvicorn')
    from fsdf.web.serve import main as run
    return run(argv)


__all__ = ['create_app', 'main', 'serve']
