"""The worker's index of failing activities, for `opsflow stuck`.

Temporal's visibility store knows nothing of pending activity attempts: only describing a
run tells that one of its activities is on its fifth attempt. Describing every open run does
not scale to thousands, so each worker notes, per activity, its last failed attempt in the
app database (`activity_failures`), and `opsflow stuck` describes only the runs named there.
A successful attempt deletes the note; an activity given up stays `failed`.

A failure to write the note is logged and never changes the activity's own outcome.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from store.db import transaction
from store.models import ActivityFailure
from store.types import utcnow

log = structlog.get_logger(__name__)

MAX_ERROR_LENGTH = 2000


def error_text(exc: BaseException) -> str:
    """`Type: message`, and the cause's message when it says more (a vendor's answer)."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text[:MAX_ERROR_LENGTH]


def is_final(info: activity.Info, exc: BaseException) -> bool:
    """Whether Temporal will not try this activity again after `exc`."""
    if isinstance(exc, ApplicationError):
        if exc.non_retryable:
            return True
        policy = info.retry_policy
        if policy and exc.type and exc.type in (policy.non_retryable_error_types or ()):
            return True
    policy = info.retry_policy
    return bool(policy and policy.maximum_attempts and info.attempt >= policy.maximum_attempts)


class ActivityFailureInterceptor(Interceptor):
    """Notes each failed attempt of a workflow's activity; clears the note on success."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _NoteFailures(next, self._sessions)


class _NoteFailures(ActivityInboundInterceptor):
    def __init__(
        self, next: ActivityInboundInterceptor, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        super().__init__(next)
        self._sessions = sessions

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.workflow_id is None or info.is_local:
            return await self.next.execute_activity(input)
        try:
            result = await self.next.execute_activity(input)
        except asyncio.CancelledError:
            # Cancelled (its case resolved, its run ended): no longer retrying; a worker
            # stopping mid-attempt notes it again if the next attempt fails.
            if info.attempt > 1:
                await asyncio.shield(self._clear(info))
            raise
        except Exception as exc:
            await self._note(info, exc)
            raise
        if info.attempt > 1:
            await self._clear(info)
        return result

    async def _note(self, info: activity.Info, exc: BaseException) -> None:
        status = "failed" if is_final(info, exc) else "retrying"
        try:
            async with transaction(self._sessions) as session:
                row = await session.scalar(
                    select(ActivityFailure).where(
                        ActivityFailure.workflow_id == info.workflow_id,
                        ActivityFailure.run_id == (info.workflow_run_id or ""),
                        ActivityFailure.activity_id == info.activity_id,
                    )
                )
                if row is None:
                    row = ActivityFailure(
                        workflow_id=info.workflow_id,
                        run_id=info.workflow_run_id or "",
                        activity_id=info.activity_id,
                    )
                    session.add(row)
                row.activity_type = info.activity_type
                row.attempt = info.attempt
                row.status = status
                row.error = error_text(exc)
                row.failed_at = utcnow()
        except Exception as problem:  # the activity's own error matters more
            log.warning("activity_failures.note_failed", error=type(problem).__name__)

    async def _clear(self, info: activity.Info) -> None:
        try:
            async with transaction(self._sessions) as session:
                await session.execute(
                    delete(ActivityFailure).where(
                        ActivityFailure.workflow_id == info.workflow_id,
                        ActivityFailure.run_id == (info.workflow_run_id or ""),
                        ActivityFailure.activity_id == info.activity_id,
                    )
                )
        except Exception as problem:
            log.warning("activity_failures.clear_failed", error=type(problem).__name__)
