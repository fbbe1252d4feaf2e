"""NATS for the tests: Debian's nats-server with JetStream on a loopback port, stopped by pid.

JetStream keeps its streams in files under the server's folder (``-sd``), so ``restart()`` brings
the same streams, consumers and messages back, as an operator's restart does. No monitoring port,
no cluster port: the client port on 127.0.0.1 is the only listener.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Optional

from servers._server_process import (SERVERS_DIR, ServerUnavailable, pick_port, start_process, stop_process,
                                     wait_until_accepting)

NATS_BIN = shutil.which('nats-server') or '/usr/sbin/nats-server'


class NatsServer:
    """One nats-server process with JetStream on file storage; ``url`` is its client URL."""

    def __init__(self, port: int = 14222) -> None:
        self.port = pick_port(int(os.environ.get('NATS_PORT', port)))
        self.folder = SERVERS_DIR / f'nats-{self.port}'
        self._process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """The NATS URL of this server."""
        return f'nats://127.0.0.1:{self.port}'

    def start(self) -> 'NatsServer':
        """Start on an empty store and wait until it accepts connections."""
        if not os.path.exists(NATS_BIN):
            raise ServerUnavailable('nats-server is not installed (run tests/servers/install.sh)')
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.start_process()
        return self

    def start_process(self) -> None:
        """Start nats-server on the folder's JetStream store and wait until it accepts connections."""
        log = self.folder / 'server.log'
        self._process = start_process([NATS_BIN, '-a', '127.0.0.1', '-p', str(self.port), '-js',
                                       '-sd', str(self.folder / 'jetstream')], log)
        wait_until_accepting(self._process, self.port, 15, log)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server, stay down ``down_seconds``, and start it again on the same store."""
        stop_process(self._process)
        time.sleep(down_seconds)  # the outage itself is what is being simulated
        self.start_process()

    def stop(self) -> None:
        """Stop the server by its pid and remove its folder."""
        stop_process(self._process)
        self._process = None
        shutil.rmtree(self.folder, ignore_errors=True)
