"""The recovery workflow on the time-skipping server, with the real activities on the sandbox
backends and the catalog's rule set."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from store.models import SandboxNotification
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.escalation_support import current_details, keep_history, ledger_steps
from tests.helpers import NEWEST_RELEASE, patches_taken
from tests.recovery_support import (
    catalog_document,
    contact,
    credits_of,
    deploy_document,
    event,
    recovery_worker,
    refusal,
    sandbox_counts,
    send,
    settle,
    survey,
    variant,
    view,
)
from workflows.recovery import RecoveryWorkflow
from workflows.recovery_model import Approve, CloseEpisode, Reject, SilenceCommand, Unsilence

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

LOW_CSAT = "service-recovery/low-csat"
REPEAT = "service-recovery/repeat-contacts"
SLA = "service-recovery/sla-breached"


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


async def test_low_csat_acts_once_and_a_redelivered_survey_does_nothing(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0001"
    rules = [pinned(catalog_document())]
    async with recovery_worker(workflow_env, app_db) as queue:
        before = await sandbox_counts(app_db, customer, f"customer-{customer}")
        low = survey(customer, 1, event_id="s-1")
        handle = await send(workflow_env, queue, customer, low, rules)
        state = await settle(workflow_env, handle)
        # The same event again (a sender retry) and the same failure from another survey id
        # would each be ignored; a repeat of the event id is not even counted.
        await send(workflow_env, queue, customer, low, rules)
        state = await settle(workflow_env, handle)
        counts = _delta(await sandbox_counts(app_db, customer, handle.id), before)
        assert counts["apologies"] == 1
        assert counts["tickets"] == 1
        assert state.state.events_seen == 1
        assert state.state.tally[LOW_CSAT] == {"fired": 1}
        decision = state.state.decisions[-1]
        assert decision.ref == "service-recovery@1"
        assert decision.episode == 1
        assert state.ops_state == "watching"
        assert "episode 1" in state.details
        steps = await ledger_steps(app_db, handle.id)
        assert any(step.endswith("-fired") for step in steps)
        await keep_history(handle, "recovery-low-csat")


async def test_three_contacts_within_seven_days_trigger_two_do_not_and_late_third_does_not(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    rules = [pinned(catalog_document())]
    async with recovery_worker(workflow_env, app_db) as queue:
        # Two contacts, then the third after the window: nothing.
        late = "C-0002"
        handle = await send(workflow_env, queue, late, contact(late), rules)
        await workflow_env.sleep(timedelta(days=2))
        await send(workflow_env, queue, late, contact(late), rules)
        await workflow_env.sleep(timedelta(days=6))
        await send(workflow_env, queue, late, contact(late), rules)
        state = await settle(workflow_env, handle)
        assert REPEAT not in state.state.tally
        assert len(state.state.windows[REPEAT]) == 2  # day 2 and day 8 are in the window

        # Three within the week: the callback and the CRM note, once.
        customer = "C-0003"
        before = await sandbox_counts(app_db, customer, f"customer-{customer}")
        handle = await send(workflow_env, queue, customer, contact(customer), rules)
        await workflow_env.sleep(timedelta(days=3))
        await send(workflow_env, queue, customer, contact(customer), rules)
        state = await settle(workflow_env, handle)
        assert REPEAT not in state.state.tally
        await workflow_env.sleep(timedelta(days=3))
        await send(workflow_env, queue, customer, contact(customer), rules)
        state = await settle(workflow_env, handle)
        assert state.state.tally[REPEAT] == {"fired": 1}
        counts = _delta(await sandbox_counts(app_db, customer, handle.id), before)
        assert counts["tickets"] == 1  # the callback
        assert counts["notes"] == 1


async def test_cap_inhibition_cooldown_and_silence_each_suppress_with_the_reason(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    rules = [pinned(catalog_document())]
    customer = "C-0004"
    async with recovery_worker(workflow_env, app_db) as queue:
        before = await sandbox_counts(app_db, customer, f"customer-{customer}")
        handle = await send(workflow_env, queue, customer, survey(customer, 2), rules)
        await settle(workflow_env, handle)
        # Same severity, another rule: acts, but the apology is capped (1 per 7 days).
        breach = event(
            "sla.breached",
            {
                "ticket_id": "T-9",
                "customer_id": customer,
                "sla": "first_response",
                "priority": "p2",
                "stage": "support",
                "budget_seconds": 3600,
                "breached_at": "2026-01-05T10:00:00Z",
                "policy": "support@1",
            },
        )
        await send(workflow_env, queue, customer, breach, rules)
        state = await settle(workflow_env, handle)
        sla_decision = [d for d in state.state.decisions if d.rule == SLA][-1]
        assert sla_decision.outcome == "fired"
        assert sla_decision.capped and "cap apology: 1 per 7 days" in sla_decision.capped[0]
        counts = _delta(await sandbox_counts(app_db, customer, handle.id), before)
        assert counts["apologies"] == 1
        assert counts["notes"] == 1  # the breach's CRM note still went out

        # Lower severity while the episode is open: inhibited, only added to the episode.
        for _ in range(3):
            await send(workflow_env, queue, customer, contact(customer), rules)
        state = await settle(workflow_env, handle)
        inhibited = [d for d in state.state.suppressed if d.suppressed_by == "inhibition"]
        assert inhibited and "episode 1 is open (severity 2)" in (inhibited[-1].reason or "")
        assert state.state.tally[REPEAT] == {"inhibition": 1}

        # The episode closes; the sla rule triggers again within its 1-day cooldown.
        await handle.execute_update(
            RecoveryWorkflow.close_episode, CloseEpisode(by="lead-ana", outcome="recovered")
        )
        again = breach.model_copy(
            update={"id": "other", "data": {**breach.data, "ticket_id": "T-10"}}
        )
        await send(workflow_env, queue, customer, again, rules)
        state = await settle(workflow_env, handle)
        cooldown = [d for d in state.state.suppressed if d.suppressed_by == "cooldown"]
        assert cooldown and cooldown[-1].rule == SLA
        assert "cooling down until" in (cooldown[-1].reason or "")

        # Silence the customer: another low CSAT is suppressed by the silence.
        until = await workflow_env.get_current_time() + timedelta(days=1)
        await handle.execute_update(
            RecoveryWorkflow.silence,
            SilenceCommand(by="lead-ana", until=until, reason="talking to them"),
        )
        state = await view(handle)
        assert state.ops_state == "silenced"
        await send(workflow_env, queue, customer, survey(customer, 1), rules)
        state = await settle(workflow_env, handle)
        silenced = state.state.suppressed[-1]
        assert silenced.suppressed_by == "silence"
        assert "silenced by lead-ana" in (silenced.reason or "")
        await handle.execute_update(RecoveryWorkflow.unsilence, Unsilence(by="lead-ana"))
        assert "not silenced" in await refusal(
            handle.execute_update(RecoveryWorkflow.unsilence, Unsilence(by="lead-ana"))
        )
        steps = await ledger_steps(app_db, handle.id)
        assert any(step.endswith("-suppressed") for step in steps)
        await keep_history(handle, "recovery-suppression")


async def _credit_pending(
    env: WorkflowEnvironment, queue: str, customer: str, document: dict[str, object]
) -> WorkflowHandle[Any, Any]:
    """Three low CSATs in one episode: apology+ticket, callback, then the 80 EUR credit."""
    rules = [pinned(document)]
    handle = await send(env, queue, customer, survey(customer, 1), rules)
    for _ in range(2):
        await env.sleep(timedelta(hours=2))
        await send(env, queue, customer, survey(customer, 2), rules)
    state = await settle(env, handle)
    assert [d.outcome for d in state.state.decisions] == ["fired", "laddered", "laddered"]
    assert state.state.decisions[-1].gated == ["credit 80 EUR"]
    assert state.ops_state == "awaiting_approval"
    assert "awaiting approval of a 80 EUR credit by cx-leads" in state.details
    return handle


async def test_credit_approved_and_the_requester_cannot_approve(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0005"
    document = variant(
        rule__low_csat={
            "approval": {
                "approvers": "cx-leads",
                "members": ["lead-ana", "lead-bo"],
                "timeout": "4h",
                "on_timeout": "approve_reduced",
                "reduced_amount": 50,
            }
        }
    )
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await _credit_pending(workflow_env, queue, customer, document)
        assert hasattr(handle, "execute_update")
        assert "requested this credit" in await refusal(
            handle.execute_update(RecoveryWorkflow.approve, Approve(by="customer-experience"))
        )
        assert "not in the approver group" in await refusal(
            handle.execute_update(RecoveryWorkflow.approve, Approve(by="mallory"))
        )
        # Other rules keep working while the gate waits.
        breach_rules = [pinned(document)]
        await send(workflow_env, queue, customer, contact(customer), breach_rules)
        state = await settle(workflow_env, handle)
        assert state.state.events_seen == 4
        result = await handle.execute_update(RecoveryWorkflow.approve, Approve(by="lead-ana"))
        assert result.state.approvals[0].status == "approved"
        assert await credits_of(app_db, customer) == ["80.00 EUR"]
        await keep_history(handle, "recovery-approval")


async def test_credit_rejected(workflow_env: WorkflowEnvironment, app_db: AppDb) -> None:
    customer = "C-0006"
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await _credit_pending(workflow_env, queue, customer, catalog_document())
        result = await handle.execute_update(
            RecoveryWorkflow.reject, Reject(by="lead-bo", reason="already refunded")
        )
        assert result.state.approvals[0].status == "rejected"
        assert result.ops_state == "watching"
        await workflow_env.sleep(timedelta(hours=5))
        assert await credits_of(app_db, customer) == []


async def test_credit_timeout_approves_the_reduced_amount(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0007"
    # Only a definition that says so pays without a human (the catalog does not).
    document = variant(
        rule__low_csat={
            "approval": {
                "approvers": "cx-leads",
                "timeout": "4h",
                "on_timeout": "approve_reduced",
                "reduced_amount": 50,
            }
        }
    )
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await _credit_pending(workflow_env, queue, customer, document)
        await workflow_env.sleep(timedelta(hours=4, minutes=1))
        state = await view(handle)
        approval = state.state.approvals[0]
        assert approval.status == "approved_reduced"
        assert approval.decided_by == "timeout"
        assert approval.applied_amount == Decimal("50")
        assert await credits_of(app_db, customer) == ["50.00 EUR"]


async def test_credit_timeout_escalates_then_skips(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0008"
    document = variant(
        rule__low_csat={
            "approval": {
                "approvers": "cx-leads",
                "timeout": "4h",
                "on_timeout": "escalate",
                "escalate_to": "cx-directors",
            }
        }
    )
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await _credit_pending(workflow_env, queue, customer, document)
        await workflow_env.sleep(timedelta(hours=4, minutes=1))
        state = await view(handle)
        assert state.state.approvals[0].group == "cx-directors"
        assert state.state.approvals[0].status == "waiting"
        await workflow_env.sleep(timedelta(hours=4, minutes=1))
        state = await view(handle)
        assert state.state.approvals[0].status == "skipped"
        assert await credits_of(app_db, customer) == []


async def test_shadow_mode_acts_on_nothing(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0009"
    rules = [pinned(variant(mode="shadow"))]
    async with recovery_worker(workflow_env, app_db) as queue:
        before = await sandbox_counts(app_db, customer, f"customer-{customer}")
        handle = await send(workflow_env, queue, customer, survey(customer, 1), rules)
        state = await settle(workflow_env, handle)
        assert state.state.tally[LOW_CSAT] == {"shadow": 1}
        decision = state.state.decisions[-1]
        assert decision.reason == "shadow mode: would have acted"
        assert "notify apology to customer" in decision.actions
        assert state.state.open_episode() is None
        after = await sandbox_counts(app_db, customer, handle.id)
        assert _delta(after, before) == {k: 0 for k in before}


async def test_continue_as_new_keeps_windows_and_cooldowns_exact(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0010"
    rules = [pinned(catalog_document())]
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await send(
            workflow_env, queue, customer, contact(customer), rules, max_history_events=100
        )
        await settle(workflow_env, handle)
        first_run = (await handle.describe()).run_id
        # Enough unrelated events to pass the history limit several times over.
        for n in range(60):
            sentiment = event("sentiment.scored", {"customer_id": customer, "score": 0.5})
            await send(workflow_env, queue, customer, sentiment, rules, max_history_events=100)
            if n == 30:
                await workflow_env.sleep(timedelta(days=1))
        state = await settle(workflow_env, handle)
        assert (await handle.describe()).run_id != first_run
        assert len(state.state.windows[REPEAT]) == 1
        await send(workflow_env, queue, customer, contact(customer), rules)
        await workflow_env.sleep(timedelta(days=5))
        await send(workflow_env, queue, customer, contact(customer), rules)
        state = await settle(workflow_env, handle)
        assert state.state.tally[REPEAT] == {"fired": 1}
        assert state.state.events_seen == 63
        cooldown = state.state.cooldowns[REPEAT]
        fired_at = state.state.decisions[-1].at
        assert cooldown == fired_at + timedelta(days=7)


async def test_stall_timer_fires_on_business_days(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0011"
    rules = [pinned(catalog_document())]
    async with recovery_worker(workflow_env, app_db) as queue:
        now = await workflow_env.get_current_time()
        stage = event(
            "journey.stage_changed",
            {"customer_id": customer, "from_stage": "trial", "to_stage": "onboarding"},
        )
        handle = await send(workflow_env, queue, customer, stage, rules)
        state = await settle(workflow_env, handle)
        watch = state.state.stalls["service-recovery/onboarding-stalled"]
        calendar = rules[0].recovery.calendar
        # Five business days after the stage began, same local time, on the Berlin calendar:
        # weekends and German holidays do not count; a time out of hours moves to the next
        # opening, so the stall falls due in business hours (the calendar's rule).
        assert watch.due == calendar.business_days_after(watch.since, timedelta(days=5))
        assert calendar.is_open(watch.due)
        since, due = calendar.local_time(watch.since), calendar.local_time(watch.due)
        days = [
            since.date() + timedelta(days=n) for n in range(1, (due.date() - since.date()).days + 1)
        ]
        assert sum(1 for day in days if calendar.open_intervals(day)) in (5, 6)
        # Five working days span a weekend unless the stage began on one.
        began_on_weekend = not calendar.open_intervals(since.date())
        # Counted in local days: across a DST change the UTC difference is an hour off.
        assert (due.date() - calendar.local_time(now).date()).days >= (6 if began_on_weekend else 7)
        await workflow_env.sleep(watch.due - now - timedelta(minutes=5))
        state = await view(handle)
        assert "service-recovery/onboarding-stalled" not in state.state.tally
        await workflow_env.sleep(timedelta(minutes=10))
        state = await view(handle)
        assert state.state.tally["service-recovery/onboarding-stalled"] == {"fired": 1}
        assert state.state.decisions[-1].event_type == "journey.stalled"


async def test_follow_up_survey_closes_the_episode_as_recovered(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0012"
    rules = [pinned(catalog_document())]
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await send(workflow_env, queue, customer, survey(customer, 1), rules)
        await workflow_env.sleep(timedelta(days=3, minutes=1))
        state = await view(handle)
        episode = state.state.episodes[0]
        assert episode.follow_up_sent_at is not None
        await send(workflow_env, queue, customer, survey(customer, 5), rules)
        state = await settle(workflow_env, handle)
        episode = state.state.episodes[0]
        assert (episode.status, episode.score) == ("recovered", 5)
        steps = await ledger_steps(app_db, handle.id)
        assert "episode-1-follow-up" in steps
        assert "episode-1-recovered" in steps


async def test_newer_rules_apply_from_the_next_event(
    workflow_env: WorkflowEnvironment, app_db: AppDb, tmp_path: Path
) -> None:
    """Each signal carries the digest of the deployed rule sets; a run whose own differ loads
    the named versions from the registry once and decides with them from that event on."""
    customer = "C-0013"
    v1 = await deploy_document(app_db, tmp_path, catalog_document())
    async with recovery_worker(workflow_env, app_db) as queue:
        # a contact keeps the run open (its window); a CSAT of 3 is no trigger under v1
        handle = await send(workflow_env, queue, customer, contact(customer), [v1])
        await send(workflow_env, queue, customer, survey(customer, 3), [v1], with_rules="digest")
        state = await settle(workflow_env, handle)
        assert LOW_CSAT not in state.state.tally
        lenient = {"trigger": {"event": "survey.responded", "when": "event.score <= 3"}}
        v2 = await deploy_document(app_db, tmp_path, variant(rule__low_csat=lenient))
        assert v2.version == v1.version + 1
        await send(workflow_env, queue, customer, survey(customer, 3), [v2], with_rules="digest")
        state = await settle(workflow_env, handle)
        assert state.state.rule_sets == [v2.ref]
        assert state.state.decisions[-1].ref == v2.ref
        assert state.state.tally[LOW_CSAT] == {"fired": 1}
        assert "rules-3" in await ledger_steps(app_db, handle.id)

        # the same digest again loads nothing; a digest the registry cannot give keeps the
        # rules the run has and still handles the event
        gone = v2.model_copy(update={"version": 99})
        await send(workflow_env, queue, customer, contact(customer), [gone], with_rules="digest")
        state = await settle(workflow_env, handle)
        assert state.state.rule_sets == [v2.ref]
        assert state.state.events_seen == 4
        await keep_history(handle, "recovery-rules-digest")


async def test_rules_carried_whole_by_earlier_signals_still_switch(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """Runs recorded before the digest carry the rule sets themselves in each signal."""
    customer = "C-0015"
    v1 = [pinned(catalog_document())]
    lenient = {"trigger": {"event": "survey.responded", "when": "event.score <= 3"}}
    v2 = [pinned(variant(rule__low_csat=lenient), version=2)]
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await send(workflow_env, queue, customer, contact(customer), v1)
        await send(workflow_env, queue, customer, survey(customer, 3), v2, with_rules="full")
        state = await settle(workflow_env, handle)
        assert state.state.rule_sets == ["service-recovery@2"]
        assert state.state.decisions[-1].ref == "service-recovery@2"
        assert "rules-2" in await ledger_steps(app_db, handle.id)


async def test_refused_commands_change_nothing(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0014"
    rules = [pinned(catalog_document())]
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await send(workflow_env, queue, customer, contact(customer), rules)
        await settle(workflow_env, handle)
        assert "no approval is waiting" in await refusal(
            handle.execute_update(RecoveryWorkflow.approve, Approve(by="lead-ana"))
        )
        assert "unknown rule" in await refusal(
            handle.execute_update(
                RecoveryWorkflow.silence,
                SilenceCommand(by="a", rule="nope", duration=timedelta(hours=1)),
            )
        )
        past = datetime(2020, 1, 1, tzinfo=UTC)
        assert "not in the future" in await refusal(
            handle.execute_update(RecoveryWorkflow.silence, SilenceCommand(by="a", until=past))
        )
        assert "no open episode" in await refusal(
            handle.execute_update(RecoveryWorkflow.close_episode, CloseEpisode(by="a"))
        )
        state = await view(handle)
        assert state.state.silences == [] and state.state.events_seen == 1


async def _notices(db: AppDb, workflow_id: str) -> list[SandboxNotification]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SandboxNotification)
            .where(
                SandboxNotification.idempotency_key.like(f"{workflow_id}/%"),
                SandboxNotification.template == "credit-approval",
            )
            .order_by(SandboxNotification.id)
        )
        return list(rows)


async def test_approvers_are_told_at_once_reminded_and_two_of_three_must_approve(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0009"
    document = variant(
        rule__low_csat={
            "approval": {
                "approvers": "cx-leads",
                "members": ["lead-ana", "lead-bo", "lead-cy"],
                "required": 2,
                "channel": "email",
                "timeout": "4h",
                "remind_before": "1h",
                "on_timeout": "skip",
            }
        }
    )
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await _credit_pending(workflow_env, queue, customer, document)
        asked = await _notices(app_db, handle.id)
        # At once, to each member, with what, how much, until when and the command.
        assert [n.recipient for n in asked] == ["agent:lead-ana", "agent:lead-bo", "agent:lead-cy"]
        assert {n.channel for n in asked} == {"email"}
        body = asked[0].body
        assert "80 EUR" in body and customer in body and "2 approver" in body
        assert f"opsflow recovery approve {customer} --approval 1 --by <you>" in body
        await workflow_env.sleep(timedelta(hours=3, minutes=1))
        reminded = await _notices(app_db, handle.id)
        assert len(reminded) == 6 and "Reminder" in reminded[-1].body
        first = await handle.execute_update(RecoveryWorkflow.approve, Approve(by="lead-ana"))
        assert first.state.approvals[0].status == "waiting"
        assert await credits_of(app_db, customer) == []
        assert "already approved" in await refusal(
            handle.execute_update(RecoveryWorkflow.approve, Approve(by="lead-ana"))
        )
        done = await handle.execute_update(RecoveryWorkflow.approve, Approve(by="lead-bo"))
        assert done.state.approvals[0].status == "approved"
        assert done.state.approvals[0].approved_by == ["lead-ana", "lead-bo"]
        assert await credits_of(app_db, customer) == ["80.00 EUR"]


async def test_the_catalog_never_pays_a_credit_without_a_human(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    customer = "C-0010"
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await _credit_pending(workflow_env, queue, customer, catalog_document())
        assert len(await _notices(app_db, handle.id)) == 1
        await workflow_env.sleep(timedelta(hours=8, minutes=2))
        state = await view(handle)
        approval = state.state.approvals[0]
        assert approval.status == "skipped" and approval.escalated
        assert await credits_of(app_db, customer) == []
        # Asked, reminded, escalated to the managers (asked, reminded): four notices.
        recipients = [n.recipient for n in await _notices(app_db, handle.id)]
        assert recipients == ["team:cx-leads"] * 2 + ["team:cx-managers"] * 2


async def test_a_run_kept_only_by_its_window_ends_when_the_window_expires(
    workflow_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    """One contact opens the repeat-contact window (7 days) and nothing else: the run does
    not wait for the customer's next event but ends when the window expires, leaving its
    state for the next run, which still counts the contacts within the week before it."""
    customer = "C-0016"
    rules = [pinned(catalog_document())]
    async with recovery_worker(workflow_env, app_db) as queue:
        handle = await send(workflow_env, queue, customer, contact(customer), rules)
        state = await settle(workflow_env, handle)
        assert list(state.state.windows) == [REPEAT]
        expires = state.state.windows[REPEAT][0] + timedelta(days=7)
        # The UI's line says when the run ends (the expiry, in the rules' calendar).
        ends = r"; ends \w{3} \d{2} \w{3} \d{2}:\d{2} \S+ unless another event comes$"
        assert re.search(ends, await current_details(handle))
        summary = await handle.result()  # the time-skipping server jumps to the next timer
        assert summary.events_seen == 1
        ended = await handle.describe()
        ended_at = ended.close_time
        assert ended_at is not None
        assert expires <= ended_at < expires + timedelta(minutes=1)
        assert any(s.startswith("run-ended-") for s in await ledger_steps(app_db, handle.id))
        await keep_history(handle, "recovery-ends-when-quiet")
        history = await handle.fetch_history()
        assert patches_taken(history) == [NEWEST_RELEASE]
        # A new run reads the last run's state and the CRM profile at once (one task).
        scheduled = [
            (n, e.activity_task_scheduled_event_attributes.activity_type.name)
            for n, e in enumerate(history.events)
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        (recall_at, recall), (profile_at, profile) = scheduled[:2]
        assert (recall, profile) == ("recovery.previous_state", "crm.get_customer")
        assert profile_at == recall_at + 1

        # The next run starts afresh (the expired contact no longer counts) and, kept by its
        # own window, waits again.
        second = await send(workflow_env, queue, customer, contact(customer), rules)
        state = await settle(workflow_env, second)
        assert state.state.events_seen == 2
        assert len(state.state.windows[REPEAT]) == 1
        assert (await second.describe()).run_id != ended.run_id
