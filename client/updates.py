"""Sending a workflow an update so that a continue-as-new never loses it: every client path
(the CLI, the intake) sends updates through `execute_update`, which sends one aborted by a
run that continued as new (activities/update_aborts.py) again with the same update id.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from activities.update_aborts import aborted_by_close

T = TypeVar("T")

SEND_AGAIN = 5
"""Times an aborted update is sent again (each run it reaches is a fresh one)."""


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
