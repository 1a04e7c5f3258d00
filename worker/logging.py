"""Structured logs: JSON when not a terminal, readable when it is, with Temporal ids bound.

Workflow code logs through `workflow.logger`, whose records carry the workflow's ids as an
extra; activity code logs through structlog, and the interceptor below binds the activity's
ids for the length of each attempt. Either way every line names its workflow and run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
import temporalio.client
from structlog.typing import EventDict, Processor, WrappedLogger
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

# Keys whose values are personal data or secrets; never written out.
REDACTED_KEYS = frozenset(
    {
        "email",
        "phone",
        "recipient",
        "password",
        "secret",
        "token",
        "api_key",
        "authorization",
        "signing_secret",
    }
)


def _flatten_temporal_extra(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Lift the SDK's `temporal_workflow`/`temporal_activity` extras to top-level keys."""
    for extra in ("temporal_workflow", "temporal_activity"):
        info = event.pop(extra, None)
        if isinstance(info, MutableMapping):
            for key in ("workflow_id", "run_id", "workflow_type", "activity_type", "attempt"):
                if key in info:
                    event.setdefault(key, info[key])
    return event


def _redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in event.keys() & REDACTED_KEYS:
        event[key] = "[redacted]"
    return event


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    json_output = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _flatten_temporal_extra,
        _redact,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if json_output else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that says nothing a user can act on.
    for noisy in ("httpx", "httpcore", "aiosqlite", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


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

    Given to the client, it reaches every worker built on that client too."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityLogContext(next)
