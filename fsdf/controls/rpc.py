"""RPC mode: send each settled run's result (or its failure) back to the publisher's AsyncResult."""
from __future__ import annotations

from typing import TYPE_CHECKING

from fsdf.controls.base import Control, RunOutcome
from fsdf.rpc import failure_payload, result_backend_for, success_payload

if TYPE_CHECKING:
    from fsdf.consumer import Consumer


class RpcResultControl(Control):
    """Stores the result of every run that succeeded or dead-lettered, under its task id."""

    def __init__(self, consumer: 'Consumer') -> None:
        self.backend = result_backend_for(consumer.broker_kind)

    def after_settle(self, outcome: RunOutcome) -> None:
        if not outcome.task_id:
            return
        if outcome.status == 'succeeded':
            self.backend.put(outcome.task_id, success_payload(outcome.result))
        elif outcome.status == 'dead_lettered':
            self.backend.put(outcome.task_id, failure_payload(outcome.exception, outcome.retries))
