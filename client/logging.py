"""Structured logs: JSON when not a terminal, readable when it is, with Temporal ids bound.

Workflow code logs through `workflow.logger`, whose records carry the workflow's ids as an
extra; activity code logs through structlog, and the worker's interceptor
(worker/log_context.py) binds the activity's ids for the length of each attempt. Either way
every line names its workflow and run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING

import structlog
import temporalio.workflow
from structlog.typing import EventDict, Processor, WrappedLogger
from temporalio import activity

if TYPE_CHECKING:
    from temporalio.runtime import LoggingConfig

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
    """Lift the SDK's `temporal_workflow`/`temporal_activity` extras to top-level keys, and
    the fields of a forwarded Core (Rust) log entry (`temporal_log`) likewise."""
    for extra in ("temporal_workflow", "temporal_activity"):
        info = event.pop(extra, None)
        if isinstance(info, MutableMapping):
            for key in ("workflow_id", "run_id", "workflow_type", "activity_type", "attempt"):
                if key in info:
                    event.setdefault(key, info[key])
    core = event.pop("temporal_log", None)
    if core is not None:
        event.setdefault("sdk_target", str(getattr(core, "target", "")))
        fields = getattr(core, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                event.setdefault(
                    str(key), value if isinstance(value, str | int | float) else str(value)
                )
    return event


CORE_LOGGER = "temporalio.core"
_core_forwarding = False


def forward_core_logs(level: str) -> None:
    """Send the Temporal Core's own log lines (the Rust side of the SDK: "Failing workflow
    task", poll errors, ...) through Python logging, so they follow OPSFLOW_LOG_FORMAT like
    every other line instead of going to stderr in Core's coloured text format.

    Sets the SDK's default Runtime (once per process): clients made afterwards use it."""
    global _core_forwarding
    if _core_forwarding:
        return
    from temporalio.runtime import Runtime, TelemetryConfig

    telemetry = TelemetryConfig(logging=core_logging(level))
    Runtime.set_default(Runtime(telemetry=telemetry), error_if_already_set=False)
    _core_forwarding = True


def core_logging(level: str) -> LoggingConfig:
    """The Core's log lines through Python logging at about `level`: for the default runtime
    and for any other a process makes (the metrics runtime, worker/metrics.py)."""
    from temporalio.runtime import LogForwardingConfig, LoggingConfig, TelemetryFilter

    core_level = {"debug": "INFO", "error": "ERROR"}.get(level.lower(), "WARN")
    forwarding = LogForwardingConfig(
        logger=logging.getLogger(CORE_LOGGER),
        append_target_to_name=False,
        prepend_target_on_message=False,
        append_log_fields_to_message=False,  # the fields become keys of their own
    )
    return LoggingConfig(
        filter=TelemetryFilter(core_level=core_level, other_level="ERROR"),
        forwarding=forwarding,
    )


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
    # The SDK appends the workflow's or activity's info to the message text; the keys are
    # lifted into fields of their own above, so the message stays the message.
    temporalio.workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    forward_core_logs(level)
