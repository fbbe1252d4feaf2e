"""``task_deco`` and the task function it returns: still a plain function, plus push/consume/drain."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Unpack

from fsdf.config import settings
from fsdf.enums import BrokerEnum
from fsdf.message import CallSignature
from fsdf.names import check_queue_name
from fsdf.options import TaskOptions, TaskOptionsKwargs, build_options
from fsdf.publisher import Publisher
from fsdf.result import AsyncResult

if TYPE_CHECKING:
    from fsdf.consumer import Consumer
    from fsdf.controls.overrides import MessageOverrides


class TaskFunction:
    """A function bound to a queue. Calling it runs it here; ``push`` publishes the call instead.

    Publishing needs only the function's signature and a :class:`Publisher`; the consumer (a pool,
    middleware, their clients) is built by ``consume``, ``drain``, ``multi_process_consume`` and
    ``stop`` alone, so a process that only publishes never builds one.
    """

    def __init__(self, fn: Callable[..., Any], queue_name: str, options: TaskOptions) -> None:
        functools.update_wrapper(self, fn)
        self.function = fn
        self.queue_name = queue_name
        self.options = options
        self.signature = CallSignature(fn, options.is_consuming_function_use_multi_params)
        self._publisher: Optional[Publisher] = None
        self._consumer: Optional['Consumer'] = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f'<fsdf task {self.function.__qualname__} on queue {self.queue_name!r}>'

    @property
    def broker_kind(self) -> BrokerEnum:
        """The task's broker kind: its ``broker_kind`` option, else the config's ``DEFAULT_BROKER_KIND``."""
        kind = self.options.broker_kind
        return BrokerEnum(kind if kind is not None else settings.DEFAULT_BROKER_KIND)

    @property
    def consumer(self) -> 'Consumer':
        """The consumer of this task's queue (created on first use; connects to the broker)."""
        if self._consumer is None:
            from fsdf.consumer import Consumer  # only consuming needs the worker machinery
            self._consumer = Consumer(self.queue_name, self.function, self.options, self.signature)
        return self._consumer

    @property
    def publisher(self) -> Publisher:
        """The publisher of this task's queue; it checks calls against the function's signature."""
        if self._publisher is None:
            self._publisher = Publisher(self.queue_name, self.broker_kind, self.signature, self.options.middleware)
        return self._publisher

    def push(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Publish the call ``f(*args, **kwargs)``; TypeError here if it does not fit the signature."""
        return (self._publisher or self.publisher).publish_bound(self.signature.arguments_of(args, kwargs))

    def pub(self, msg: dict[str, Any], *, task_id: Optional[str] = None, countdown: Optional[float] = None,
            eta: Any = None, priority: Optional[int] = None, **overrides: Unpack[MessageOverrides]) -> AsyncResult:
        """Publish a call given as a dict of keyword arguments; ``overrides`` set options for this message only."""
        return self.publisher.publish(msg, task_id=task_id, countdown=countdown, eta=eta, priority=priority,
                                      **overrides)

    async def aio_push(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``push`` for async code: publishes without blocking the event loop; ``await`` the result for its value."""
        import asyncio  # loaded already (a coroutine is running); kept off fsdf's import
        return await asyncio.to_thread(self.push, *args, **kwargs)

    async def aio_pub(self, msg: dict[str, Any], **options: Any) -> AsyncResult:
        """``pub`` for async code: publishes without blocking the event loop (same keywords as ``pub``)."""
        import asyncio
        return await asyncio.to_thread(self.pub, msg, **options)

    def clear_filter(self) -> None:
        """Forget which calls ran successfully, so ``do_task_filtering`` lets them run again."""
        from fsdf.controls.filtering import filter_store  # only tasks that filter need it
        filter_store(self.broker_kind, self.queue_name).clear()

    def push_many(self, calls: Iterable[Any], *, countdown: Optional[float] = None,
                  eta: Any = None) -> list[AsyncResult]:
        """Publish many calls in batches; each item is a tuple of positional arguments (or one argument)."""
        return self.publisher.publish_bound_many(self.signature.arguments_of_many(calls), countdown=countdown, eta=eta)

    def pub_many(self, msgs: Iterable[dict[str, Any]], *, countdown: Optional[float] = None,
                 eta: Any = None) -> list[AsyncResult]:
        """Publish many calls given as keyword-argument dicts, in batches."""
        return self.publisher.publish_many(msgs, countdown=countdown, eta=eta)

    def consume(self) -> None:
        """Start consuming in background threads; returns at once."""
        self.consumer.start_consuming_message()

    def multi_process_consume(self, process_num: int, restart: bool = False) -> None:
        """Consume with ``process_num`` processes, each with this task's concurrency; blocks until stopped."""
        from fsdf.multiprocess import run_consumer_with_multi_process
        run_consumer_with_multi_process(self, process_num, restart)

    def drain(self, timeout: Optional[float] = None) -> int:
        """Consume until the queue is empty and every taken message is settled; how many were settled."""
        return self.consumer.drain(timeout)

    def stop(self, grace: Optional[float] = None) -> None:
        """Stop consuming: stop fetching, give back what has not started, wait for running calls."""
        if self._consumer is not None:  # never consumed: nothing to stop, and nothing to build
            self._consumer.stop(grace)

    def clear(self) -> None:
        """Remove every waiting message of the queue."""
        self.publisher.clear()

    def get_message_count(self) -> int:
        """Messages waiting in the queue."""
        return self.publisher.get_message_count()


def task_deco(queue_name: str, **options: Unpack[TaskOptionsKwargs]) -> Callable[[Callable[..., Any]], TaskFunction]:
    """Bind a function to a queue: ``@task_deco('q', qps=5, broker_kind=BrokerEnum.PERSISTQUEUE)``."""
    task_options = build_options(**options)
    check_queue_name(queue_name, task_options.broker_kind if task_options.broker_kind is not None
                     else settings.DEFAULT_BROKER_KIND)  # a bad name fails here, not at the first push

    def decorate(fn: Callable[..., Any]) -> TaskFunction:
        return TaskFunction(fn, queue_name, task_options)

    return decorate


def get_consumer(queue_name: str, consuming_function: Callable[..., Any],
                 **options: Unpack[TaskOptionsKwargs]) -> 'Consumer':
    """A consumer without a decorator: ``get_consumer('q', consuming_function=f, qps=2)``."""
    from fsdf.consumer import Consumer
    return Consumer(queue_name, consuming_function, build_options(**options))


def get_publisher(queue_name: str, broker_kind: Optional[BrokerEnum] = None) -> Publisher:
    """A publisher alone, for code that has no function (another service, a bridge from another language)."""
    return Publisher(queue_name, broker_kind)
