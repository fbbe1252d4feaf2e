"""Many processes consuming one task, each with the task's own concurrency (processes x threads).

Children are started with ``spawn`` (safe everywhere, no forked locks or connections); each
re-imports the task's module and consumes. SIGINT/SIGTERM to the parent stop the children
gracefully; a child that dies is reported and, if asked, restarted; children whose parent is
gone stop on their own, so no orphans are left consuming.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsdf.task import TaskFunction

logger = logging.getLogger('fsdf.multiprocess')
_PARENT_CHECK_SECONDS = 1.0


def run_consumer_with_multi_process(task_fun: 'TaskFunction', process_num: int, restart: bool = False) -> None:
    """Consume ``task_fun`` with ``process_num`` processes; blocks until they exit after SIGINT/SIGTERM."""
    if process_num < 1:
        raise ValueError(f'process_num must be >= 1, got {process_num}')
    context = multiprocessing.get_context('spawn')
    stopping = threading.Event()

    def start_child(number: int) -> Any:
        child = context.Process(target=_child_main, args=(task_fun.function.__module__, task_fun.function.__qualname__,
                                                          os.getpid()),
                                name=f'fsdf-{task_fun.queue_name}-{number}', daemon=False)
        child.start()
        return child

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    children = [start_child(number) for number in range(process_num)]
    logger.info('started %d consumer processes for %r: %s', process_num, task_fun.queue_name,
                [child.pid for child in children])
    reported: set[int] = set()  # pids whose exit was logged: without restart a dead child stays in the list
    try:
        while not stopping.wait(0.5):
            for index, child in enumerate(children):
                if child.exitcode is None or child.pid in reported:
                    continue
                reported.add(child.pid)
                logger.error('consumer process %s of %r exited with code %s%s', child.pid, task_fun.queue_name,
                             child.exitcode, '; restarting it' if restart else '')
                if restart:
                    children[index] = start_child(index)
            if not restart and all(child.exitcode is not None for child in children):
                return
    finally:
        for child in children:
            if child.exitcode is None:
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _child_main(module_name: str, qualname: str, parent_pid: int) -> None:
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    task_fun = module
    for part in qualname.split('.'):
        task_fun = getattr(task_fun, part)
    threading.Thread(target=_stop_when_orphaned, args=(parent_pid,), name='fsdf-parent-watch', daemon=True).start()
    task_fun.consume()
    try:
        task_fun.consumer.wait()  # ends once a signal has stopped the consumer gracefully
    except (KeyboardInterrupt, SystemExit):  # raised by fsdf's handler after the graceful stop
        pass


def _stop_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_CHECK_SECONDS)
    logger.warning('parent process %s is gone; stopping', parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)
