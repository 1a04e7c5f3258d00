"""A worker assembled like production writes the ledger and logs with Temporal ids bound."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow

# The sandbox re-imports this module for the workflow below; everything else passes through.
with workflow.unsafe.imports_passed_through():
    import pytest
    import structlog
    from sqlalchemy import select
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from activities.deps import ActivityDeps
    from activities.models import LedgerAppend
    from client.logging import configure_logging
    from store.models import LedgerEntry
    from tests.conftest import AppDb
    from worker.assembly import activity_functions
    from worker.log_context import LogContextInterceptor


@activity.defn(name="probe.log_customer")
async def log_customer(email: str) -> None:
    structlog.get_logger("probe").info("customer contacted", email=email, channel="email")


@workflow.defn(name="LedgerProbe")
class LedgerProbe:
    @workflow.run
    async def run(self, subject: str) -> list[int]:
        info = workflow.info()
        entry = LedgerAppend(
            idempotency_key=f"{info.workflow_id}/opened",
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            kind="probe",
            subject=subject,
            step="opened",
            detail={"why": "test"},
        )
        ids = [
            await workflow.execute_activity(
                "ledger.append",
                entry,
                result_type=int,
                start_to_close_timeout=timedelta(seconds=30),
            )
            for _ in range(2)  # the same key twice: one row
        ]
        workflow.logger.info("probe done")
        await workflow.execute_activity(
            log_customer, "ana@example.com", start_to_close_timeout=timedelta(seconds=30)
        )
        return ids


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_ledger_append_is_idempotent_and_logs_carry_ids(
    workflow_env: WorkflowEnvironment, app_db: AppDb, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "info")
    queue = f"probe-{uuid.uuid4()}"
    workflow_id = f"probe-{uuid.uuid4()}"
    async with Worker(
        workflow_env.client,
        task_queue=queue,
        workflows=[LedgerProbe],
        activities=[*activity_functions(ActivityDeps(sessions=app_db.sessions)), log_customer],
        interceptors=[LogContextInterceptor()],
    ):
        ids = await workflow_env.client.execute_workflow(
            LedgerProbe.run, "C-0001", id=workflow_id, task_queue=queue
        )
    assert ids[0] == ids[1]
    async with app_db.sessions() as session:
        rows = (
            await session.scalars(select(LedgerEntry).where(LedgerEntry.workflow_id == workflow_id))
        ).all()
    assert [(row.step, row.subject, row.detail) for row in rows] == [
        ("opened", "C-0001", {"why": "test"})
    ]

    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    activity_line = next(line for line in lines if line["event"] == "customer contacted")
    assert activity_line["workflow_id"] == workflow_id
    assert activity_line["activity_type"] == "probe.log_customer"
    assert activity_line["attempt"] == 1
    assert activity_line["email"] == "[redacted]"
    assert "ana@example.com" not in json.dumps(lines)
    workflow_line = next(line for line in lines if line["event"].startswith("probe done"))
    assert workflow_line["workflow_id"] == workflow_id
    assert workflow_line["run_id"]


@workflow.defn(name="BrokenTaskProbe")
class BrokenTaskProbe:
    """A workflow whose task fails: the SDK's Core (Rust) logs "Failing workflow task"."""

    @workflow.run
    async def run(self) -> None:
        workflow.logger.info("about to fail")
        raise RuntimeError("this workflow task fails (test)")


_BROKEN_TASK_RUN = """
import asyncio, logging, os, sys, time
from client.logging import configure_logging
configure_logging("json", "info")
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from tests.test_worker_logging import BrokenTaskProbe
from worker.binaries import temporal_test_server

core_lines = []
class Seen(logging.Handler):
    def emit(self, record):
        core_lines.append(record)
logging.getLogger("temporalio.core").addHandler(Seen())

async def main():
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server())
    )
    async with env, Worker(env.client, task_queue="broken", workflows=[BrokenTaskProbe]):
        await env.client.start_workflow(BrokenTaskProbe.run, id="broken-1", task_queue="broken")
        deadline = time.monotonic() + 60
        while not core_lines and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

asyncio.run(main())
# Skip interpreter teardown: the SDK's Rust threads can abort a finalizing interpreter
# (PyGILState_Release, temporalio/sdk-python#300), which is not what this test is about.
sys.stderr.flush()
os._exit(0 if core_lines else 3)
"""


def test_sdk_log_lines_follow_the_json_format() -> None:
    """Every line on stderr is JSON under the json format: opsflow's, the SDK's Python
    loggers' and the Core's own (forwarded to the `temporalio.core` logger)."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", _BROKEN_TASK_RUN],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    core = [line for line in lines if line["logger"] == "temporalio.core"]
    assert any(line["event"] == "Failing workflow task" for line in core), lines
    assert all(line["sdk_target"].startswith("temporalio_sdk_core") for line in core)
    activation = [x for x in lines if x["logger"] == "temporalio.worker._workflow_instance"]
    assert activation and all(line["workflow_id"] == "broken-1" for line in activation)
    assert "this workflow task fails" in activation[0]["exception"]
    # the workflow's info is in fields of its own, not appended to the message
    [about] = {line["event"] for line in lines if line["logger"] == "temporalio.workflow"}
    assert about == "about to fail"
