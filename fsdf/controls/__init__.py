"""Controls: small steps around the call, each in its own module, chosen from a task's options."""
from __future__ import annotations

from typing import TYPE_CHECKING

from fsdf.controls.base import Control, RunOutcome

if TYPE_CHECKING:
    from fsdf.consumer import Consumer


def build_controls(consumer: 'Consumer') -> list[Control]:
    """The controls a consumer's options ask for, in the order they apply."""
    controls: list[Control] = []
    if consumer.options.is_using_rpc_mode:
        from fsdf.controls.rpc import RpcResultControl
        controls.append(RpcResultControl(consumer))
    return controls


__all__ = ['Control', 'RunOutcome', 'build_controls']
