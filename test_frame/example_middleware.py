"""A middleware of your own: time every call, and stamp each published message with who sent it.

A middleware overrides only the hooks it needs; hooks it leaves alone cost nothing per message.
Give it to one task with ``middleware=[...]``, or to the whole process with ``fsdf.add_middleware``.
"""
from __future__ import annotations

import getpass
import time
from typing import Any

import fsdf
from fsdf import BrokerEnum, ConsumerContext, Middleware, RunOutcome, task_deco


class SlowCallLog(Middleware):
    """Logs every call slower than ``seconds``, and how many ran, when the consumer stops."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.runs = 0

    def after_settle(self, outcome: RunOutcome) -> None:
        self.runs += 1
        if outcome.duration > self.seconds:
            print(f'slow: task {outcome.task_id} took {outcome.duration:.2f} s ({outcome.status})')

    def on_stop(self, context: ConsumerContext) -> None:
        print(f'{context.queue_name}: {self.runs} runs seen')


class SentBy(Middleware):
    """Adds ``extra.sent_by`` to every message this process publishes."""

    def on_publish(self, queue_name: str, arguments: dict[str, Any], extra: dict[str, Any]) -> None:
        extra['sent_by'] = getpass.getuser()


fsdf.add_middleware(SentBy())


@task_deco('middleware_demo', broker_kind=BrokerEnum.LOCAL_PYTHON_QUEUE, middleware=[SlowCallLog(0.1)])
def nap(seconds):
    time.sleep(seconds)


if __name__ == '__main__':
    nap.push_many([0.01, 0.2, 0.01])
    nap.drain(timeout=10)
