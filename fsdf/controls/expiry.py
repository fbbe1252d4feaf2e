"""``msg_expire_seconds``: a message older than that when its turn comes is acked without running."""
from __future__ import annotations

import time
from typing import Any, Optional

from fsdf.controls.base import ConsumerContext, Middleware
from fsdf.controls.overrides import message_setting
from fsdf.log import EveryNSeconds

LOG_EVERY_SECONDS = 10.0


class MessageExpiry(Middleware):
    """Skips messages older than the task's ``msg_expire_seconds`` or their own ``extra.msg_expire_seconds``.

    Always on, because a single message may ask for it; the cost is a dict lookup per message.
    Age is measured from ``extra.publish_time`` (epoch seconds, so clocks of machines must agree).
    """

    def __init__(self, default_seconds: float) -> None:
        self.default_seconds = default_seconds
        self._log_gate = EveryNSeconds(LOG_EVERY_SECONDS)
        self._logger: Any = None

    def on_start(self, context: ConsumerContext) -> None:
        self._logger = context.logger

    def skip_reason(self, arguments: dict[str, Any], extra: dict[str, Any]) -> Optional[str]:
        if not self.default_seconds and 'msg_expire_seconds' not in extra:  # the usual case: nothing to check
            return None
        limit = message_setting(extra, 'msg_expire_seconds', self.default_seconds)
        published = extra.get('publish_time')
        if not limit or not isinstance(published, (int, float)):
            return None
        now = time.time()
        age = now - published
        if age <= limit:
            return None
        gate = self._log_gate
        if self._logger is not None and gate.ready(now):
            also = f' ({gate.suppressed} more expired since the last such line)' if gate.suppressed else ''
            gate.suppressed = 0
            self._logger.warning('task %s expired: published %.1f s ago, msg_expire_seconds=%s%s',
                                 extra.get('task_id'), age, limit, also)
        return 'expired'
