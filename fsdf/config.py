"""Connection settings: template defaults < project config file < FSDF_* environment < patch_frame_config."""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fsdf.enums import BrokerEnum
from fsdf.secrets import redact_url  # noqa: F401  (its old home; fsdf.secrets is the one)

CONFIG_FILE_NAME = 'distributed_frame_config.py'
_TEMPLATE = Path(__file__).with_name('distributed_frame_config_template.py')


@dataclass
class FrameSettings:
    """The settings every broker and service reads; names match the config file and FSDF_* variables."""

    DEFAULT_BROKER_KIND: BrokerEnum = BrokerEnum.PERSISTQUEUE
    PERSIST_QUEUE_PATH: str = '~/.fsdf/persist_queue'
    REDIS_URL: str = ''
    REDIS_HOST: str = '127.0.0.1'
    REDIS_PORT: int = 6379
    REDIS_DB: int = 0
    REDIS_PASSWORD: str = ''
    RABBITMQ_URL: str = 'amqp://guest:guest@127.0.0.1:5672/'
    KAFKA_BOOTSTRAP_SERVERS: str = '127.0.0.1:9092'
    MONGO_CONNECT_URL: str = 'mongodb://127.0.0.1:27017'
    SQLACHEMY_ENGINE_URL: str = ''
    NATS_URL: str = 'nats://127.0.0.1:4222'
    ZEROMQ_HOST: str = '127.0.0.1'
    KOMBU_URL: str = 'redis://127.0.0.1:6379/0'
    KOMBU_TRANSPORT_OPTIONS: str = ''
    RESULT_STORE_URL: str = ''
    """Run records, statistics, registry and pause flags: sqlite:///path or mongodb://...;
    empty: sqlite in PERSIST_QUEUE_PATH/fsdf_runs.sqlite."""
    RUN_STATISTICS: bool = True
    """Per-queue counters (rollups), the consumer registry, pause/resume and the minute log line."""
    RUN_STATS_LOG_SECONDS: float = 60
    """How often each consumer logs its queue's speed and time left."""
    LOG_PATH: str = '~/.fsdf/logs'
    SHUTDOWN_GRACE_SECONDS: float = 30
    PUBLISH_RETRY_SECONDS: float = 5
    FUNCTION_TIMEOUT_MAX_ABANDONED: int = 100

    def redis_url(self) -> str:
        """REDIS_URL, or one built from the separate REDIS_* fields."""
        if self.REDIS_URL:
            return self.REDIS_URL
        # Escaped: a password with '/', '@' or ':' would otherwise end the URL's user part early.
        auth = f':{quote(self.REDIS_PASSWORD, safe="")}@' if self.REDIS_PASSWORD else ''
        return f'redis://{auth}{self.REDIS_HOST}:{self.REDIS_PORT}/{self.REDIS_DB}'

    def path(self, name: str) -> Path:
        """A path setting with ``~`` expanded."""
        return Path(os.path.expanduser(getattr(self, name)))

    def set(self, name: str, value: Any) -> None:
        """Set one setting by name, converting text (from the environment) to the field's type."""
        if name not in SETTING_NAMES:
            raise TypeError(f'unknown fsdf setting {name!r}; known: {", ".join(sorted(SETTING_NAMES))}')
        current = getattr(self, name)
        if isinstance(value, str) and not isinstance(current, str):
            value = BrokerEnum[value] if isinstance(current, BrokerEnum) and not value.isdigit() \
                else type(current)(float(value) if isinstance(current, float) else int(value))
        elif isinstance(current, BrokerEnum):
            value = BrokerEnum(value)
        setattr(self, name, value)


SETTING_NAMES = frozenset(f.name for f in fields(FrameSettings))
settings = FrameSettings()


def patch_frame_config(**new_settings: Any) -> None:
    """Override settings in code; wins over the config file and the environment."""
    for name, value in new_settings.items():
        settings.set(name, value)


def load_settings() -> None:
    """Read the project config file (writing it from the template if missing), then FSDF_* variables."""
    if os.environ.get('FSDF_CONFIG_FILE', '1') != '0':
        module = _project_config_module()
        for name in SETTING_NAMES:
            if hasattr(module, name):
                settings.set(name, getattr(module, name))
    for name in SETTING_NAMES:
        env_value = os.environ.get(f'FSDF_{name}')
        if env_value is not None:
            settings.set(name, env_value)


def _project_config_module() -> Any:
    spec = importlib.util.find_spec(CONFIG_FILE_NAME[:-3])
    if spec is None:
        target = Path(os.environ.get('FSDF_PROJECT_ROOT') or os.getcwd()) / CONFIG_FILE_NAME
        if not target.exists():
            import shutil  # here: it imports the compression modules; the file is written once
            shutil.copyfile(_TEMPLATE, target)
            print(f'fsdf: wrote its config file {target}; edit it to point at your brokers '
                  f'(FSDF_CONFIG_FILE=0 turns this off)', file=sys.stderr)
        spec = importlib.util.spec_from_file_location(CONFIG_FILE_NAME[:-3], target)
    assert spec is not None and spec.loader is not None  # a .py file's spec always has a source loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
