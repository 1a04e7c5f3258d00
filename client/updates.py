"""Sending a workflow an update so that a continue-as-new never loses it.

A run that continues as new while an update waits to be accepted aborts that update
(`NOT_FOUND`, "workflow update was aborted by closing workflow"): it never ran, and the
workflow id now names the new run. Every client path (the CLI, the intake) sends updates
through `execute_update`, which sends an aborted one again with the same update id.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

T = TypeVar("T")

ABORTED_BY_CLOSE = "aborted by closing workflow"
SEND_AGAIN = 5
"""Times an aborted update is sent again (each run it reaches is a fresh one)."""


def aborted_by_close(exc: RPCError) -> bool:
    """The update reached a run that closed (continued as new) before accepting it."""
    return exc.status == RPCStatusCode.NOT_FOUND and ABORTED_BY_CLOSE in exc.message


async def execute_update(
    handle: WorkflowHandle[Any, Any],
    update: str,
    *,
    args: list[Any],
    result_type: type[T],
    id: str | None = None,
    rpc_timeout: timedelta | None = None,
) -> T:
    """`handle.execute_update`, sent again while the run it reaches continues as new."""
    attempt = 0
    while True:
        try:
            result: T = await handle.execute_update(
                update, args=args, id=id, result_type=result_type, rpc_timeout=rpc_timeout
            )
            return result
        except RPCError as exc:
            if not aborted_by_close(exc) or attempt == SEND_AGAIN:
                raise
        await asyncio.sleep(0.05 * 2**attempt)  # the new run starts within milliseconds
        attempt += 1
