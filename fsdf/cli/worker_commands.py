"""``fsdf consume module:function`` (a worker started from the shell) and ``fsdf init`` (the config file).

``consume`` imports the module the way ``python -c 'import module'`` run in the current directory
would (the current directory first on the path), takes the task function (made by ``@task_deco``)
and consumes until SIGINT/SIGTERM, which stop it gracefully (fsdf's shutdown handler: running
calls finish, a second signal exits at once). ``--processes N`` consumes with N processes
(``multi_process_consume``), each with the task's own concurrency.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from fsdf.cli.common import NOT_FOUND, OK, REFUSED, USAGE, CliError


def add_commands(commands: Any) -> None:
    """Register this group's subcommands."""
    consume = commands.add_parser('consume', help='consume a task from the shell until Ctrl-C or SIGTERM')
    consume.add_argument('target', metavar='module:function',
                         help='the task function made by @task_deco, e.g. tasks:add or app.jobs:send_mail')
    consume.add_argument('--processes', type=int, default=1, help='consuming processes (default 1: this one)')
    consume.set_defaults(handler=cmd_consume)
    init = commands.add_parser('init', help='write the config template distributed_frame_config.py here')
    init.add_argument('--force', action='store_true', help='overwrite a config file that was edited')
    init.set_defaults(handler=cmd_init)


def load_task(target: str) -> Any:
    """The TaskFunction named ``module:function`` (dotted attribute paths allowed after the colon)."""
    from fsdf.task import TaskFunction
    module_name, sep, attribute = target.partition(':')
    if not sep or not module_name or not attribute:
        raise CliError(USAGE, f'{target!r} is not module:function (e.g. tasks:add)')
    if '' not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the console script's path starts at its bin folder, not here
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):  # the module itself, not something it imports
            raise CliError(NOT_FOUND, f'no module {module_name!r} (looked in {os.getcwd()} and sys.path)') from None
        raise
    for part in attribute.split('.'):
        if not hasattr(found, part):
            raise CliError(NOT_FOUND, f'module {module_name!r} has no {attribute!r}')
        found = getattr(found, part)
    if not isinstance(found, TaskFunction):
        raise CliError(USAGE, f'{target} is a {type(found).__name__}, not a task: decorate it with @task_deco')
    return found


def cmd_consume(args: argparse.Namespace) -> int:
    """``fsdf consume module:function [--processes N]``: blocks until stopped by a signal."""
    if args.processes < 1:
        raise CliError(USAGE, f'--processes must be at least 1, got {args.processes}')
    task = load_task(args.target)
    print(f'fsdf: consuming {task.queue_name!r} on {task.broker_kind.name} with {args.processes} '
          f'process{"es" if args.processes > 1 else ""}; Ctrl-C or SIGTERM stops', file=sys.stderr, flush=True)
    if args.processes > 1:
        task.multi_process_consume(args.processes)
        return OK
    task.consume()
    try:
        task.consumer.wait()  # ends once a signal has stopped the consumer gracefully
    except (KeyboardInterrupt, SystemExit):  # fsdf's handler raises one of these after the graceful stop
        pass
    return OK


def cmd_init(args: argparse.Namespace) -> int:
    """``fsdf init [--force]``: the template into the current directory.

    ``import fsdf`` already writes the template where none is found (the seed's behaviour), so a file
    equal to the template is not "someone's config": it is left as it is and init succeeds. A file
    that differs is refused unless ``--force``.
    """
    from fsdf.config import _TEMPLATE, CONFIG_FILE_NAME
    target = Path(os.getcwd()) / CONFIG_FILE_NAME
    if target.exists() and target.read_bytes() == _TEMPLATE.read_bytes():
        print(f'{target} is the template already; edit it to point at your brokers')
        return OK
    if target.exists() and not args.force:
        raise CliError(REFUSED, f'{target} exists and differs from the template; --force overwrites it')
    shutil.copyfile(_TEMPLATE, target)
    print(f'wrote {target}; edit it to point at your brokers')
    return OK
