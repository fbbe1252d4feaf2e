"""PostgreSQL for the tests: Debian's postgresql-15 in a fresh cluster on a loopback port, stopped by pid.

``initdb`` makes a cluster (trust authentication, loopback only) in the server's folder, owned by
and run as the ``postgres`` user when the tests run as root. ``fsync=off``: the tests need a server
that survives a restart of its process, not a power cut. Stopping sends SIGINT (PostgreSQL's fast
shutdown: it ends open sessions; SIGTERM would wait for every client to leave).
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
from typing import Optional

from servers._server_process import (SERVERS_DIR, ServerUnavailable, as_user, give_to, pick_port, start_process,
                                     stop_process, wait_until_accepting)


def _bin_dir() -> Optional[str]:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/postgres'), key=lambda p: int(p.split('/')[4]))
    return os.path.dirname(found[-1]) if found else None


class PostgresServer:
    """One postgres process on its own cluster; ``url`` is a SQLAlchemy URL for database ``postgres``."""

    def __init__(self, port: int = 15432) -> None:
        self.port = pick_port(int(os.environ.get('PG_PORT', port)))
        self.folder = SERVERS_DIR / f'postgres-{self.port}'
        self._process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (psycopg 3) of this server."""
        return f'postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres'

    def start(self) -> 'PostgresServer':
        """initdb an empty cluster, start it and wait until it accepts connections."""
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise ServerUnavailable('PostgreSQL is not installed (apt-get install postgresql)')
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        give_to('postgres', self.folder)
        result = subprocess.run(as_user('postgres', [f'{bin_dir}/initdb', '-D', str(self.folder / 'data'),
                                                     '--auth=trust', '--no-sync', '-U', 'postgres', '-E', 'UTF8']),
                                capture_output=True, text=True)
        if result.returncode:
            raise ServerUnavailable(f'initdb failed: {result.stderr[-1000:]}')
        self.start_process()
        return self

    def start_process(self) -> None:
        """Start postgres on the cluster and wait until it accepts connections."""
        log = self.folder / 'server.log'
        log.touch()
        give_to('postgres', log)
        argv = [f'{_bin_dir()}/postgres', '-D', str(self.folder / 'data'), '-p', str(self.port),
                '-c', 'listen_addresses=127.0.0.1', '-k', str(self.folder), '-c', 'fsync=off',
                '-c', 'max_connections=200', '-c', 'shared_buffers=64MB']
        self._process = start_process(as_user('postgres', argv), log)
        wait_until_accepting(self._process, self.port, 30, log)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server (fast shutdown), stay down ``down_seconds``, start it again on the same data."""
        stop_process(self._process, stop_signal=signal.SIGINT)
        time.sleep(down_seconds)  # the outage itself is what is being simulated
        self.start_process()

    def stop(self) -> None:
        """Stop the server by its pid (fast shutdown) and remove its folder."""
        stop_process(self._process, stop_signal=signal.SIGINT)
        self._process = None
        shutil.rmtree(self.folder, ignore_errors=True)
