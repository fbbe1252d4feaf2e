"""Settings: the config file written on first import, FSDF_* overrides, patch_frame_config, no secrets in logs."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fsdf import BrokerEnum, patch_frame_config, settings
from fsdf.config import FrameSettings, redact_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_in(cwd, code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith('FSDF_')}
    environ.update(PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, '-c', code], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=30)


def test_first_import_writes_the_config_file_once_and_reads_it(tmp_path) -> None:
    first = run_in(tmp_path, 'import fsdf')
    config = tmp_path / 'distributed_frame_config.py'
    assert first.returncode == 0 and config.exists()
    assert 'wrote its config file' in first.stderr
    config.write_text(config.read_text().replace("REDIS_HOST = '127.0.0.1'", "REDIS_HOST = 'redis.example'"))
    second = run_in(tmp_path, 'import fsdf; print(fsdf.settings.REDIS_HOST, fsdf.settings.DEFAULT_BROKER_KIND.name)')
    assert second.stdout.split() == ['redis.example', 'PERSISTQUEUE']
    assert 'wrote' not in second.stderr


def test_environment_overrides_the_file_and_can_turn_it_off(tmp_path) -> None:
    code = 'import fsdf; print(fsdf.settings.DEFAULT_BROKER_KIND.name, fsdf.settings.REDIS_PORT)'
    result = run_in(tmp_path, code, FSDF_CONFIG_FILE='0', FSDF_DEFAULT_BROKER_KIND='LOCAL_PYTHON_QUEUE',
                    FSDF_REDIS_PORT='6380')
    assert result.stdout.split() == ['LOCAL_PYTHON_QUEUE', '6380']
    assert not (tmp_path / 'distributed_frame_config.py').exists()


def test_patch_frame_config_wins_and_rejects_unknown_names() -> None:
    before = settings.REDIS_DB
    try:
        patch_frame_config(REDIS_DB=5)
        assert settings.REDIS_DB == 5
    finally:
        patch_frame_config(REDIS_DB=before)
    with pytest.raises(TypeError, match='unknown fsdf setting'):
        patch_frame_config(REDIS_PORTT=1)


def test_redis_url_from_fields_and_password_redaction() -> None:
    conf = FrameSettings(REDIS_HOST='h', REDIS_PORT=1, REDIS_DB=2, REDIS_PASSWORD='s3cret')
    assert conf.redis_url() == 'redis://:s3cret@h:1/2'
    assert redact_url(conf.redis_url()) == 'redis://:***@h:1/2'
    assert redact_url('amqp://guest:pw@host:5672/') == 'amqp://guest:***@host:5672/'
    assert FrameSettings(REDIS_URL='redis://x:9/0').redis_url() == 'redis://x:9/0'


def test_default_broker_setting_accepts_names_and_numbers() -> None:
    conf = FrameSettings()
    conf.set('DEFAULT_BROKER_KIND', '3')
    assert conf.DEFAULT_BROKER_KIND is BrokerEnum.LOCAL_PYTHON_QUEUE
    conf.set('DEFAULT_BROKER_KIND', 'REDIS')
    assert conf.DEFAULT_BROKER_KIND is BrokerEnum.REDIS
