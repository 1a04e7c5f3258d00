"""Migrating a running case to another policy version (`migrate` update, `opsflow case
migrate`): the clocks take the new targets and keep the time already spent and any pause,
the ledger says who moved it from which version to which, a refused migration changes
nothing, and a migrated case that continues as new runs on the new version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from client.cases import (
    CaseCommandRefused,
    MigrationPacer,
    PolicyVersions,
    command_case,
    migrate_case,
)
from definitions.loader import load_file, load_paths
from definitions.models import PinnedDefinition
from store.registry import CATALOG_DIR, deploy, get
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    about,
    about_at,
    add_ticket,
    answer_timed_out,
    case,
    escalation_worker,
    eventually,
    keep_history,
    ledger_entries,
    new_ticket_id,
    next_weekday_at,
    policy_document,
    settled,
    skip_to,
)
from workflows.escalation import (
    EscalationInput,
    EscalationState,
    EscalationWorkflow,
    Migrate,
    Pause,
    Resolve,
    Resume,
    SetPriority,
    case_workflow_id,
)
from workflows.escalation_commands import migration_refusal

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# The support desk's hours: time spent is business time, so an hour at 09:00-10:00 on a
# Monday is an hour whichever version counts it.
DESK = {"timezone": "Europe/Berlin", "hours": {"mon-fri": "08:00-18:00"}}


def document(p2_first_response: str = "2h", p3_resolution: str = "1d", **spec: Any) -> Any:
    """A policy whose levels and warnings stay quiet for the first hours of a P2 case."""
    defaults: dict[str, Any] = {
        "calendar": DESK,
        "slas": [
            {"priority": "p1", "first_response": "1h", "resolution": "4h"},
            {"priority": "p2", "first_response": p2_first_response, "resolution": "8h"},
            {"priority": "p3", "first_response": "4h", "resolution": p3_resolution},
        ],
        "warn_at": [95],
        "levels": [
            {
                "after": "6h",
                "name": "lead",
                "actions": [
                    {
                        "type": "notify",
                        "channel": "email",
                        "to": ["queue:support"],
                        "template": "case-escalated",
                    }
                ],
            }
        ],
        "repeat": 0,
    }
    return policy_document(**{**defaults, **spec})


async def deployed(db: AppDb, folder: Path, *documents: Any) -> list[PinnedDefinition]:
    """Deploy each document in turn (versions 1, 2, ... of test-policy) and pin them."""
    pins = []
    for index, doc in enumerate(documents):
        path = folder / f"test-policy-{index}.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        loaded = load_file(path)
        assert not loaded.problems, loaded.problems
        [result] = await deploy(db.sessions, loaded.definitions, deployed_by="test")
        pins.append(await get(db.sessions, result.name, result.version))
    return pins


@SQLITE
async def test_a_stricter_first_response_keeps_the_hour_spent(
    workflow_env: WorkflowEnvironment, app_db: AppDb, tmp_path: Path
) -> None:
    v1, v2 = await deployed(app_db, tmp_path, document(), document(p2_first_response="90m"))
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    monday = next_weekday_at(await workflow_env.get_current_time(), 0, 9, 0)
    async with escalation_worker(workflow_env, app_db) as queue:
        await skip_to(workflow_env, monday)
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, monday, priority="p2"), policy=v1, by="ana"),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        await settled(handle)
        an_hour_in = monday + timedelta(hours=1)
        await skip_to(workflow_env, an_hour_in)
        before = await settled(handle)
        assert before.clocks["first_response"].due == about_at(monday + timedelta(hours=2))

        # The dry run's deadlines: due 11:00 under v1, 10:30 under v2 (the hour counts).
        versions = PolicyVersions(app_db.sessions)
        now = await workflow_env.get_current_time()
        preview = await migrate_case(
            workflow_env.client, versions, ticket, v2, by="ana", dry_run=True, now=now
        )
        assert (preview.outcome, preview.source, preview.target) == (
            "would migrate",
            "test-policy@1",
            "test-policy@2",
        )
        first, resolution = preview.clocks
        assert first.name == "first_response" and first.spent == about(timedelta(hours=1))
        assert (first.old_budget, first.new_budget) == (timedelta(hours=2), timedelta(minutes=90))
        assert first.old_due == about_at(monday + timedelta(hours=2))
        assert first.new_due == about_at(monday + timedelta(minutes=90))
        assert resolution.old_due == resolution.new_due == about_at(monday + timedelta(hours=8))
        assert (await settled(handle)).definition == "test-policy@1"  # nothing changed

        migrated = await handle.execute_update(
            EscalationWorkflow.migrate, Migrate(policy=v2, by="ana")
        )
        assert migrated.definition == "test-policy@2"
        clock = migrated.clocks["first_response"]
        assert clock.budget == timedelta(minutes=90)
        assert clock.spent_before == about(timedelta(hours=1))
        state = await settled(handle)
        assert state.clocks["first_response"].due == about_at(monday + timedelta(minutes=90))
        assert first.new_due is not None
        assert state.clocks["first_response"].due == about_at(first.new_due)  # as previewed
        assert state.clocks["resolution"].due == about_at(monday + timedelta(hours=8))
        [entry] = [e for e in await ledger_entries(app_db, handle.id) if e.step == "migrate"]
        assert entry.detail == {"from": "test-policy@1", "to": "test-policy@2", "by": "ana"}
        assert entry.at == about_at(an_hour_in)
        described = await handle.describe()
        assert described.search_attributes["OpsDefinition"] == ["test-policy@2"]

        # The timer follows: first response breaches at 10:30, half an hour before v1's.
        await skip_to(workflow_env, monday + timedelta(minutes=95))

        async def breached() -> bool:
            steps = {e.step for e in await ledger_entries(app_db, handle.id)}
            return "breach-first_response" in steps

        await eventually(breached, "first response breached under v2")
        state = await settled(handle)
        assert state.clocks["first_response"].breached_at == about_at(
            monday + timedelta(minutes=90)
        )

        # Run again, the same migration skips the case: it is on the version already.
        again = await migrate_case(workflow_env.client, versions, ticket, v2, by="ana")
        assert (again.outcome, again.reason) == ("skipped", "already on test-policy@2")
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
        await keep_history(handle, "escalation-migrate")


@SQLITE
async def test_a_refused_migration_changes_nothing(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    v1 = pinned(document())
    p1_only = pinned(
        document(
            priorities=["p1"], slas=[{"priority": "p1", "first_response": "1h", "resolution": "4h"}]
        ),
        version=2,
    )
    [rollout] = [d for d in load_paths([CATALOG_DIR / "rollout"]).definitions]
    not_a_policy = pinned(rollout.source.data)
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    monday = next_weekday_at(await workflow_env.get_current_time(), 0, 9, 0)
    async with escalation_worker(workflow_env, app_db) as queue:
        await skip_to(workflow_env, monday)
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, monday, priority="p2"), policy=v1),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        await skip_to(workflow_env, monday + timedelta(hours=1))
        before = await settled(handle)

        with pytest.raises(CaseCommandRefused) as refused:
            await command_case(
                workflow_env.client, ticket, "migrate", Migrate(policy=p1_only, by="ana")
            )
        assert str(refused.value) == (
            f"case {ticket} refused: test-policy@2 does not cover priority p2 (it covers p1)"
        )
        with pytest.raises(WorkflowUpdateFailedError) as wrong_kind:
            await handle.execute_update(
                EscalationWorkflow.migrate, Migrate(policy=not_a_policy, by="ana")
            )
        assert "is a rollout definition, not an escalation policy" in str(wrong_kind.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as same:
            await handle.execute_update(EscalationWorkflow.migrate, Migrate(policy=v1, by="ana"))
        assert f"case {ticket} is already on test-policy@1" in str(same.value.cause)

        after = await settled(handle)
        assert after.definition == "test-policy@1"
        assert after.clocks == before.clocks
        assert after.commands == before.commands
        assert "migrate" not in {e.step for e in await ledger_entries(app_db, handle.id)}
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()


@SQLITE
async def test_a_paused_case_stays_paused_and_keeps_its_time(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    v1, v2 = pinned(document()), pinned(document(p2_first_response="90m"), version=2)
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    monday = next_weekday_at(await workflow_env.get_current_time(), 0, 9, 0)
    async with escalation_worker(workflow_env, app_db) as queue:
        await skip_to(workflow_env, monday)
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, monday, priority="p2"), policy=v1),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        await skip_to(workflow_env, monday + timedelta(hours=1))
        await handle.execute_update(EscalationWorkflow.pause, Pause(by="ana"))
        await skip_to(workflow_env, monday + timedelta(hours=2))
        migrated = await handle.execute_update(
            EscalationWorkflow.migrate, Migrate(policy=v2, by="bo")
        )
        assert migrated.state == "paused"
        clock = migrated.clocks["first_response"]
        assert clock.running_since is None and clock.budget == timedelta(minutes=90)
        assert clock.spent_before == about(timedelta(hours=1))  # the pause did not count
        assert (await settled(handle)).clocks["first_response"].due is None
        resumed_at = monday + timedelta(hours=3)
        await skip_to(workflow_env, resumed_at)
        await handle.execute_update(EscalationWorkflow.resume, Resume(by="bo"))
        state = await settled(handle)
        due = state.clocks["first_response"].due
        assert due == about_at(resumed_at + timedelta(minutes=30))
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()


@SQLITE
async def test_a_migrated_case_continues_as_new_on_the_new_version(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    # v2 gives P3 a 2-day resolution: only a run that follows v2 knows it.
    v1, v2 = pinned(document()), pinned(document(p3_resolution="2d"), version=2)
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    monday = next_weekday_at(await workflow_env.get_current_time(), 0, 9, 0)
    async with escalation_worker(workflow_env, app_db) as queue:
        await skip_to(workflow_env, monday)
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(
                case=case(ticket, monday, priority="p2"), policy=v1, max_history_events=40
            ),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        first_run = handle.result_run_id
        await settled(handle)
        await handle.execute_update(EscalationWorkflow.migrate, Migrate(policy=v2, by="ana"))
        # Commands grow the history until the run continues as new, state carried.
        for minutes in range(1, 30):
            if (await handle.describe()).run_id != first_run:
                break
            await skip_to(workflow_env, monday + timedelta(minutes=minutes))
            await _again_on_timeout(handle, EscalationWorkflow.pause, Pause(by="ana"), minutes)
            await _again_on_timeout(handle, EscalationWorkflow.resume, Resume(by="ana"), minutes)
            await settled(handle)
        assert (await handle.describe()).run_id != first_run, "the case did not continue as new"
        state = await settled(handle)
        assert state.definition == "test-policy@2"
        changed = await handle.execute_update(
            EscalationWorkflow.set_priority, SetPriority(priority="p3", by="ana")
        )
        assert changed.clocks["resolution"].budget == timedelta(days=2)  # v2's, not v1's 1d
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()


async def test_the_pacer_spaces_updates_evenly() -> None:
    moments: list[float] = []
    now = [100.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    pacer = MigrationPacer(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        await pacer.wait()
        moments.append(now[0])
    assert moments == [100.0, 100.25, 100.5, 100.75, 101.0]
    now[0] += 10  # a slow stretch (reading cases) is not made up for with a burst
    await pacer.wait()
    await pacer.wait()
    assert now[0] == 111.25


def test_what_a_migration_refuses() -> None:
    """The validator's reasons (and the dry run's), on the state alone."""
    opened = next_weekday_at(datetime(2026, 12, 1, tzinfo=UTC), 0, 9, 0)
    status = EscalationState(case=case("T-1", opened, priority="p2"), definition="test-policy@1")
    v2 = pinned(document(p2_first_response="90m"), version=2)
    assert migration_refusal(status, v2) is None
    onboarding_only = pinned(
        document(
            slas=[
                {"priority": "p1", "first_response": "1h", "resolution": "4h"},
                {
                    "priority": "p2",
                    "stage": "onboarding",
                    "first_response": "1h",
                    "resolution": "8h",
                },
                {"priority": "p3", "first_response": "4h", "resolution": "1d"},
            ]
        ),
        version=3,
    )
    assert migration_refusal(status, onboarding_only) == (
        "test-policy@3 has no SLA for p2 at stage support"
    )
    resolved = status.model_copy(update={"state": "resolved"})
    assert migration_refusal(resolved, v2) == "case T-1 is already resolved"


async def _again_on_timeout(
    handle: WorkflowHandle[Any, Any], update: Any, command: Any, minute: int
) -> None:
    """An update sent again, with the same id, when its answer timed out: under load one may
    reach the run while it continues as new (the id makes the second the same command)."""
    key = f"{update.__name__}-{minute}"
    for attempt in range(3):
        try:
            await handle.execute_update(update, command, id=key)
            return
        except RPCError as exc:
            if attempt == 2 or not answer_timed_out(exc):
                raise
