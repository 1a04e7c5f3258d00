"""The escalation workflow on the time-skipping server, with the real activities on the
sandbox backends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from client.cases import CaseCommandRefused, command_case, open_case
from store.models import SandboxCrmNote, SandboxNotification, SandboxTicket
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import (
    BERLIN,
    about,
    about_at,
    add_ticket,
    case,
    escalation_worker,
    keep_history,
    ledger_entries,
    ledger_steps,
    new_ticket_id,
    next_weekday_at,
    policy_document,
    settled,
    skip_to,
    start_case,
)
from tests.helpers import NEWEST_RELEASE, patches_taken
from workflows.escalation import (
    Acknowledge,
    EscalationInput,
    EscalationWorkflow,
    Pause,
    Resolve,
    SetPriority,
    case_workflow_id,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_p1_walks_every_level_repeats_and_breaches_once(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    policy = pinned(policy_document())
    async with escalation_worker(workflow_env, app_db) as queue:
        opened_at = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, opened_at), policy=policy),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        await workflow_env.sleep(timedelta(minutes=65))
        state = await handle.query(EscalationWorkflow.state)

        assert [(v.level, v.cycle) for v in state.visits] == [
            (1, 0),
            (2, 0),
            (3, 0),
            (1, 1),
            (2, 1),
            (3, 1),
        ]
        # Each level fired at its `after` on the clock, the second cycle one period later.
        starts = [v.started_at - opened_at for v in state.visits]
        assert starts == [timedelta(minutes=m) for m in (10, 20, 30, 40, 50, 60)]
        assert state.levels_fired == 6
        assert state.queue == "tier-2"
        first_response = state.clocks["first_response"]
        assert first_response.breached_at == opened_at + timedelta(hours=1)
        assert first_response.warned_at == [50]

        steps = await ledger_steps(app_db, handle.id)
        assert steps.count("breach-first_response") == 1
        assert steps.count("warn-first_response-50") == 1
        assert [s for s in steps if s.startswith("level-")] == [
            "level-1-cycle-0",
            "level-2-cycle-0",
            "level-3-cycle-0",
            "level-1-cycle-1",
            "level-2-cycle-1",
            "level-3-cycle-1",
        ]
        async with app_db.sessions() as session:
            escalated = await session.scalar(
                select(func.count())
                .select_from(SandboxNotification)
                .where(SandboxNotification.template == "case-escalated")
            )
            assigned = await session.get(SandboxTicket, ticket)
            notes = (
                await session.scalars(
                    select(SandboxCrmNote.body).where(SandboxCrmNote.customer_id == "C-0001")
                )
            ).all()
        # Levels 1 and 3 notify, in both cycles.
        assert escalated is not None and escalated >= 4
        assert assigned is not None and assigned.queue == "tier-2"
        assert f"Case {ticket} missed its first_response target." in notes

        breach = next(
            e for e in await ledger_entries(app_db, handle.id) if e.step == "breach-first_response"
        )
        event = breach.detail["event"]
        assert event["ticket_id"] == ticket and event["sla"] == "first_response"

        summary_state = await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        assert summary_state.state == "resolved"
        summary = await handle.result()
        await keep_history(handle, "escalation-one-timer-per-deadline")
        # Actions finishing wake the loop; it keeps the timer of the deadline still next
        # instead of cancelling it and starting another for the same moment.
        history = await handle.fetch_history()
        kinds = [e.event_type for e in history.events]
        started = kinds.count(EventType.EVENT_TYPE_TIMER_STARTED)
        assert kinds.count(EventType.EVENT_TYPE_TIMER_CANCELED) == 0
        # every timer fired but the one pending when the case was resolved
        assert started - kinds.count(EventType.EVENT_TYPE_TIMER_FIRED) <= 1
        # A new case takes every change under its release's one marker.
        assert patches_taken(history) == [NEWEST_RELEASE]
    first = next(s for s in summary.slas if s.name == "first_response")
    assert first.breached and not first.met
    assert first.margin < timedelta(0)
    assert set(summary.time_at_level) == {"level 1", "level 2", "level 3"}


async def test_acknowledgement_stops_escalation_and_meets_first_response(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    async with escalation_worker(workflow_env, app_db) as queue:
        handle = await start_case(workflow_env, queue, ticket)
        await workflow_env.sleep(timedelta(minutes=12))
        await handle.execute_update(EscalationWorkflow.acknowledge, Acknowledge(by="ana"))
        await workflow_env.sleep(timedelta(hours=2))
        state = await handle.query(EscalationWorkflow.state)
        assert state.levels_fired == 1
        assert state.state == "acknowledged"
        assert state.acknowledged_by == "ana"
        first_response = state.clocks["first_response"]
        assert first_response.met_at is not None and first_response.breached_at is None
        assert first_response.spent_before == about(timedelta(minutes=12))
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        summary = await handle.result()
        await keep_history(handle, "escalation-acknowledged")
    assert summary.acknowledged_by == "ana"
    first = next(s for s in summary.slas if s.name == "first_response")
    assert first.met and first.margin == about(timedelta(minutes=48))
    resolution = next(s for s in summary.slas if s.name == "resolution")
    assert resolution.met and resolution.spent == about(timedelta(hours=2, minutes=12))
    assert "breach-first_response" not in await ledger_steps(app_db, handle.id)


async def test_pause_and_resume_across_night_weekend_and_holiday_keep_the_budget_exact(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    now = await workflow_env.get_current_time()
    friday = next_weekday_at(now, 4, 16, 30)
    monday = (friday + timedelta(days=3)).date()
    tuesday = (friday + timedelta(days=4)).replace(minute=0)
    document = policy_document(
        calendar={
            "timezone": "Europe/Berlin",
            "hours": {"mon-fri": "09:00-17:00"},
            "holidays": {"dates": [monday.isoformat()]},
        },
        warn_at=[],
        on_warning=[],
    )
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    async with escalation_worker(workflow_env, app_db) as queue:
        await skip_to(workflow_env, friday)
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, friday, priority="p2"), policy=pinned(document)),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        # Friday 16:30-17:00 counts; the night, the weekend and the Monday holiday do not.
        await skip_to(workflow_env, tuesday.replace(hour=9, minute=30))
        state = await handle.query(EscalationWorkflow.state)
        assert state.visits[0].started_at.astimezone(BERLIN) == friday.replace(hour=16, minute=40)
        await handle.execute_update(EscalationWorkflow.pause, Pause(reason="waiting on customer"))
        paused = (await handle.query(EscalationWorkflow.state)).clocks["first_response"]
        assert paused.spent_before == about(timedelta(hours=1))  # 30 min Friday + 30 min Tuesday
        assert not paused.running

        await skip_to(workflow_env, tuesday.replace(hour=11))
        resumed = await handle.execute_update(EscalationWorkflow.resume)
        clock = resumed.clocks["first_response"]
        assert clock.spent_before == paused.spent_before  # nothing counted while paused
        assert clock.running_since == about_at(tuesday.replace(hour=11))

        # The hour left runs out at 12:00 exactly.
        await skip_to(workflow_env, tuesday.replace(hour=12, minute=5))
        state = await handle.query(EscalationWorkflow.state)
        breached_at = state.clocks["first_response"].breached_at
        assert breached_at is not None
        # Exactly the budget that was left when it paused, counted from the resume.
        assert breached_at == clock.running_since + (timedelta(hours=2) - clock.spent_before)
        assert breached_at == about_at(tuesday.replace(hour=12))
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
        await keep_history(handle, "escalation-pause-business-calendar")


async def test_priority_change_recomputes_counting_time_spent(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    async with escalation_worker(workflow_env, app_db) as queue:
        opened_at = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(
                case=case(ticket, opened_at, priority="p3"), policy=pinned(policy_document())
            ),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        await workflow_env.sleep(timedelta(minutes=5))
        await handle.execute_update(EscalationWorkflow.acknowledge, Acknowledge(by="ana"))
        await workflow_env.sleep(timedelta(minutes=55))
        state = await handle.execute_update(
            EscalationWorkflow.set_priority, SetPriority(priority="p2")
        )
        resolution = state.clocks["resolution"]
        assert state.case.priority == "p2"
        assert resolution.budget == timedelta(hours=8)
        assert resolution.spent_before == about(timedelta(hours=1))  # the hour spent counts
        await workflow_env.sleep(timedelta(hours=7, minutes=1))
        state = await handle.query(EscalationWorkflow.state)
        assert state.clocks["resolution"].breached_at == about_at(opened_at + timedelta(hours=8))
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()
        await keep_history(handle, "escalation-priority-change")
    assert (await ledger_steps(app_db, handle.id)).count("breach-resolution") == 1


async def test_invalid_updates_are_refused_and_change_nothing(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    async with escalation_worker(workflow_env, app_db) as queue:
        opened_at = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(
                case=case(ticket, opened_at, priority="p2"), policy=pinned(policy_document())
            ),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        await handle.execute_update(EscalationWorkflow.acknowledge, Acknowledge(by="ana"))
        before = (await settled(handle)).model_dump()
        refusals = [
            (EscalationWorkflow.resume, None, "not paused"),
            (EscalationWorkflow.set_priority, SetPriority(priority="p9"), "unknown priority 'p9'"),
            (EscalationWorkflow.set_priority, SetPriority(priority="p4"), "no SLA for p4"),
            (EscalationWorkflow.set_priority, SetPriority(priority="p2"), "already p2"),
            (
                EscalationWorkflow.acknowledge,
                Acknowledge(by="bernd"),
                "already acknowledged by ana",
            ),
        ]
        for update, argument, reason in refusals:
            with pytest.raises(CaseCommandRefused) as refused:
                await command_case(workflow_env.client, ticket, update, argument)
            assert reason in str(refused.value), (update, refused.value)
        assert (await settled(handle)).model_dump() == before

        await command_case(
            workflow_env.client, ticket, EscalationWorkflow.resolve, Resolve(by="ana")
        )
        await handle.result()
        with pytest.raises(CaseCommandRefused, match=f"case {ticket} is already resolved"):
            await command_case(workflow_env.client, ticket, "resolve", Resolve(by="ana"))
        with pytest.raises(CaseCommandRefused, match="there is no case for ticket T-nope"):
            await command_case(workflow_env.client, "T-nope", "resume")


async def test_opening_the_same_ticket_twice_starts_one_case(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    policy = pinned(policy_document())
    async with escalation_worker(workflow_env, app_db) as queue:
        opened_at = await workflow_env.get_current_time()
        first = await open_case(workflow_env.client, queue, case(ticket, opened_at), policy)
        again = await open_case(workflow_env.client, queue, case(ticket, opened_at), policy)
        assert first.started and not again.started
        assert again.handle.id == first.handle.id == f"case-{ticket}"
        assert (await again.handle.describe()).run_id == first.handle.result_run_id
        await first.handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await first.handle.result()
        # A resolved case is not reopened by a late duplicate "ticket created".
        late = await open_case(workflow_env.client, queue, case(ticket, opened_at), policy)
        assert not late.started
    assert (await ledger_steps(app_db, f"case-{ticket}")).count("opened") == 1


async def test_a_level_raising_priority_beyond_the_policy_keeps_the_clocks(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    document = policy_document(
        priorities=["p2"],
        slas=[{"priority": "p2", "first_response": "2h", "resolution": "8h"}],
        warn_at=[],
        on_warning=[],
        levels=[{"after": "10m", "actions": [{"type": "set_priority", "priority": "raise"}]}],
        repeat=0,
    )
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    async with escalation_worker(workflow_env, app_db) as queue:
        opened_at = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(case=case(ticket, opened_at, priority="p2"), policy=pinned(document)),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        await workflow_env.sleep(timedelta(minutes=15))
        state = await handle.query(EscalationWorkflow.state)
        assert state.levels_fired == 1
        assert state.case.priority == "p1"
        assert state.clocks["first_response"].budget == timedelta(hours=2)
        async with app_db.sessions() as session:
            ticket_row = await session.get(SandboxTicket, ticket)
        assert ticket_row is not None and ticket_row.priority == "p1"
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await handle.result()


async def test_continue_as_new_carries_the_case_whole(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    document = policy_document(
        slas=[
            {"priority": "p1", "first_response": "2h", "resolution": "8h"},
            {"priority": "p2", "first_response": "2h", "resolution": "8h"},
            {"priority": "p3", "first_response": "2h", "resolution": "8h"},
        ],
        warn_at=[],
        on_warning=[],
        levels=[
            {"after": "5m", "actions": [{"type": "assign", "queue": "tier-2"}]},
            {"after": "10m", "actions": [{"type": "assign", "queue": "support"}]},
        ],
        repeat=10,
    )
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket)
    async with escalation_worker(workflow_env, app_db) as queue:
        opened_at = await workflow_env.get_current_time()
        handle = await workflow_env.client.start_workflow(
            EscalationWorkflow.run,
            EscalationInput(
                case=case(ticket, opened_at), policy=pinned(document), max_history_events=40
            ),
            id=case_workflow_id(ticket),
            task_queue=queue,
        )
        first_run = handle.result_run_id
        await workflow_env.sleep(timedelta(minutes=61))
        state = await handle.query(EscalationWorkflow.state)
        # Twelve levels fired across runs, each exactly on time; the clocks kept counting.
        assert state.levels_fired == 12
        starts = [v.started_at - opened_at for v in state.visits]
        assert starts == [timedelta(minutes=5 * n) for n in range(1, 13)]
        assert state.clocks["first_response"].running_since == opened_at
        assert (await handle.describe()).run_id != first_run
        await handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        summary = await handle.result()
    assert summary.time_at_level.keys() == {"level 1", "level 2"}
    steps = await ledger_steps(app_db, handle.id)
    assert steps.count("opened") == 1
    assert len([s for s in steps if s.startswith("level-")]) == 12
