"""MariaDB for the tests: Debian's mariadb-server with a fresh data folder on a loopback port, stopped by pid.

``mariadb-install-db`` makes the system tables in the server's folder; ``mariadbd --no-defaults``
runs as the ``mysql`` user (when the tests run as root) on 127.0.0.1 only, root without a password
on loopback, and the suite's database ``fsdf`` is created once it accepts connections. Stopping
sends SIGTERM (a normal shutdown: it ends open sessions and flushes InnoDB).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Optional

from servers._server_process import (SERVERS_DIR, ServerUnavailable, as_user, give_to, pick_port, start_process,
                                     stop_process, wait_until_accepting)

SERVER_BIN = shutil.which('mariadbd') or '/usr/sbin/mariadbd'
INSTALL_DB_BIN = shutil.which('mariadb-install-db') or '/usr/bin/mariadb-install-db'


class MariaDBServer:
    """One mariadbd process on its own data folder; ``url`` is a SQLAlchemy URL for database ``fsdf``."""

    def __init__(self, port: int = 13306) -> None:
        self.port = pick_port(int(os.environ.get('MARIADB_PORT', port)))
        self.folder = SERVERS_DIR / f'mariadb-{self.port}'
        self._process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (PyMySQL) of this server's ``fsdf`` database."""
        return f'mysql+pymysql://root@127.0.0.1:{self.port}/fsdf'

    def start(self) -> 'MariaDBServer':
        """Install an empty data folder, start the server, create database ``fsdf``."""
        if not os.path.exists(SERVER_BIN):
            raise ServerUnavailable('mariadb-server is not installed (run tests/servers/install.sh)')
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        give_to('mysql', self.folder)
        result = subprocess.run(as_user('mysql', [INSTALL_DB_BIN, '--no-defaults', f'--datadir={self.folder}/data',
                                                  '--auth-root-authentication-method=normal', '--skip-test-db']),
                                capture_output=True, text=True)
        if result.returncode:
            raise ServerUnavailable(f'mariadb-install-db failed: {result.stdout[-500:]} {result.stderr[-1000:]}')
        self.start_process()
        import pymysql
        with pymysql.connect(host='127.0.0.1', port=self.port, user='root') as connection:
            connection.cursor().execute('CREATE DATABASE IF NOT EXISTS fsdf')
        return self

    def start_process(self) -> None:
        """Start mariadbd on the data folder and wait until it accepts connections."""
        log = self.folder / 'server.log'
        log.touch()
        give_to('mysql', log)
        argv = [SERVER_BIN, '--no-defaults', f'--datadir={self.folder}/data', f'--socket={self.folder}/mysqld.sock',
                f'--pid-file={self.folder}/mysqld.pid', '--bind-address=127.0.0.1', f'--port={self.port}',
                '--skip-name-resolve', '--innodb-buffer-pool-size=64M', '--innodb-flush-log-at-trx-commit=2',
                '--max-connections=300', f'--log-error={log}']
        self._process = start_process(as_user('mysql', argv), log)
        wait_until_accepting(self._process, self.port, 60, log)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server, stay down ``down_seconds``, start it again on the same data."""
        stop_process(self._process, timeout=30)
        time.sleep(down_seconds)  # the outage itself is what is being simulated
        self.start_process()

    def stop(self) -> None:
        """Stop the server by its pid and remove its folder."""
        stop_process(self._process, timeout=30)
        self._process = None
        shutil.rmtree(self.folder, ignore_errors=True)
