"""AsyncResult: the handle ``push``/``pub`` return for one published call."""
from __future__ import annotations

from typing import Any, Optional


class AsyncResult:
    """A published call: its ``task_id`` now; its result once RPC mode is built."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id

    @property
    def status(self) -> str:
        """'published': fsdf does not yet track a call past its publish without RPC mode."""
        return 'published'

    def get(self, timeout: Optional[float] = None) -> Any:
        """The call's return value (needs RPC mode, which is not built in this version)."""
        raise NotImplementedError('results need is_using_rpc_mode, which is not built in this version of fsdf')

    @property
    def result(self) -> Any:
        """Same as ``get()``."""
        return self.get()

    def __repr__(self) -> str:
        return f'AsyncResult({self.task_id!r})'
