"""Graceful stop on SIGINT/SIGTERM: every running consumer stops fetching, gives back what has
not started and waits (bounded) for running calls; a second signal exits at once.

The running consumers are tracked by the default :class:`fsdf.runtime.Runtime`; only the signal
handlers, which belong to the process, are installed here."""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from fsdf.concurrency.green_pool import green_spawn
from fsdf.runtime import Stoppable, default_runtime

_lock = threading.Lock()
_installed = False


def register(consumer: Stoppable) -> None:
    """Track a started consumer, and install the signal handlers once (from the main thread only)."""
    global _installed
    default_runtime().register(consumer)
    with _lock:
        if _installed:
            return
        try:  # (eventlet's patched threading says its main thread is not threading.main_thread())
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                    signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread: only it can install signal handlers
            return
        _installed = True


def unregister(consumer: Stoppable) -> None:
    """Forget a stopped consumer."""
    default_runtime().unregister(consumer)


def stop_all(grace: float | None = None) -> None:
    """Stop every running consumer of this process, in parallel."""
    default_runtime().stop_consumers(grace)


def _on_signal(signum: int, frame: Any) -> None:
    global _installed
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _installed = False
    print(f'fsdf: got {signal.Signals(signum).name}, stopping consumers (send it again to exit at once)',
          file=sys.stderr)
    spawn = green_spawn()
    if spawn is not None:  # in a monkey-patched process the handler may run in the hub, which must not block
        spawn(_stop_and_exit, signum)
        return
    _stop_and_exit(signum)


def _stop_and_exit(signum: int) -> None:
    stop_all()
    if getattr(threading, '_SHUTTING_DOWN', False):
        return  # the main thread was only waiting for consumer threads, which have now ended
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)
