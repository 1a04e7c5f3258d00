"""`opsflow case` never says something happened that did not (issue 14, item 7): a policy
that does not cover the priority and an unknown customer are refused before anything starts;
a case whose workflow failed or was terminated reads as such, with the reason, in `case show`
and `case list`; `case show` answers without a worker; opening a failed case again says so.

The commands run in-process against the session's dev server (visibility queries need it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from client.cases import open_case
from definitions.templates import render_message
from store.registry import CATALOG_DIR, deploy_folder, latest
from tests.cli_support import CommandLine
from tests.conftest import AppDb
from tests.escalation_support import case, deploy_p1_only, escalation_worker, new_ticket_id
from workflows.escalation import case_workflow_id

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
async def catalog_db(app_db: AppDb, tmp_path: Path) -> AppDb:
    await deploy_folder(app_db.sessions, CATALOG_DIR, deployed_by="test")
    await deploy_p1_only(app_db, tmp_path)  # the catalog's policies cover every priority
    return app_db


@pytest.fixture
async def cli(
    dev_env: WorkflowEnvironment, catalog_db: AppDb, tmp_path: Path
) -> AsyncIterator[CommandLine]:
    async with escalation_worker(dev_env, catalog_db) as queue:
        yield CommandLine.against(dev_env, catalog_db.url, queue, tmp_path)


def opening(ticket: str, priority: str = "p1", customer: str = "C-0002") -> tuple[str, ...]:
    """`case open` of `ticket`, by ana."""
    return (
        "case", "open", "--ticket", ticket, "--customer", customer, "--priority", priority,
        "--by", "ana",
    )  # fmt: skip


async def _exists(env: WorkflowEnvironment, ticket: str) -> bool:
    try:
        await env.client.get_workflow_handle(case_workflow_id(ticket)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


@SQLITE
async def test_a_policy_that_does_not_cover_the_priority_is_refused_before_opening(
    cli: CommandLine, dev_env: WorkflowEnvironment
) -> None:
    ticket = new_ticket_id()
    error = await cli.refused(*opening(ticket, "p3", "C-0002"), "--policy", "p1-only")
    assert "--policy: p1-only@1 does not cover priority p3 (it covers p1)" in error
    assert not await _exists(dev_env, ticket)
    # Without --policy the first policy that covers p3 is taken.
    opened = await cli.ok(*opening(ticket, "p3", "C-0002"))
    assert f"case {ticket} opened under support@1" in opened.stdout


@SQLITE
async def test_an_unknown_customer_is_refused_unless_explicitly_allowed(
    cli: CommandLine, dev_env: WorkflowEnvironment
) -> None:
    ticket = new_ticket_id()
    args = ("case", "open", "--ticket", ticket, "--customer", "C-9999", "--priority", "p1")
    error = await cli.refused(*args, "--by", "ana")
    assert "--customer: customer C-9999 is not in the CRM (sandbox)" in error
    assert "--unknown-customer" in error
    assert not await _exists(dev_env, ticket)
    opened = await cli.ok(*args, "--by", "ana", "--unknown-customer", "--json")
    assert opened.json()["started"] is True
    assert opened.json()["policy"] == "support@1"


def test_templates_call_a_customer_without_a_name_by_its_id() -> None:
    context = {
        "case": {"id": "T-1", "priority": "p1", "subject": "Checkout down", "stage": "support"},
        "customer": {"id": "C-9999"},
        "sla": {
            "percent": 50,
            "name": "first_response",
            "label": "first response",
            "due_at": "",
            "remaining": "0:30:00",
        },
        "level": {"number": 1, "name": "agent", "cycle": 0, "of": 3},
    }
    for template in ("case-escalated", "sla-warning"):
        rendered = render_message(template, "en", context)
        assert "C-9999" in rendered.body, template
    nameless = {**context, "customer": {"id": "C-9999", "name": None}}
    assert "C-9999" in render_message("case-escalated", "de", nameless).body


@SQLITE
async def test_a_failed_case_reads_failed_with_its_reason_and_opens_again_honestly(
    cli: CommandLine, dev_env: WorkflowEnvironment, catalog_db: AppDb
) -> None:
    ticket = new_ticket_id()
    # Started past the command line's checks (as an older client or a bug would): the
    # workflow fails at once, its p3 case has no SLA in p1-only.
    wrong = await latest(catalog_db.sessions, "p1-only")
    opened = await open_case(
        dev_env.client,
        cli.env["OPSFLOW_TASK_QUEUE"],
        case(ticket, datetime.now(UTC), priority="p3", customer_id="C-0002"),
        wrong,
    )
    with pytest.raises(Exception):  # noqa: B017 - the workflow's failure, whatever its type
        await opened.handle.result()

    shown = (await cli.ok("case", "show", ticket)).stdout
    assert "failed (policy p1-only@1 has no SLA for p3 at support)" in shown
    assert "Traceback" not in shown
    as_json = (await cli.ok("case", "show", ticket, "--json")).json()
    assert as_json["case"]["state"] == "failed"
    assert as_json["case"]["execution"] == "failed"
    assert "has no SLA for p3" in as_json["case"]["reason"]
    assert as_json["state"] is None and as_json["case"]["live"] is False

    listed = (await cli.ok("case", "list", "--json")).json()
    row = next(r for r in listed if r["ticket"] == ticket)
    assert row["state"] == "failed" and "has no SLA for p3" in row["reason"]
    failed_only = (await cli.ok("case", "list", "--state", "failed", "--json")).json()
    assert ticket in [r["ticket"] for r in failed_only]
    assert "failed" in (await cli.ok("case", "list")).stdout

    again = await cli.ok(*opening(ticket, "p3", "C-0002"))
    assert f"case {ticket} opened again under support@1" in again.stdout
    assert "its earlier run was failed: policy p1-only@1 has no SLA for p3" in again.stdout
    listed = (await cli.ok("case", "list", "--json")).json()
    rows = [r for r in listed if r["ticket"] == ticket]
    assert [(r["state"], r["policy"]) for r in rows] == [("open", "support@1")]
    assert "already open" in (await cli.ok(*opening(ticket, "p3", "C-0002"))).stdout


@SQLITE
async def test_a_terminated_case_reads_terminated_with_the_reason(
    cli: CommandLine, dev_env: WorkflowEnvironment
) -> None:
    ticket = new_ticket_id()
    await cli.ok(*opening(ticket, "p1", "C-0002"))
    handle = dev_env.client.get_workflow_handle(case_workflow_id(ticket))
    await handle.terminate(reason="opened by mistake")
    assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED
    shown = (await cli.ok("case", "show", ticket, "--json")).json()["case"]
    assert shown["state"] == "terminated"
    assert "opened by mistake" in shown["reason"]
    refusal = await cli.refused("case", "ack", ticket, "--by", "ana")
    assert f"case {ticket} is terminated" in refusal


@SQLITE
async def test_case_show_answers_from_the_last_known_state_without_a_worker(
    dev_env: WorkflowEnvironment, catalog_db: AppDb, tmp_path: Path
) -> None:
    ticket = new_ticket_id()
    async with escalation_worker(dev_env, catalog_db) as queue:
        cli = CommandLine.against(dev_env, catalog_db.url, queue, tmp_path)
        await cli.ok(*opening(ticket, "p1", "C-0002"))
        await cli.ok("case", "pause", ticket, "--by", "ana")
        live = (await cli.ok("case", "show", ticket, "--json")).json()
        assert live["case"]["live"] is True and live["state"]["state"] == "paused"
    # No worker polls the queue now: the query cannot be answered.
    shown = await cli.ok("case", "show", ticket, "--json")
    case_view = shown.json()["case"]
    assert case_view["live"] is False and case_view["state"] == "paused"
    assert "no worker answered within 1 s" in case_view["reason"]
    assert case_view["last_known"]["policy"] == "support@1"
    assert "opened" in [e["step"] for e in shown.json()["timeline"]]
    text = (await cli.ok("case", "show", ticket)).stdout
    assert f"case {ticket}: paused (no worker answered within 1 s" in text
