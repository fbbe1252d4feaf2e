"""The ``fsdf`` command: see what ran and steer queues from a shell (``fsdf --help``).

Built on argparse, from the standard library: fsdf's core installs with two packages, and a
command line of a dozen subcommands needs nothing argparse lacks (subcommands, typo suggestions
with usage, help). Each command group is a module with ``add_commands(subparsers)``; a command is a
function ``(args) -> exit code`` set as the parser's ``handler``. Reads read the run store through
:mod:`fsdf.records.queries` (the dashboard's functions too). Exit codes: :mod:`fsdf.cli.common`.
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import NoReturn, Optional, Sequence

from fsdf.cli import queue_commands, run_commands, worker_commands
from fsdf.cli.common import UNREACHABLE, CliError, describe_unreachable, unreachable_errors

EPILOG = """exit codes: 0 ok, 1 not found, 2 usage error, 3 store or broker unreachable, 4 refused
(a purge not confirmed, an existing file, a queue only its own process can reach).
The run store is RESULT_STORE_URL (default: sqlite in PERSIST_QUEUE_PATH), read from
distributed_frame_config.py or FSDF_RESULT_STORE_URL."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser, adding "did you mean" to a mistyped command's message (Python 3.14 has it built in)."""

    def error(self, message: str) -> 'NoReturn':
        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:
            choices = re.findall(r"'([^']*)'", match.group(2))
            close = difflib.get_close_matches(match.group(1), choices, n=1)
            if close:
                message += f"; did you mean '{close[0]}'?"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subparser per command."""
    parser = _Parser(
        prog='fsdf', description='See what ran and steer queues: run records, statistics, queues, consumers.',
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from fsdf import __version__
    parser.add_argument('--version', action='version', version=f'fsdf {__version__}')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for group in (queue_commands, run_commands, worker_commands):
        group.add_commands(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; its exit code (argparse exits with 2 itself on a usage error)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except CliError as exc:
        print(f'fsdf {args.command}: {exc.message}', file=sys.stderr)
        return exc.code
    except unreachable_errors() as exc:
        print(f'fsdf {args.command}: {describe_unreachable(exc, "the run store or a broker")}', file=sys.stderr)
        return UNREACHABLE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130  # the shell's code for a command stopped by Ctrl-C
