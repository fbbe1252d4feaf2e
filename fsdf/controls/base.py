"""A control is one small step around the call (rate, expiry, filtering, results...).

The consumer asks each control, in order: may I fetch now (``before_fetch``), should this
message be skipped (``skip_reason``), and tells each what became of a run (``after_settle``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from fsdf.consumer import Consumer


@dataclass(slots=True)
class RunOutcome:
    """What became of one message: status is 'succeeded', 'dead_lettered', 'requeued' or a skip reason."""

    task_id: Optional[str]
    arguments: dict[str, Any]
    extra: dict[str, Any]
    status: str
    result: Any = None
    exception: Optional[BaseException] = None
    retries: int = 0
    started: float = 0.0
    finished: float = 0.0


class Control:
    """Base class of controls; every hook does nothing by default."""

    def on_start(self, consumer: 'Consumer') -> None:
        """The consumer starts consuming."""

    def before_fetch(self, wanted: int) -> int:
        """Called in the fetch thread; may block (a closed window) and returns how many to fetch."""
        return wanted

    def skip_reason(self, arguments: dict[str, Any], extra: dict[str, Any]) -> Optional[str]:
        """A reason to settle the message without running it ('expired', 'filtered'), or None."""
        return None

    def after_settle(self, outcome: RunOutcome) -> None:
        """A message is settled (run, dead-lettered, requeued or skipped)."""
