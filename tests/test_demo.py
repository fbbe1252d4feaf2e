"""The README's first command: the demo publishes, consumes in another process and reports."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_publishes_consumes_and_reports(tmp_path) -> None:
    env = {**os.environ, 'FSDF_PERSIST_QUEUE_PATH': str(tmp_path), 'PYTHONPATH': ROOT}
    result = subprocess.run([sys.executable, '-m', 'test_frame.demo', '--tasks', '2000'], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'done: 2,000 settled' in result.stdout
    assert 'succeeded 1,998, retried 4, failed 2, dead letters 2' in result.stdout
    assert 'first dead letter: multiply(x=999, y=2) -> ValueError: 999 is unlucky after 2 retries' in result.stdout
