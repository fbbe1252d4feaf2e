"""AsyncResult: the handle ``push``/``pub`` return for one published call."""
from __future__ import annotations

from typing import Any, Generator, Optional

from fsdf.enums import BrokerEnum


class TaskFailedError(Exception):
    """The task ended in the dead-letter queue; ``AsyncResult.get()`` raises this with its exception."""


class AsyncResult:
    """A published call: ``task_id`` at once; in RPC mode its ``status`` and ``result`` once it has run."""

    def __init__(self, task_id: str, broker_kind: Optional[BrokerEnum] = None) -> None:
        self.task_id = task_id
        self.broker_kind = broker_kind
        self._payload: Optional[dict[str, Any]] = None

    def _wait(self, timeout: Optional[float]) -> Optional[dict[str, Any]]:
        if self._payload is None and self.broker_kind is not None:
            from fsdf.rpc import result_backend_for
            self._payload = result_backend_for(self.broker_kind).wait(self.task_id, timeout)
        return self._payload

    @property
    def status(self) -> str:
        """'success' or 'failed' once the result is back (RPC mode), else 'pending'."""
        payload = self._wait(0)
        return payload['status'] if payload else 'pending'

    def get(self, timeout: Optional[float] = None) -> Any:
        """The call's return value, waiting up to ``timeout`` s; needs ``is_using_rpc_mode`` on the task.

        Raises TimeoutError if it does not come in time, TaskFailedError if the task dead-lettered.
        """
        payload = self._wait(timeout)
        if payload is None:
            raise TimeoutError(f'no result for task {self.task_id} within {timeout} s '
                               f'(is the consumer running, with is_using_rpc_mode=True?)')
        if payload['status'] == 'failed':
            error = payload['exception']
            raise TaskFailedError(f"task {self.task_id} failed after {payload['retries']} retries: "
                                  f"{error['type']}: {error['message']}")
        return payload['result']

    @property
    def result(self) -> Any:
        """Same as ``get()``: blocks until the result is back."""
        return self.get()

    def __await__(self) -> Generator[Any, None, Any]:
        import asyncio  # only an awaiting caller needs it; kept off fsdf's import
        return asyncio.get_running_loop().run_in_executor(None, self.get).__await__()

    def __repr__(self) -> str:
        return f'AsyncResult({self.task_id!r})'
