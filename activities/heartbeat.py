"""Heartbeats that survive a crash: one typed details model per long activity.

PostHog's `HeartbeatDetails` pattern. A long activity declares what its progress is (a
pydantic model), opens a `Progress` for it and records each safe point with `progress.save`.
Temporal keeps the last heartbeat's details with the activity; a retried attempt (another
worker, after a crash) reads them back with `Progress.resume`, which parses them defensively:
details of another shape (an older version of the activity, a note from somewhere else) are
logged and the attempt starts from the first safe point instead of failing.

Code called from inside a long activity (a CRM scan, a flag store's bulk update) only keeps
the attempt alive with `heartbeat()`: while a `Progress` is open, that re-sends the owner's
details, so a nested call can never overwrite the recorded progress with its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from temporalio import activity

log = structlog.get_logger(__name__)


class HeartbeatDetails(BaseModel):
    """Base of every activity's progress model; `kind` names whose progress it is."""

    model_config = ConfigDict(extra="forbid")

    kind: str


DetailsT = TypeVar("DetailsT", bound=HeartbeatDetails)

_current: ContextVar[Progress[Any] | None] = ContextVar("opsflow_heartbeat_progress", default=None)


class Progress(Generic[DetailsT]):
    """The progress of one running activity attempt, heartbeated as one typed value."""

    def __init__(self, details: DetailsT) -> None:
        self.details = details

    @staticmethod
    def resume(model: type[DetailsT], first: DetailsT) -> DetailsT:
        """The last recorded progress of this activity, or `first` (the first safe point)
        when there is none or it is not a `model` (never an error: a wrong shape in the
        server must not wedge every retry)."""
        if not activity.in_activity():
            return first
        recorded = activity.info().heartbeat_details
        if not recorded:
            return first
        details: DetailsT | None = None
        try:
            details = model.model_validate(recorded[-1])
            problem = f"kind {details.kind!r}"
        except ValidationError as exc:
            problem = f"{exc.error_count()} problems"
        if details is None or details.kind != first.kind:
            log.warning(
                "heartbeat.unreadable_details",
                activity=activity.info().activity_type,
                attempt=activity.info().attempt,
                expected=first.kind,
                found=type(recorded[-1]).__name__,
                problem=problem,
                resumes="from the start",
            )
            return first
        return details

    def save(self, details: DetailsT) -> None:
        """Record a safe point: a retry resumes from here."""
        self.details = details
        self._send()

    def _send(self) -> None:
        if activity.in_activity():
            activity.heartbeat(self.details.model_dump(mode="json"))


@contextmanager
def progress(details: DetailsT) -> Iterator[Progress[DetailsT]]:
    """Open the activity's progress at `details` (heartbeated at once) for the block."""
    owner = Progress(details)
    token = _current.set(owner)
    try:
        owner._send()
        yield owner
    finally:
        _current.reset(token)


def heartbeat(*notes: object) -> None:
    """Keep the current attempt alive (no-op outside an activity). Inside an open `Progress`
    the owner's details are sent again, so nested code never replaces them; otherwise no
    details at all. `notes` (what the caller is doing) go to the debug log, never to the
    server."""
    if not activity.in_activity():
        return
    if notes:
        log.debug("heartbeat", note=" ".join(str(note) for note in notes)[:200])
    owner = _current.get()
    if owner is not None:
        owner._send()
    else:
        activity.heartbeat()
