"""RabbitMQ for the tests: Debian's rabbitmq-server as the rabbitmq user, with its own epmd, all on loopback.

Everything (config, mnesia, logs, Erlang cookie) lives in one folder; ``restart()`` keeps it, so
durable queues and persistent messages survive as they would on a real restart.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from servers._server_process import (SERVERS_DIR, ServerUnavailable, pick_port, start_process, stop_process,
                                     wait_until_accepting)

RABBITMQ_BIN = Path('/usr/lib/rabbitmq/bin/rabbitmq-server')
BOOT_TIMEOUT = 60.0


class RabbitMQServer:
    """One RabbitMQ node plus its epmd, started and stopped by pid."""

    def __init__(self, port: int = 15673) -> None:
        self.port = pick_port(int(os.environ.get('RABBITMQ_PORT', port)))
        self.dist_port = pick_port(int(os.environ.get('RABBITMQ_DIST_PORT', 25673)))
        self.epmd_port = pick_port(int(os.environ.get('RABBITMQ_EPMD_PORT', 14369)))
        self.folder = SERVERS_DIR / f'rabbitmq-{self.port}'
        self.node = f'fsdf{self.port}@localhost'
        self._broker: Optional[subprocess.Popen] = None
        self._epmd: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """The AMQP URL of this node."""
        return f'amqp://guest:guest@127.0.0.1:{self.port}/'

    def _env(self) -> dict[str, str]:
        erl_args = '-kernel inet_dist_use_interface {127,0,0,1}'
        folder = str(self.folder)
        return {
            'HOME': folder, 'RABBITMQ_NODENAME': self.node, 'RABBITMQ_NODE_IP_ADDRESS': '127.0.0.1',
            'RABBITMQ_NODE_PORT': str(self.port), 'RABBITMQ_DIST_PORT': str(self.dist_port),
            'ERL_EPMD_ADDRESS': '127.0.0.1', 'ERL_EPMD_PORT': str(self.epmd_port),
            'RABBITMQ_CONFIG_FILE': f'{folder}/rabbitmq.conf',
            'RABBITMQ_ENABLED_PLUGINS_FILE': f'{folder}/enabled_plugins',
            'RABBITMQ_MNESIA_BASE': f'{folder}/mnesia', 'RABBITMQ_LOG_BASE': f'{folder}/log',
            'RABBITMQ_PID_FILE': f'{folder}/rabbitmq.pid', 'RABBITMQ_CONF_ENV_FILE': f'{folder}/rabbitmq-env.conf',
            'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS': erl_args, 'RABBITMQ_CTL_ERL_ARGS': erl_args,
        }

    def _as_rabbitmq(self, argv: list[str]) -> list[str]:
        return ['setpriv', '--reuid=rabbitmq', '--regid=rabbitmq', '--init-groups', *argv]

    def start(self) -> 'RabbitMQServer':
        """Wipe the folder, start epmd and the node, and wait until AMQP accepts connections."""
        if not RABBITMQ_BIN.exists():
            raise ServerUnavailable('rabbitmq-server is not installed (run tests/servers/install.sh)')
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / 'log').mkdir(parents=True)
        (self.folder / 'rabbitmq.conf').write_text('loopback_users.guest = true\n')
        (self.folder / 'enabled_plugins').write_text('[].\n')
        (self.folder / 'rabbitmq-env.conf').write_text('')
        subprocess.run(['chown', '-R', 'rabbitmq:rabbitmq', str(self.folder)], check=True)
        self._epmd = start_process(self._as_rabbitmq(['epmd', '-address', '127.0.0.1', '-port', str(self.epmd_port)]),
                                   self.folder / 'epmd.log', self._env())
        try:
            wait_until_accepting(self._epmd, self.epmd_port, 10, self.folder / 'epmd.log')
            self.start_node()
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self) -> None:
        """Start the node alone (epmd already runs) and wait until it accepts AMQP connections."""
        log = self.folder / 'server.log'
        self._broker = start_process(self._as_rabbitmq([str(RABBITMQ_BIN)]), log, self._env())
        wait_until_accepting(self._broker, self.port, BOOT_TIMEOUT, log)

    def stop_node(self) -> None:
        """Stop the node gracefully (epmd keeps running)."""
        stop_process(self._broker, timeout=30)
        self._broker = None

    def restart(self) -> None:
        """Stop the node and start it again on the same data."""
        self.stop_node()
        self.start_node()

    def stop(self) -> None:
        """Stop the node, then epmd."""
        self.stop_node()
        stop_process(self._epmd)
        self._epmd = None
