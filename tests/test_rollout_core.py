"""The rollout's decisions, without Temporal: what comes next, what a command is refused with,
what a due moment triggers (workflows/rollout_core.py and its topic modules)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from definitions.models import PinnedDefinition, RolloutSpec
from tests.definition_support import pinned
from workflows import (
    rollout_approvals,
    rollout_checks,
    rollout_commands,
    rollout_core,
    rollout_effects,
    rollout_text,
)
from workflows.rollout_model import (
    Approval,
    ChangeRequest,
    Decision,
    Reading,
    Reason,
    RolloutState,
    Verdict,
)
from workflows.rollout_pinned import RolloutInput
from workflows.rollout_text import describe

# A Monday, 10:00 in Berlin: inside the windows below.
MONDAY = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)


def _phase(name: str, percent: float, **extra: Any) -> dict[str, Any]:
    checks = [
        {"metric": "complaint_rate", "max": 0.05, "window": "4h"},
        {"metric": "csat", "min": 3.0, "window": "4h", "on_fail": "hold"},
    ]
    return {"name": name, "cohort": {"percent": percent}, "bake": "2h", "checks": checks, **extra}


def _plan(**overrides: Any) -> PinnedDefinition:
    spec: dict[str, Any] = {
        "change": {"key": "new-billing-flow", "value": "on"},
        "impact": {"risk": "normal"},
        "approvals": {
            "group": "cx-change-board",
            "required": 2,
            "timeout": "4h",
            "reminders": 1,
            "members": ["lena", "marco", "owen"],
        },
        "windows": {"timezone": "Europe/Berlin", "hours": {"mon-thu": "09:00-16:00"}},
        "analysis": {"interval": "30m", "failure_limit": 0, "min_samples": 5},
        "phases": [_phase("pilot", 5), _phase("half", 50), _phase("everyone", 100)],
        "rollback": {},
        "deadline": "30d",
    }
    spec.update(overrides)
    document = {
        "apiVersion": "opsflow/v1",
        "kind": "rollout",
        "metadata": {"name": "test-plan", "owner": "billing-operations"},
        "spec": spec,
    }
    return pinned(document)


def _start(*, outside_windows: bool = False, **overrides: Any) -> tuple[RolloutState, RolloutSpec]:
    plan = _plan(**overrides)
    change = ChangeRequest(
        change_id="CHG-1",
        owner="ana",
        reason="New dispute process",
        outside_windows=outside_windows,
    )
    spec = plan.rollout
    return rollout_core.initial_state(RolloutInput(change=change, plan=plan), spec, MONDAY), spec


def _awaiting_start(**overrides: Any) -> tuple[RolloutState, RolloutSpec]:
    s, spec = _start(**overrides)
    rollout_approvals.impact_assessed(s, spec, [])
    rollout_approvals.request_approval(s, "start", MONDAY, notify=True)
    s.state = "awaiting_approval"
    return s, spec


def _baking(**overrides: Any) -> tuple[RolloutState, RolloutSpec]:
    s, spec = _start(**overrides)
    rollout_core.phase_applied(
        s, spec, 0, newly_exposed=20, total_exposed=20, recorded=True, now=MONDAY
    )
    s.state = "baking"
    rollout_core.sync_clocks(s, MONDAY)
    return s, spec


def _approve(s: RolloutState, approver: str, attempt: int = 1) -> None:
    stage = s.approval_for or "start"
    s.approvals.append(
        Approval(approver=approver, reason="", at=MONDAY, stage=stage, attempt=attempt)
    )


# --- what comes next ----------------------------------------------------------------------


def test_a_decided_rollback_comes_before_anything_the_state_would_do() -> None:
    s, _ = _baking()
    assert rollout_core.next_step(s) == "bake"
    s.promote_full_by = "lena"
    assert rollout_core.next_step(s) == "jump_to_full"
    s.rollback_reason = "check csat failed"
    assert rollout_core.next_step(s) == "begin_rollback"
    s.state = "rolling_back"
    assert rollout_core.next_step(s) == "roll_back"
    s.state, s.rollback_reason = "completed", None
    assert rollout_core.next_step(s) == "finish"


@pytest.mark.parametrize(
    ("risk", "outside_windows", "needed"),
    [
        ("standard", False, 0),
        ("standard", True, 1),
        ("normal", False, 2),
        ("emergency", False, 1),
        ("emergency", True, 1),
    ],
)
def test_the_start_needs_approvals_by_risk_and_always_one_outside_the_windows(
    risk: str, outside_windows: bool, needed: int
) -> None:
    s, spec = _start(outside_windows=outside_windows, impact={"risk": risk})
    detail = rollout_approvals.impact_assessed(s, spec, [])
    assert s.approvals_needed == needed == detail["approvals_needed"]


def test_approvers_are_asked_at_once_reminded_halfway_and_paged_at_the_timeout() -> None:
    s, spec = _awaiting_start()
    move = rollout_approvals.next_approval_move(s, spec, MONDAY)
    assert move.kind == "ask"
    notice = rollout_approvals.approval_notice(s, spec, "start", reminder=False)
    assert notice.step == "approval-start-1" and notice.recipient == "group:cx-change-board"
    assert notice.channel == "chat" and notice.ask["needed"] == 2 and notice.ask["given"] == 0
    assert notice.ask["deadline"] == "Mon 14:00 Europe/Berlin"

    move = rollout_approvals.next_approval_move(s, spec, MONDAY + timedelta(minutes=1))
    assert move.kind == "wait" and move.until == MONDAY + timedelta(hours=2)
    move = rollout_approvals.next_approval_move(s, spec, MONDAY + timedelta(hours=2))
    assert move.kind == "remind"
    rollout_approvals.approval_notice(s, spec, "start", reminder=True)

    move = rollout_approvals.next_approval_move(s, spec, MONDAY + timedelta(hours=3))
    assert move.kind == "wait" and move.until == MONDAY + timedelta(hours=4)
    move = rollout_approvals.next_approval_move(s, spec, MONDAY + timedelta(hours=4))
    assert move.kind == "page" and s.approval_paged
    assert move.attention == "approval for start has waited 4:00:00"
    assert rollout_core.shown_state(s) == "stuck"


def test_the_search_attributes_show_an_overdue_approval_as_stuck_with_its_due_moment() -> None:
    s, spec = _awaiting_start()

    def shown(due_at: bool) -> dict[str, object]:
        attributes = rollout_core.search_attributes(s, spec, due_at=due_at)
        return {u.key.name: u.value for u in attributes.updates}

    assert shown(True)["OpsState"] == "awaiting_approval"
    assert shown(True)["OpsDueAt"] == MONDAY + timedelta(hours=4)
    s.approval_paged = True
    assert shown(True)["OpsState"] == "stuck" and "OpsDueAt" not in shown(True)
    # Runs from before the patch show the state as it is, and no due moment.
    assert shown(False) == {
        "OpsKind": "rollout",
        "OpsOwner": "ana",
        "OpsState": "awaiting_approval",
        "OpsStage": "impact",
        "OpsDefinition": s.plan,
    }


def test_enough_approvals_open_the_start() -> None:
    s, spec = _awaiting_start()
    _approve(s, "lena")
    assert rollout_approvals.next_approval_move(s, spec, MONDAY).kind != "approved"
    _approve(s, "marco")
    move = rollout_approvals.next_approval_move(s, spec, MONDAY)
    assert move.kind == "approved" and move.approvers == ["lena", "marco"]


def test_after_a_retry_the_earlier_attempts_approvals_count_for_nothing() -> None:
    s, spec = _awaiting_start()
    _approve(s, "lena")
    _approve(s, "marco")
    s.state, s.aborted = "rolled_back", True
    assert rollout_commands.retry(s, spec, fresh_approvals=True)
    assert s.attempt == 2 and s.state == "awaiting_approval"
    rollout_approvals.request_approval(s, "start", MONDAY, notify=True)
    assert rollout_approvals.approvals_for(s, "start") == []
    assert "awaiting 2 more approval(s) from cx-change-board for the start" in describe(s, spec)


def test_a_gate_after_a_phase_waits_for_approval_but_the_last_phase_has_none() -> None:
    s, _ = _baking(
        phases=[_phase("pilot", 5, gate="approval"), _phase("all", 100, gate="approval")]
    )
    assert rollout_core.gate_awaiting(s) == "pilot"
    assert not rollout_core.advance(s)
    assert rollout_core.gate_awaiting(s) is None
    assert rollout_core.advance(s) and s.ended_reason == "all 2 phases passed"
    assert s.phase_index == 1


# --- what a command is refused with ---------------------------------------------------------


def test_approvers_are_refused_by_who_they_are() -> None:
    s, spec = _awaiting_start()
    with pytest.raises(ValueError, match="ana owns change CHG-1 and may not approve it"):
        rollout_commands.refuse_approve(s, spec, Decision(approver="ana"))
    with pytest.raises(ValueError, match="eve is not in the approvers' group cx-change-board"):
        rollout_commands.refuse_reject(s, spec, Decision(approver="eve"))
    rollout_commands.approve(s, Decision(approver="lena"), MONDAY)
    with pytest.raises(ValueError, match="lena has already approved this"):
        rollout_commands.refuse_approve(s, spec, Decision(approver="lena"))
    rollout_commands.refuse_approve(s, spec, Decision(approver="marco"))


def test_commands_that_do_not_fit_the_state_are_refused_with_the_state() -> None:
    s, spec = _baking()
    with pytest.raises(ValueError, match="nothing awaits approval: the rollout is baking"):
        rollout_commands.refuse_approve(s, spec, Decision(approver="lena"))
    with pytest.raises(ValueError, match="only an aborted, rolled-back rollout can be retried"):
        rollout_commands.refuse_retry(s)
    rollout_commands.pause(s, Reason(reason="billing run"))
    with pytest.raises(ValueError, match="the rollout is already paused"):
        rollout_commands.refuse_pause(s)
    with pytest.raises(ValueError, match="the rollout is paused: resume it first"):
        rollout_commands.refuse_promote(s)
    s.phase_index = 2
    s.paused = False
    with pytest.raises(ValueError, match="the rollout is already at its last phase"):
        rollout_commands.refuse_promote_full(s, spec, Decision(approver="lena"))
    s.rollback_reason = "check csat failed"
    with pytest.raises(ValueError, match=r"already rolling back \(check csat failed\)"):
        rollout_commands.refuse_abort(s)
    s.finished, s.state = True, "completed"
    with pytest.raises(ValueError, match=r"rollout of CHG-1 is over \(completed\)"):
        rollout_commands.refuse_resume(s)


def test_promote_to_full_is_refused_before_the_start_is_approved() -> None:
    s, spec = _awaiting_start()
    with pytest.raises(ValueError, match="the rollout is not approved yet"):
        rollout_commands.refuse_promote_full(s, spec, Decision(approver="lena"))


def test_abort_of_a_frozen_rollout_accepts_it_as_it_stands() -> None:
    s, _ = _baking()
    s.state = "frozen"
    outcome = rollout_commands.abort(s, Reason(reason="keep it"), MONDAY)
    assert outcome.command == "accept" and s.finished
    assert s.ended_reason == "accepted as it stands: keep it"
    s, _ = _baking()
    outcome = rollout_commands.abort(s, Reason(), MONDAY)
    assert outcome.command == "abort" and s.aborted
    assert s.rollback_reason == "aborted: aborted by the owner"


def test_resume_after_a_hold_at_the_end_of_the_bake_gives_it_one_more_round() -> None:
    s, spec = _baking()
    spent = MONDAY + timedelta(hours=2)
    s.phases[0].readings_taken = 4
    s.phases[0].checks[1].verdict = "failed"
    s.state, s.hold_reason = "held", "check csat failed"
    detail = rollout_commands.resume(s, spec, spent)
    assert detail == {"hold": "check csat failed"} and s.state == "baking"
    assert s.phases[0].bake_total == timedelta(hours=2, minutes=30)
    assert all(c.verdict == "pending" and c.failures == 0 for c in s.phases[0].checks)


# --- what a due moment triggers -------------------------------------------------------------


def test_a_bake_reads_its_checks_every_interval_and_ends_at_its_total() -> None:
    s, spec = _baking()
    move = rollout_checks.next_bake_move(s, spec, MONDAY + timedelta(minutes=10))
    assert move.kind == "wait" and move.until == MONDAY + timedelta(minutes=30)
    assert rollout_checks.next_bake_move(s, spec, MONDAY + timedelta(minutes=30)).kind == "read"
    assert s.phases[0].readings_taken == 1
    s.phases[0].readings_taken = 4
    assert rollout_checks.next_bake_move(s, spec, MONDAY + timedelta(hours=2)).kind == "end"
    s.promote_requested = True
    assert rollout_checks.next_bake_move(s, spec, MONDAY).kind == "promoted"
    assert s.phases[0].verdict == "promoted" and not s.promote_requested


def test_a_paused_bake_waits_for_a_command_and_its_clock_stops() -> None:
    s, spec = _baking()
    s.paused = True
    rollout_core.sync_clocks(s, MONDAY + timedelta(hours=1))
    move = rollout_checks.next_bake_move(s, spec, MONDAY + timedelta(days=2))
    assert move.kind == "wait" and move.until is None
    assert s.phases[0].bake.spent(MONDAY + timedelta(days=2)) == timedelta(hours=1)
    assert rollout_core.next_deadline(s, spec) is None


def _reading(value: float, verdict: Verdict, note: str = "") -> Reading:
    return Reading(at=MONDAY, value=value, sample_size=50, verdict=verdict, note=note)


def test_a_failing_rollback_check_rolls_back_and_a_failing_hold_check_holds() -> None:
    s, spec = _baking()
    s.phases[0].readings_taken = 1
    failed = rollout_checks.record_readings(
        s, spec, [_reading(0.01, "pass"), _reading(2.0, "fail", "2 below min 3")], consecutive=True
    )
    assert failed is not None and failed.rollback_reason is None
    assert failed.hold_reason == "check csat failed in phase pilot: 2 below min 3"
    assert failed.step == "phase-1-reading-1-failed"
    failed = rollout_checks.record_readings(
        s, spec, [_reading(0.09, "fail"), _reading(2.0, "fail")], consecutive=True
    )
    assert failed is not None and failed.hold_reason is None
    assert failed.rollback_reason is not None
    assert failed.rollback_reason.startswith("check complaint_rate failed in phase pilot")


def test_a_reading_is_judged_against_the_threshold_and_the_baseline() -> None:
    spec = _plan(
        phases=[
            {
                "name": "pilot",
                "cohort": {"percent": 5},
                "bake": "2h",
                "checks": [{"metric": "handle_time", "max_increase_pct": 10, "window": "1h"}],
            }
        ]
    ).rollout
    check = spec.phases[0].checks[0]
    reading = rollout_checks.reading_of(check, spec.analysis, MONDAY, (120.0, 50), (100.0, 50))
    assert reading.verdict == "fail" and reading.note == "+20.0% vs baseline, more than +10%"
    reading = rollout_checks.reading_of(check, spec.analysis, MONDAY, (105.0, 50), (100.0, 2))
    assert reading.verdict == "inconclusive" and reading.note == "no usable baseline"
    reading = rollout_checks.reading_of(check, spec.analysis, MONDAY, (105.0, 3), None)
    assert reading.verdict == "inconclusive" and reading.note == "3 samples, fewer than 5"


@pytest.mark.parametrize(("policy", "kind"), [("hold", "hold"), ("fail", "rollback")])
def test_checks_still_unsure_at_the_end_of_a_bake_follow_the_plan(policy: str, kind: str) -> None:
    s, spec = _baking(analysis={"interval": "30m", "min_samples": 5, "inconclusive": policy})
    end = rollout_checks.end_of_bake(s, spec)
    assert end.kind == kind
    assert "checks complaint_rate, csat inconclusive" in end.reason
    assert (s.rollback_reason is not None) == (kind == "rollback")


def test_a_bake_with_passing_checks_passes() -> None:
    s, spec = _baking()
    for check in s.phases[0].checks:
        check.verdict = "passing"
    end = rollout_checks.end_of_bake(s, spec)
    assert end.kind == "passed" and s.phases[0].verdict == "passed"
    assert end.detail == {
        "phase": "pilot",
        "checks": {"complaint_rate": "passing", "csat": "passing"},
    }


def test_a_closed_window_waits_for_its_opening_and_an_emergency_does_not() -> None:
    s, spec = _start()
    s.state = "waiting_window"
    calendar = rollout_core.phase_calendar(spec, outside_windows=False)
    friday_evening = datetime(2025, 6, 6, 18, 0, tzinfo=UTC)
    move = rollout_core.next_window_move(s, calendar, friday_evening)
    # Mon-Thu 09:00-16:00 in Berlin: Monday 07:00 UTC.
    assert not move.apply and move.until == datetime(2025, 6, 9, 7, 0, tzinfo=UTC)
    assert rollout_core.next_deadline(s, spec) == move.until
    s.risk = "emergency"
    assert rollout_core.next_window_move(s, calendar, friday_evening).apply


def test_outside_the_windows_any_time_is_open_but_a_blackout() -> None:
    blackout = {"start": "2025-06-07", "end": "2025-06-08", "reason": "Billing run"}
    _, spec = _start(blackouts=[blackout])
    calendar = rollout_core.phase_calendar(spec, outside_windows=True)
    # Friday 22:00 in Berlin: outside the windows, before the blackout.
    assert calendar.is_open(datetime(2025, 6, 6, 20, 0, tzinfo=UTC))
    assert not rollout_core.phase_calendar(spec, outside_windows=False).is_open(
        datetime(2025, 6, 6, 20, 0, tzinfo=UTC)
    )
    assert not calendar.is_open(datetime(2025, 6, 7, 12, 0, tzinfo=UTC))


def test_the_overall_deadline_counts_active_time_only() -> None:
    s, _ = _baking(deadline="5h")
    rollout_core.note_deadline(s, MONDAY + timedelta(hours=4))
    assert s.rollback_reason is None
    assert rollout_core.wake_at(s, None) == MONDAY + timedelta(hours=5)
    s.paused = True
    rollout_core.sync_clocks(s, MONDAY + timedelta(hours=4))
    rollout_core.note_deadline(s, MONDAY + timedelta(days=2))
    assert s.rollback_reason is None
    s.paused = False
    rollout_core.sync_clocks(s, MONDAY + timedelta(days=2))
    rollout_core.note_deadline(s, MONDAY + timedelta(days=2, hours=1))
    assert s.rollback_reason == "the overall deadline of 5:00:00 passed"


# --- promote to full and rollback ------------------------------------------------------------


def test_promote_to_full_promotes_the_baking_phase_and_skips_the_ones_between() -> None:
    s, _ = _baking()
    s.promote_full_by = "lena"
    jump = rollout_core.jump_to_full(s)
    assert jump.approver == "lena" and s.phase_index == 2 and s.promote_full_by is None
    assert [(p.name, p.verdict) for p in jump.judged] == [
        ("pilot", "promoted"),
        ("half", "skipped"),
    ]


def test_a_rollback_before_the_start_rejects_and_after_an_irreversible_phase_freezes() -> None:
    s, _ = _awaiting_start()
    s.rollback_reason = "rejected by lena"
    assert rollout_core.begin_rollback(s).kind == "reject"
    assert s.ended_reason == "rejected by lena"

    s, _ = _baking(phases=[_phase("pilot", 5, irreversible=True), _phase("all", 100)])
    s.rollback_reason = "check csat failed"
    start = rollout_core.begin_rollback(s)
    assert start.kind == "freeze" and start.irreversible == ["pilot"]
    assert (
        s.frozen_reason is not None
        and "roll forward (promote) or accept (abort)" in s.frozen_reason
    )

    s, _ = _baking()
    s.rollback_reason = "check csat failed"
    assert rollout_core.begin_rollback(s).kind == "roll_back"


def test_the_last_applied_phase_is_reverted_first_without_the_earlier_phases_customers() -> None:
    s, spec = _baking()
    s.phase_index = 1
    rollout_core.phase_applied(
        s, spec, 1, newly_exposed=80, total_exposed=100, recorded=True, now=MONDAY
    )
    plan = rollout_core.reverts(s, spec)
    assert [r.number for r in plan] == [1, 0]
    assert [c.percent for c in plan[0].earlier] == [5] and plan[1].earlier == []
    assert plan[0].cohort.percent == 50 and plan[0].phase_number == 2 and plan[0].attempt == 1
    assert rollout_core.rollback_cause("check csat failed in phase half", aborted=False) == (
        "check_failed"
    )


def test_an_aborted_rollout_waits_a_week_for_a_retry() -> None:
    s, spec = _baking()
    s.aborted = True
    assert rollout_core.rolled_back(s, "aborted: wrong flag", MONDAY)
    s.state = "rolled_back"
    assert rollout_core.retry_closes_at(s) == MONDAY + timedelta(days=7)
    assert describe(s, spec) == (
        "rolled back after abort (aborted: wrong flag); "
        "retry possible until Mon 10:00 Europe/Berlin"
    )


@pytest.mark.parametrize(
    "module",
    [rollout_core, rollout_approvals, rollout_checks, rollout_commands, rollout_text],
    ids=lambda m: m.__name__,
)
def test_the_core_imports_nothing_of_temporal(module: ModuleType) -> None:
    """Pure: no workflow API, so these decisions run (and are tested) without a server."""
    tree = ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8"))
    imported = [
        name
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    ]
    # temporalio.common only for a type (the search attributes' updates), never the SDK's parts
    # that need a running workflow or worker.
    assert not [
        name for name in imported if name.startswith("temporalio") and name != "temporalio.common"
    ]


def test_every_effect_is_named_uniquely_across_the_workflows() -> None:
    """The workflow calls rollout_effects' functions by bare name; the fingerprint test
    (tests/test_workflow_fingerprints.py) follows such a call only when no other module of
    workflows/ defines a function of that name, else the effect's commands drop out of it."""
    workflows_dir = Path(rollout_effects.__file__ or "").parent

    def module_functions(path: Path) -> list[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        return [
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ]

    effects = module_functions(Path(rollout_effects.__file__ or ""))
    everywhere = [name for path in workflows_dir.glob("*.py") for name in module_functions(path)]
    assert "apply_rollout_phase" in effects
    assert [name for name in effects if everywhere.count(name) > 1] == []
