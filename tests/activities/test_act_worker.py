"""The activities through a real worker on the time-skipping test server: Temporal's own
retries honour Retry-After and error classes, and the effect happens once."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.adapters.pagerduty import PagerDutyNotifier
from activities.backends import Backends
from activities.deps import ActivityDeps
from activities.models import MessageSent, SendMessage
from client.logging import configure_logging
from tests.activities.conftest import Reply, Seen, Sessions, VendorServer
from worker.assembly import activity_functions


@workflow.defn(sandboxed=False)
class PageOnce:
    @workflow.run
    async def run(self, request: SendMessage) -> MessageSent:
        return await workflow.execute_activity(
            "notify.send",
            request,
            result_type=MessageSent,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=50), maximum_attempts=5
            ),
        )


def _deps(sessions: Sessions, folder: Path, pagerduty_url: str) -> ActivityDeps:
    sandbox = Backends.sandbox(sessions)
    pager = PagerDutyNotifier("R0UTING", url=pagerduty_url, timeout=2)
    backends = replace(sandbox, notifiers={**sandbox.notifiers, "pager": pager})
    return ActivityDeps(sessions=sessions, backends=backends, template_folder=folder)


async def test_worker_retries_through_429_and_500_and_pages_once(
    workflow_env: WorkflowEnvironment,
    sessions: Sessions,
    template_folder: Path,
    vendor: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    saved_handlers, saved_level = logging.getLogger().handlers[:], logging.getLogger().level
    configure_logging("json", "info")
    script = [Reply(429, {"status": "throttled"}, {"Retry-After": "30"}), Reply(503, "busy")]
    alerts: list[str] = []

    def handle(seen: Seen) -> Reply:
        if script:
            return script.pop(0)
        alerts.append(seen.json()["dedup_key"])
        return Reply(202, {"status": "success", "dedup_key": seen.json()["dedup_key"]})

    server: VendorServer = vendor(handle)  # type: ignore[operator]
    deps = _deps(sessions, template_folder, server.url)
    task_queue = f"act-{uuid.uuid4()}"
    request = SendMessage(
        idempotency_key="case-77/page",
        channel="pager",
        recipient="customer:C-0001",
        template="page",
        context={"case": {"id": "77"}},
    )
    async with Worker(
        workflow_env.client,
        task_queue=task_queue,
        workflows=[PageOnce],
        activities=activity_functions(deps),
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        started = await workflow_env.get_current_time()
        sent = await workflow_env.client.execute_workflow(
            PageOnce.run, request, id=f"wf-{uuid.uuid4()}", task_queue=task_queue
        )
        waited = await workflow_env.get_current_time() - started
    assert sent.message_id == "case-77/page" and alerts == ["case-77/page"]
    assert len(server.seen) == 3
    assert waited >= timedelta(seconds=30)  # the Retry-After, skipped by the test server
    logged = capsys.readouterr().err
    assert "notify.sent" in logged
    assert "@example.com" not in logged  # the customer's address never reaches a log line
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = saved_handlers
    logging.getLogger().setLevel(saved_level)


async def test_worker_does_not_retry_a_rejected_page(
    workflow_env: WorkflowEnvironment, sessions: Sessions, template_folder: Path, vendor: object
) -> None:
    server: VendorServer = vendor(lambda seen: Reply(400, {"status": "invalid event"}))  # type: ignore[operator]
    deps = _deps(sessions, template_folder, server.url)
    task_queue = f"act-{uuid.uuid4()}"
    request = SendMessage(
        idempotency_key="case-78/page",
        channel="pager",
        recipient="ops",
        template="page",
        context={"case": {"id": "78"}},
    )
    async with Worker(
        workflow_env.client,
        task_queue=task_queue,
        workflows=[PageOnce],
        activities=activity_functions(deps),
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        with pytest.raises(WorkflowFailureError) as failed:
            await workflow_env.client.execute_workflow(
                PageOnce.run, request, id=f"wf-{uuid.uuid4()}", task_queue=task_queue
            )
    activity_error = failed.value.cause
    assert isinstance(activity_error, ActivityError)
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError) and cause.non_retryable
    assert cause.type == "VendorRejected" and len(server.seen) == 1
