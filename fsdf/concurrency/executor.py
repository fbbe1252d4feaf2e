"""A ``concurrent.futures.Executor`` on fsdf's own worker threads, for code that wants one (apscheduler,
``loop.run_in_executor``).

Python shuts ``concurrent.futures.ThreadPoolExecutor`` down as the main thread ends
(``threading._register_atexit``): after that every ``submit`` raises "cannot schedule new
futures after interpreter shutdown". A script that ends with ``consume()`` returns from its main
thread at once, while its consumers and schedulers are meant to keep working until stopped. This
executor runs calls on a :class:`ShrinkableThreadPool`, which no exit hook touches, so it accepts
work for as long as the process lives. Its threads are daemons: they never keep a process alive.
"""
from __future__ import annotations

from concurrent.futures import Executor, Future
from typing import Any, Callable, TypeVar

from fsdf.concurrency.thread_pool import ShrinkableThreadPool

T = TypeVar('T')


class OwnThreadExecutor(Executor):
    """Up to ``max_workers`` threads, started as calls arrive and ended after ``keep_alive`` s idle."""

    def __init__(self, max_workers: int, name: str, keep_alive: float = 30.0) -> None:
        self._pool = ShrinkableThreadPool(max_workers, keep_alive=keep_alive, name=name)
        self._shut = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> 'Future[T]':
        if self._shut:
            raise RuntimeError('cannot schedule new futures after this executor was shut down')
        future: Future[T] = Future()
        self._pool.submit(_run, future, fn, args, kwargs)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls and let the threads end once the calls already given have run."""
        self._shut = True
        self._pool.shutdown()


def _run(future: 'Future[Any]', fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # handed to whoever waits on the future, as concurrent.futures does
        future.set_exception(exc)
    else:
        future.set_result(result)
