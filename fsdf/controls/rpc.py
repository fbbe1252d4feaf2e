"""RPC mode: send each settled run's result (or its failure) back to the publisher's AsyncResult."""
from __future__ import annotations

from fsdf.controls.base import Middleware, RunOutcome
from fsdf.enums import BrokerEnum
from fsdf.rpc import failure_payload, result_backend_for, success_payload


class RpcResultControl(Middleware):
    """Stores the result of every run that succeeded or dead-lettered, under its task id."""

    def __init__(self, broker_kind: BrokerEnum) -> None:
        self.backend = result_backend_for(broker_kind)

    def after_settle(self, outcome: RunOutcome) -> None:
        if not outcome.task_id:
            return
        if outcome.status == 'succeeded':
            self.backend.put(outcome.task_id, success_payload(outcome.result))
        elif outcome.status == 'dead_lettered':
            self.backend.put(outcome.task_id, failure_payload(outcome.exception, outcome.retries))
