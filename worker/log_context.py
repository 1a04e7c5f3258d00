"""The worker's log context: every activity log line names its workflow, run and attempt.

Apart from client/logging.py, which every command configures logging with, because it
needs the SDK's worker package (a tenth of a second to import) that a command does not.
"""

from __future__ import annotations

from typing import Any

import structlog
import temporalio.client
from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor


class _ActivityLogContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        with structlog.contextvars.bound_contextvars(
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            activity_type=info.activity_type,
            attempt=info.attempt,
        ):
            return await self.next.execute_activity(input)


class LogContextInterceptor(temporalio.client.Interceptor, Interceptor):
    """Binds workflow id, run id, activity name and attempt to every activity log line.

    Given to the worker (worker/assembly.py)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityLogContext(next)
