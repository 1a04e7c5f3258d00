"""Every action type under every kind: either the kind's workflow runs it (with an effect to
show for it), or lint refuses it at file:line. Nothing is skipped silently."""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import TypeAdapter
from sqlalchemy import func, select
from temporalio import workflow
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.deps import ActivityDeps
from activities.rollback_notify import RollbackNotifyActivities
from definitions.common import Action
from definitions.directory import Kind
from definitions.lint import NOT_RUN, lint
from definitions.loader import load_file, load_paths
from definitions.models import DEFINITION_MODELS
from store.models import (
    SandboxCredit,
    SandboxCrmNote,
    SandboxNotification,
    SandboxTicket,
)
from store.registry import deploy
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    add_ticket,
    case,
    escalation_worker,
    new_ticket_id,
    policy_document,
    settled,
)
from worker.assembly import activity_functions
from workflows.actions import ActionTarget, run_actions
from workflows.escalation import EscalationInput, EscalationWorkflow, Resolve, case_workflow_id
from workflows.recovery import RecoveryWorkflow

CATALOG = Path(__file__).resolve().parent.parent / "definitions" / "catalog"
ACTION_MODELS = get_args(get_args(Action)[0])
ACTION_TYPES = [model.model_fields["type"].annotation.__args__[0] for model in ACTION_MODELS]


def _carries_actions(kind: Kind) -> bool:
    """Whether a `kind` document can hold an action anywhere (its schema uses one)."""
    used = DEFINITION_MODELS[kind].model_json_schema().get("$defs", {})
    return any(model.__name__ in used for model in ACTION_MODELS)


# The kinds whose definitions hold actions (a schedule only says who is on call: none).
KINDS = tuple(kind for kind in DEFINITION_MODELS if _carries_actions(kind))
# A template each kind's notify may use (its variables are the kind's).
TEMPLATES = {
    "escalation": "case-escalated",
    "recovery": "apology",
    "rollout": "change-rolled-back",
    "handoff": "handoff-waiting",
}


def sample(action_type: str, kind: str) -> dict[str, Any]:
    """One valid action of `action_type` that names nothing a kind lacks."""
    return {
        "notify": {
            "type": "notify",
            "channel": "email",
            "to": ["team:support-leads"],
            "template": TEMPLATES[kind],
        },
        "assign": {"type": "assign", "queue": "tier-2"},
        "set_priority": {"type": "set_priority", "priority": "raise"},
        "update_ticket": {"type": "update_ticket", "tags": ["matrix"], "comment": "Checked."},
        "crm_note": {"type": "crm_note", "text": "Noted by the action matrix."},
        "credit": {"type": "credit", "amount": "10.00", "currency": "EUR", "reason": "Sorry"},
        "create_ticket": {"type": "create_ticket", "queue": "support", "subject": "Follow up"},
        "schedule_callback": {"type": "schedule_callback", "queue": "callbacks", "within": "4h"},
        "start": {"type": "start", "definition": "service-recovery"},
    }[action_type]


def _catalog(kind: str) -> dict[str, Any]:
    path = next((CATALOG / kind).glob("*.yaml"))
    document: dict[str, Any] = next(iter(yaml.safe_load_all(path.read_text(encoding="utf-8"))))
    return document


def _with_action(kind: str, action: dict[str, Any]) -> dict[str, Any]:
    document = _catalog(kind)
    spec = document["spec"]
    if kind == "escalation":
        spec["levels"][0]["actions"] = [action]
    elif kind == "recovery":
        spec["rules"][0]["actions"] = [action]
        spec["rules"][0].pop("ladder", None)
    elif kind == "rollout":
        spec["rollback"]["recovery"] = [{"actions": [action]}]
    else:
        spec["fallback"] = [action]
    return document


def test_every_action_type_is_in_the_matrix() -> None:
    assert set(ACTION_TYPES) == {
        "notify",
        "assign",
        "set_priority",
        "update_ticket",
        "crm_note",
        "credit",
        "create_ticket",
        "schedule_callback",
        "start",
    }
    assert set(KINDS) == {"escalation", "recovery", "rollout", "handoff"}
    # Lint says for every kind what it does not run; a kind without actions runs none.
    assert set(NOT_RUN) == set(DEFINITION_MODELS)
    assert all(not NOT_RUN[kind] for kind in DEFINITION_MODELS if kind not in KINDS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_lint_refuses_at_file_line_what_a_kind_does_not_run(
    kind: str, action_type: str, tmp_path: Path
) -> None:
    known = {d.name: d.kind for d in load_paths([CATALOG]).definitions}
    path = tmp_path / f"{kind}-{action_type}.yaml"
    path.write_text(yaml.safe_dump(_with_action(kind, sample(action_type, kind))), "utf-8")
    result = load_file(path)
    assert not result.problems, result.problems
    problems = lint(result.definitions, templates=CATALOG / "templates", known=known)
    refused = [p for p in problems if f"cannot run `{action_type}`" in p.message]
    if action_type in NOT_RUN[kind]:
        [problem] = refused
        assert problem.file == str(path) and problem.line > 1 and problem.path.endswith(".type")
        assert str(problem).startswith(f"{path}:{problem.line}:")
    else:
        assert not refused
        assert not problems, problems  # the kind runs it: see the tests below


@workflow.defn(name="ActionMatrix", sandboxed=False)
class ActionMatrixWorkflow:
    """Runs actions through `run_actions` as the recovery and handoff workflows do."""

    @workflow.run
    async def run(self, kind: str, actions: list[dict[str, Any]], ticket: str) -> list[str]:
        parsed = [TypeAdapter(Action).validate_python(a) for a in actions]
        target = ActionTarget(
            kind=kind,
            customer_id="C-0001",
            ticket_id=ticket,
            template_context={
                "customer": {"name": "Ada"},
                "conversation": {"id": "c"},
                "queue": {"id": "support", "name": "Support"},
                "wait": {"minutes": 5},
                "agent": {"id": ""},
            },
        )
        outcome = await run_actions(parsed, target, f"matrix-{kind}")
        return outcome.skipped + outcome.failed


async def _count(db: AppDb, model: Any, *where: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_escalation_runs_every_action_type(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    await deploy(app_db.sessions, load_paths([CATALOG / "recovery"]).definitions)
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    actions = [sample(t, "escalation") for t in ACTION_TYPES if t not in NOT_RUN["escalation"]]
    document = policy_document(
        priorities=["p2", "p1"],
        warn_at=[],
        on_warning=[],
        levels=[{"after": "5m", "name": "everything", "actions": actions}],
        repeat=0,
    )
    customer = "C-0005"
    async with escalation_worker(workflow_env, app_db, also=[RecoveryWorkflow]) as queue:
        opened_at = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(
                case=case(ticket, opened_at, priority="p2", customer_id=customer),
                policy=pinned(document),
            ),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        await workflow_env.sleep(timedelta(minutes=6))
        state = await settled(handle)
        assert not state.in_flight and state.failures == []
        assert (state.queue, state.case.priority) == ("tier-2", "p1")
        # `start` handed the customer to recovery: signal-with-start of customer-<id>.
        recovery = workflow_env.client.get_workflow_handle(f"customer-{customer}")
        assert (await recovery.describe()).workflow_type == "Recovery"
        seen = await recovery.query("view")
        assert seen["state"]["events_seen"] == 1
        with contextlib.suppress(RPCError):  # it may have ended idle already
            await recovery.terminate("test over")
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
    async with app_db.sessions() as session:
        row = await session.get(SandboxTicket, ticket)
    assert row is not None and row.queue == "tier-2" and row.priority == "p1"
    assert "matrix" in row.tags
    assert await _count(
        app_db, SandboxNotification, SandboxNotification.template == "case-escalated"
    )
    assert await _count(app_db, SandboxCrmNote, SandboxCrmNote.customer_id == customer) == 1
    assert await _count(app_db, SandboxCredit, SandboxCredit.customer_id == customer) == 1
    assert await _count(app_db, SandboxTicket, SandboxTicket.customer_id == customer) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("kind", ["recovery", "handoff"])
async def test_recovery_and_handoff_run_what_lint_lets_through(
    workflow_env: WorkflowEnvironment, app_db: AppDb, kind: str
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    actions = [sample(t, kind) for t in ACTION_TYPES if t not in NOT_RUN[kind]]
    queue = f"matrix-{uuid.uuid4()}"
    async with Worker(
        workflow_env.client,
        task_queue=queue,
        workflows=[ActionMatrixWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
        activities=activity_functions(ActivityDeps(sessions=app_db.sessions)),
    ):
        problems = await workflow_env.client.execute_workflow(
            ActionMatrixWorkflow.run,
            args=[kind, actions, ticket],
            id=f"matrix-{kind}-{ticket}",
            task_queue=queue,
        )
    assert problems == []
    async with app_db.sessions() as session:
        row = await session.get(SandboxTicket, ticket)
    assert row is not None and row.queue == "tier-2" and "matrix" in row.tags


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_rollout_rollback_runs_what_lint_lets_through(app_db: AppDb) -> None:
    rollback = RollbackNotifyActivities(ActivityDeps(sessions=app_db.sessions))
    context = {
        "change": {"id": "CHG-1", "owner": "maria", "reason": "test"},
        "phase": {"name": "p", "percent": 5},
        "customer": {"name": "Ada"},
    }
    for action_type in ACTION_TYPES:
        if action_type in NOT_RUN["rollout"]:
            continue
        action = TypeAdapter(Action).validate_python(sample(action_type, "rollout"))
        acted = await rollback._act(action, f"matrix/{action_type}", "C-0001", context)
        assert acted == 1, action_type
