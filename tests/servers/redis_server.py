"""Redis for the tests: Debian's redis-server on a loopback port with an append-only file, stopped by pid.

``restart()`` stops it (SIGTERM: Redis flushes its append-only file) and starts it again on the
same port and data, as an operator's restart does; clients see their connections drop meanwhile.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional
from urllib.parse import quote

from servers._server_process import (SERVERS_DIR, ServerUnavailable, pick_port, start_process, stop_process,
                                     wait_until_accepting)

REDIS_BIN = shutil.which('redis-server') or '/usr/bin/redis-server'


class RedisServer:
    """One redis-server process; with ``password`` it requires it (``requirepass``). ``also_bind``: more
    local addresses to listen on (a test's own veth address; protected mode is then off, as clients
    come from that test network rather than loopback)."""

    def __init__(self, port: int = 16379, password: Optional[str] = None, also_bind: tuple[str, ...] = ()) -> None:
        self.port = pick_port(int(os.environ.get('REDIS_PORT', port)))
        self.also_bind = also_bind
        self.folder = SERVERS_DIR / f'redis-{self.port}'
        self.password = password
        self._process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """The Redis URL of this server (database 0)."""
        auth = f':{quote(self.password, safe="")}@' if self.password else ''
        return f'redis://{auth}127.0.0.1:{self.port}/0'

    def start(self) -> 'RedisServer':
        """Start on an empty folder and wait until it accepts connections."""
        if not os.path.exists(REDIS_BIN):
            raise ServerUnavailable('redis-server is not installed (run tests/servers/install.sh)')
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.start_process()
        return self

    def start_process(self) -> None:
        """Start redis-server alone and wait until it accepts connections."""
        log = self.folder / 'server.log'
        self._process = start_process(
            [REDIS_BIN, '--bind', '127.0.0.1', *self.also_bind, '--port', str(self.port), '--save', '',
             '--appendonly', 'yes', '--appendfsync', 'everysec', '--daemonize', 'no', '--dir', str(self.folder),
             '--protected-mode', 'no' if self.also_bind else 'yes',
             *(['--requirepass', self.password] if self.password else [])], log)
        wait_until_accepting(self._process, self.port, 15, log)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server, stay down ``down_seconds``, and start it again on the same port."""
        import time
        stop_process(self._process)
        time.sleep(down_seconds)  # the outage itself is what is being simulated
        self.start_process()

    def stop(self) -> None:
        """Stop the server by its pid."""
        stop_process(self._process)
        self._process = None
