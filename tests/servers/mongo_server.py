"""A MongoDB-wire server for the tests: nx-27017 (PyPI), a compatible server, since no real mongod installs here.

It is pip-installed once into its own virtualenv under the tools dir and runs on loopback with
its SQLite data in the server's folder.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Optional

from servers._server_process import (SERVERS_DIR, TOOLS_DIR, ServerUnavailable, pick_port, start_process,
                                     stop_process, wait_until_accepting)

REQUIREMENT = 'nx-27017==0.8.1'
VENV = TOOLS_DIR / 'nx-27017'


def install() -> None:
    """Create the server's virtualenv and pip-install it, once."""
    if (VENV / 'bin' / 'nx-27017').exists():
        return
    shutil.rmtree(VENV, ignore_errors=True)
    for argv in ([sys.executable, '-m', 'venv', str(VENV)], [str(VENV / 'bin' / 'pip'), 'install', '-q', REQUIREMENT]):
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode:
            shutil.rmtree(VENV, ignore_errors=True)
            raise ServerUnavailable(f'installing {REQUIREMENT} failed: {result.stderr[-1000:]}')


class MongoServer:
    """One nx-27017 server, started and stopped by pid."""

    def __init__(self, port: int = 27117) -> None:
        self.port = pick_port(int(os.environ.get('MONGO_PORT', port)))
        self.folder = SERVERS_DIR / f'mongo-{self.port}'
        self._process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """The MongoDB URL of this server."""
        return f'mongodb://127.0.0.1:{self.port}/fsdf_tests'

    def start(self) -> 'MongoServer':
        """Install if needed, start on an empty data folder, and wait until it accepts connections."""
        install()
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / 'data').mkdir(parents=True)
        self._launch()
        return self

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server, stay down ``down_seconds``, and start it again on the same port and data."""
        self.stop()
        time.sleep(down_seconds)  # the outage itself is what is being simulated
        self._launch()

    def _launch(self) -> None:
        log = self.folder / 'server.log'
        self._process = start_process(
            [str(VENV / 'bin' / 'nx-27017'), '--host', '127.0.0.1', '-p', str(self.port),
             '--data-dir', str(self.folder / 'data'), '--log-file', str(log),
             '--pid-file', str(self.folder / 'pid')], self.folder / 'stdout.log')
        wait_until_accepting(self._process, self.port, 30, log)

    def stop(self) -> None:
        """Stop the server by its pid."""
        stop_process(self._process)
        self._process = None
