"""The escalation case's decisions, without Temporal: which warning, breach or level falls due
next and when, what a person's command is refused with, what an accepted one does to the
clocks (workflows/escalation_core.py and its topic modules)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from activities import search_attributes as sa
from activities.escalation_contracts import Acknowledge, Resolve
from tests.definition_support import pinned
from workflows import (
    escalation_clocks,
    escalation_commands,
    escalation_core,
    escalation_status,
)
from workflows import escalation_commands as commands
from workflows.escalation_clocks import (
    CLOCK_KINDS,
    FIRST_RESPONSE,
    RESOLUTION,
    ClockKind,
    SlaClock,
    met_by,
    sla_budgets,
)
from workflows.escalation_core import (
    BreachDue,
    EscalationCore,
    LevelDue,
    WarningDue,
    opened_state,
    opening_refusal,
)
from workflows.escalation_model import (
    CaseInfo,
    Pause,
    Reassign,
    Resume,
    SetPriority,
    SetStage,
    TicketStatus,
)
from workflows.escalation_pinned import Migrate
from workflows.escalation_status import case_details, search_attributes, summary

# A Monday, 09:00 in Berlin (07:00 UTC): inside the desk's hours below.
MONDAY = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)
DESK = {"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}}


def _level(after: str, name: str) -> dict[str, Any]:
    notify = {"type": "notify", "channel": "email", "to": ["assignee"], "template": "t"}
    return {"after": after, "name": name, "actions": [notify]}


def _policy(name: str = "support", **overrides: Any) -> Any:
    spec: dict[str, Any] = {
        "priorities": ["p1", "p2", "p3"],
        "calendar": DESK,
        "slas": [
            {"priority": "p1", "first_response": "1h", "resolution": "4h"},
            {"priority": "p2", "first_response": "2h", "resolution": "8h"},
            {"priority": "p2", "stage": "renewal", "first_response": "1h", "resolution": "6h"},
            {"priority": "p3", "stage": "support", "first_response": "4h", "resolution": "2d"},
            {"priority": "p3", "stage": "renewal", "first_response": "2h", "resolution": "1d"},
        ],
        "warn_at": [50, 75],
        "levels": [_level("10m", "agent"), _level("30m", "lead")],
        "repeat": 1,
        "by_priority": {"p1": {"calendar": "24x7"}},
    }
    spec.update(overrides)
    document = {
        "apiVersion": "opsflow/v1",
        "kind": "escalation",
        "metadata": {"name": name, "owner": "support-operations"},
        "spec": spec,
    }
    return pinned(document)


def _case(priority: str = "p2", stage: str = "support", opened_at: datetime = MONDAY) -> CaseInfo:
    return CaseInfo(
        ticket_id="T-1",
        customer_id="C-1",
        priority=priority,  # type: ignore[arg-type]
        stage=stage,
        opened_at=opened_at,
    )


def _core(priority: str = "p2", policy: Any = None, **case: Any) -> EscalationCore:
    policy = policy or _policy()
    info = _case(priority, **case)
    return EscalationCore(opened_state(info, policy, info.opened_at), policy)


def _steps(core: EscalationCore, now: datetime) -> list[str]:
    return [step.step for step in core.due(now)]


# --- clocks on a business calendar ---------------------------------------------------------


def test_a_case_opens_with_each_clock_kind_budgeted_by_its_priority_and_stage() -> None:
    core = _core("p2", stage="renewal")
    clocks = core.state.clocks
    # The original two: every case has them; the other metrics come with measure_metrics.
    assert list(clocks) == [kind.name for kind in CLOCK_KINDS if kind.original]
    assert list(clocks) == [FIRST_RESPONSE, RESOLUTION]
    assert clocks[FIRST_RESPONSE].budget == timedelta(hours=1)  # renewal's own target
    assert clocks[RESOLUTION].budget == timedelta(hours=6)
    assert all(clock.running_since == MONDAY for clock in clocks.values())


def test_a_case_without_an_sla_for_its_priority_cannot_open() -> None:
    policy = _policy()
    assert opening_refusal(_case("p4"), policy) == "policy support@1 has no SLA for p4 at support"
    assert opening_refusal(_case("p2"), policy) is None


def test_a_ticket_opened_in_the_future_starts_its_clocks_now() -> None:
    state = opened_state(_case(opened_at=MONDAY + timedelta(hours=1)), _policy(), MONDAY)
    assert state.clocks[FIRST_RESPONSE].running_since == MONDAY


def test_business_time_stops_overnight_and_over_the_weekend() -> None:
    friday_afternoon = datetime(2026, 6, 5, 14, 0, tzinfo=UTC)  # 16:00 in Berlin
    core = _core("p2", opened_at=friday_afternoon)
    clock = core.state.clocks[FIRST_RESPONSE]
    # 1h of the 2h on Friday, the other on Monday from 09:00 Berlin (07:00 UTC).
    assert clock.due_at(core.calendar) == datetime(2026, 6, 8, 8, 0, tzinfo=UTC)
    saturday = datetime(2026, 6, 6, 12, 0, tzinfo=UTC)
    assert clock.spent(saturday, core.calendar) == timedelta(hours=1)


def test_a_p1_runs_on_its_own_24x7_calendar() -> None:
    evening = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)
    core = _core("p1", opened_at=evening)
    assert core.state.clocks[FIRST_RESPONSE].due_at(core.calendar) == evening + timedelta(hours=1)


# --- what falls due, and when ---------------------------------------------------------------------


def test_the_next_deadline_is_the_first_of_every_clock_warning_breach_and_level() -> None:
    core = _core("p2")
    assert core.next_deadline() == MONDAY + timedelta(minutes=10)  # level 1
    core.state.levels_fired = core.total_firings()  # every level fired
    assert core.next_deadline() == MONDAY + timedelta(hours=1)  # first response at 50%
    core.state.clocks[FIRST_RESPONSE].warned_at = [50, 75]
    assert core.next_deadline() == MONDAY + timedelta(hours=2)  # first response breaches
    core.state.clocks[FIRST_RESPONSE].breached_at = MONDAY + timedelta(hours=2)
    assert core.next_deadline() == MONDAY + timedelta(hours=4)  # resolution at 50%


def test_levels_fire_in_order_then_repeat_after_the_last_levels_delay() -> None:
    core = _core("p2")
    assert core.level_due_spent(0) == timedelta(minutes=10)
    assert core.level_due_spent(1) == timedelta(minutes=30)
    assert core.level_due_spent(2) == timedelta(minutes=40)  # cycle 1: 30m + 10m
    assert core.level_due_spent(3) == timedelta(minutes=60)
    assert core.total_firings() == 4
    steps = list(core.due(MONDAY + timedelta(minutes=45)))
    assert [s.step for s in steps] == ["level-1-cycle-0", "level-2-cycle-0", "level-1-cycle-1"]
    assert all(isinstance(s, LevelDue) for s in steps)
    fired = [s for s in steps if isinstance(s, LevelDue)]
    # Stamped when each fell due, not when the timer was handled.
    assert [s.at for s in fired] == [MONDAY + timedelta(minutes=m) for m in (10, 30, 40)]
    assert core.current_level() == 1
    visits = core.state.visits
    assert [(v.level, v.cycle, v.ended_at) for v in visits] == [
        (1, 0, MONDAY + timedelta(minutes=30)),
        (2, 0, MONDAY + timedelta(minutes=40)),
        (1, 1, None),
    ]
    one_hour = MONDAY + timedelta(hours=1)
    assert _steps(core, one_hour) == ["warn-first_response-50", "level-2-cycle-1"]
    assert not core.escalating()  # every level of every cycle fired
    assert _steps(core, MONDAY + timedelta(minutes=61)) == []


def test_a_fired_level_says_whether_it_rotates_among_its_targets() -> None:
    rotating = {**_level("30m", "lead"), "round_robin": True}
    core = _core("p2", _policy(levels=[_level("10m", "agent"), rotating], repeat=0))
    fired = [s for s in core.due(MONDAY + timedelta(minutes=30)) if isinstance(s, LevelDue)]
    assert [(s.step, s.round_robin) for s in fired] == [
        ("level-1-cycle-0", False),
        ("level-2-cycle-0", True),
    ]


def test_warnings_then_the_breach_are_due_once_each_stamped_when_they_fell_due() -> None:
    core = _core("p2")
    core.state.levels_fired = core.total_firings()
    late = MONDAY + timedelta(hours=3)  # after an outage: everything at once, in order
    steps = list(core.due(late))
    assert [s.step for s in steps] == [
        "warn-first_response-50",
        "warn-first_response-75",
        "breach-first_response",
    ]
    warning, breach = steps[0], steps[2]
    assert isinstance(warning, WarningDue) and warning.at == MONDAY + timedelta(hours=1)
    assert isinstance(breach, BreachDue)
    assert breach.event.breached_at == MONDAY + timedelta(hours=2)
    assert breach.event.budget_seconds == 7200 and breach.event.sla == FIRST_RESPONSE
    assert core.state.clocks[FIRST_RESPONSE].breached_at == MONDAY + timedelta(hours=2)
    assert _steps(core, late) == []  # each once


def test_a_command_landing_between_steps_counts_for_the_steps_after_it() -> None:
    """The workflow runs each step's ledger entry and actions before it asks for the next:
    an acknowledge meanwhile stops the levels still to come."""
    core = _core("p2")
    due = core.due(MONDAY + timedelta(minutes=45))
    assert next(due).step == "level-1-cycle-0"
    commands.acknowledge(core, Acknowledge(by="ana"), MONDAY + timedelta(minutes=12))
    assert list(due) == []
    assert core.state.levels_fired == 1


def test_a_paused_case_has_nothing_due_and_resumes_with_its_time_spent_kept() -> None:
    core = _core("p2")
    commands.pause(core, Pause(reason="waiting on the customer"), MONDAY + timedelta(minutes=5))
    assert core.next_deadline() is None
    assert _steps(core, MONDAY + timedelta(hours=5)) == []
    resumed = MONDAY + timedelta(hours=1)
    commands.resume(core, Resume(by="ana"), resumed)
    assert core.state.state == "open"
    # 5 minutes were spent before the pause: level 1 (10m) is 5 minutes after resuming.
    assert core.next_deadline() == resumed + timedelta(minutes=5)


# --- a person's commands --------------------------------------------------------------------------


def test_acknowledge_meets_the_first_response_and_ends_the_escalation() -> None:
    core = _core("p2")
    list(core.due(MONDAY + timedelta(minutes=15)))  # level 1 fired
    at = MONDAY + timedelta(minutes=20)
    applied = commands.acknowledge(core, Acknowledge(by="ana"), at)
    assert applied is not None
    assert applied.met == [FIRST_RESPONSE]
    assert applied.acknowledged_after == timedelta(minutes=20)
    s = core.state
    assert (s.state, s.acknowledged_by) == ("acknowledged", "ana")
    assert s.clocks[FIRST_RESPONSE].met_at == at and s.clocks[RESOLUTION].running
    assert s.visits[-1].ended_at == at and core.current_level() == 0
    assert [(e.step, e.detail) for e in s.unrecorded] == [("acknowledge", {"by": "ana"})]
    assert core.next_deadline() == MONDAY + timedelta(hours=4)  # resolution at 50%


def test_a_second_acknowledge_is_refused_and_a_later_public_reply_changes_nothing() -> None:
    core = _core("p2")
    commands.acknowledge(core, Acknowledge(by="ana"), MONDAY)
    refusal = commands.refuse_acknowledge(core.state, Acknowledge(by="ben"))
    assert refusal == "already acknowledged by ana"
    reply = Acknowledge(by="ben", first_response_only=True)
    assert commands.refuse_acknowledge(core.state, reply) is None
    assert commands.acknowledge(core, reply, MONDAY + timedelta(hours=1)) is None
    assert core.state.acknowledged_by == "ana" and len(core.state.unrecorded) == 1


def test_a_breached_clock_is_not_counted_as_met() -> None:
    core = _core("p2")
    core.state.levels_fired = core.total_firings()
    list(core.due(MONDAY + timedelta(hours=3)))
    applied = commands.acknowledge(core, Acknowledge(by="ana"), MONDAY + timedelta(hours=3))
    assert applied is not None and applied.met == []


def test_resolve_stops_every_clock_and_every_command_after_it_is_refused() -> None:
    core = _core("p2")
    applied = commands.resolve(core, Resolve(by="ana"), MONDAY + timedelta(minutes=30))
    assert applied.met == [FIRST_RESPONSE, RESOLUTION]
    assert all(clock.stopped for clock in core.state.clocks.values())
    assert core.resolved and core.next_deadline() is None
    refused = "case T-1 is already resolved"
    s = core.state
    assert commands.refuse_resolve(s, Resolve(by="ben")) == refused
    assert commands.refuse_pause(s, Pause()) == refused
    assert commands.refuse_acknowledge(s, Acknowledge(by="ben")) == refused
    assert commands.refuse_reassign(s, Reassign(queue="tier-2")) == refused


def test_pause_and_resume_are_refused_when_they_would_change_nothing() -> None:
    core = _core("p2")
    assert commands.refuse_resume(core.state, None) == "the case is not paused"
    commands.pause(core, Pause(), MONDAY)
    assert commands.refuse_pause(core.state, Pause()) == "the case is already paused"


def test_the_tickets_status_pauses_and_resumes_and_a_repeat_changes_nothing() -> None:
    core = _core("p2")
    pending = TicketStatus(status="pending", by="zendesk")
    applied = commands.ticket_status(core, pending, MONDAY + timedelta(minutes=1))
    assert applied is not None and core.state.state == "paused"
    assert core.state.pause_reason == "ticket pending"
    assert commands.ticket_status(core, pending, MONDAY + timedelta(minutes=2)) is None
    open_again = TicketStatus(status="open")
    assert commands.ticket_status(core, open_again, MONDAY + timedelta(minutes=3)) is not None
    assert core.state.state == "open"
    assert commands.ticket_status(core, open_again, MONDAY + timedelta(minutes=4)) is None
    assert [e.step for e in core.state.unrecorded] == ["pause", "resume"]


def test_a_priority_change_takes_the_new_sla_and_keeps_the_time_spent() -> None:
    core = _core("p2")
    at = MONDAY + timedelta(minutes=30)
    commands.set_priority(core, SetPriority(priority="p1", by="ana"), at)
    clock = core.state.clocks[FIRST_RESPONSE]
    assert core.state.case.priority == "p1" and clock.budget == timedelta(hours=1)
    assert clock.spent(at, core.calendar) == timedelta(minutes=30)
    assert clock.due_at(core.calendar) == at + timedelta(minutes=30)
    entry = core.state.unrecorded[-1]
    assert (entry.step, entry.detail) == ("priority", {"from": "p2", "to": "p1", "by": "ana"})


@pytest.mark.parametrize(
    ("priority", "refusal"),
    [
        ("p9", "unknown priority 'p9': use p1, p2, p3 or p4"),
        ("p2", "the case is already p2"),
        (
            "p4",
            "policy support@1 has no SLA for p4 (it covers p1, p2, p3); first migrate the case "
            "to a policy that covers both (`opsflow case migrate`)",
        ),
        ("p1", None),
    ],
)
def test_what_a_priority_change_is_refused_with(priority: str, refusal: str | None) -> None:
    core = _core("p2")
    command = SetPriority(priority=priority)
    assert commands.refuse_set_priority(core.state, core.spec, command) == refusal


def test_a_stage_change_names_the_stages_the_policy_knows() -> None:
    core = _core("p3")
    refuse = commands.refuse_set_stage
    assert refuse(core.state, core.spec, SetStage(stage="support")) == (
        "the case is already at stage support"
    )
    assert refuse(core.state, core.spec, SetStage(stage="active")) == (
        "unknown stage 'active' for policy support@1: known stages: support, renewal"
    )
    assert refuse(core.state, core.spec, SetStage(stage="renewal")) is None
    # A `*` target covers the usual case stages too.
    assert commands.known_stages(core.spec, "p2") == [
        "renewal",
        "support",
        "onboarding",
        "active",
        "at_risk",
        "churned",
    ]
    commands.set_stage(core, SetStage(stage="renewal"), MONDAY + timedelta(minutes=10))
    assert core.state.clocks[FIRST_RESPONSE].budget == timedelta(hours=2)


def test_a_migration_keeps_the_time_spent_and_follows_the_new_policy_from_now() -> None:
    core = _core("p2")
    faster = _policy(
        "support-v2", slas=[{"priority": "p2", "first_response": "1h", "resolution": "4h"}]
    )
    at = MONDAY + timedelta(minutes=20)
    commands.migrate(core, Migrate(policy=faster, by="ops"), at)
    assert core.state.definition == "support-v2@1" and core.policy is faster
    clock = core.state.clocks[FIRST_RESPONSE]
    assert clock.budget == timedelta(hours=1)
    assert clock.spent(at, core.calendar) == timedelta(minutes=20)
    detail = core.state.unrecorded[-1].detail
    assert detail == {"from": "support@1", "to": "support-v2@1", "by": "ops"}


def test_what_a_migration_is_refused_with() -> None:
    core = _core("p2")
    state = core.state
    assert commands.migration_refusal(state, _policy()) == "case T-1 is already on support@1"
    p1_only = [{"priority": "p1", "first_response": "1h", "resolution": "4h"}]
    narrow = _policy("narrow", priorities=["p1"], slas=p1_only)
    assert commands.migration_refusal(state, narrow) == (
        "narrow@1 does not cover priority p2 (it covers p1)"
    )
    assert commands.migration_refusal(state, _policy("other")) is None


def test_a_reassign_names_what_is_wrong_with_it_and_what_failed() -> None:
    core = _core("p2")
    both = Reassign(queue="tier-2", agent="ana")
    assert commands.refuse_reassign(core.state, both) == "give exactly one of queue or agent"
    command = Reassign(queue="tier-2")
    assert commands.refuse_reassign(core.state, command) is None
    assert commands.reassign_step(core) == "command-1-reassign"
    answer = commands.reassign_failed(core, command, ["assign: ticket gone"], MONDAY)
    assert answer == (
        "reassign to queue tier-2 failed (assign: ticket gone); queue and assignee unchanged"
    )
    assert core.state.attention == "reassign failed: assign: ticket gone"
    assert core.state.queue is None


# --- what actions changed ---------------------------------------------------------------------


def test_a_level_raising_the_priority_beyond_the_policy_keeps_the_clocks_sla() -> None:
    core = _core("p3", stage="support")
    core.take_outcome(MONDAY, assignee=None, queue="tier-2", priority="p2")
    # p2 has a target at `support`: the clocks take it.
    assert core.state.clocks[FIRST_RESPONSE].budget == timedelta(hours=2)
    p3_only = [{"priority": "p3", "first_response": "4h", "resolution": "2d"}]
    narrow = _policy(priorities=["p3"], slas=p3_only)
    core = _core("p3", policy=narrow)
    core.take_outcome(MONDAY, assignee="ana", queue=None, priority="p2")
    assert core.state.case.priority == "p2" and core.state.assignee == "ana"
    assert core.state.clocks[FIRST_RESPONSE].budget == timedelta(hours=4)


def test_a_page_that_lands_after_the_acknowledge_is_to_be_acknowledged_too() -> None:
    core = _core("p2")
    assert core.page_heard("agent:ana", "k1", None) is False
    assert core.page_heard("agent:ana", "k1", True) is False
    assert [a.status for a in core.state.alerts] == ["triggered"]
    commands.acknowledge(core, Acknowledge(by="ana"), MONDAY)
    assert core.page_heard("agent:ben", "k2", None) is False
    assert core.page_heard("agent:ben", "k2", True) is True
    assert core.page_heard("agent:cy", "k3", False) is False
    assert [a.status for a in core.state.alerts] == ["triggered", "triggered", "failed"]
    assert [i for i, _ in core.alerts_to_follow("acknowledge")] == [0, 1]
    core.alert_followed(core.state.alerts[0], "acknowledge")
    assert [i for i, _ in core.alerts_to_follow("resolve")] == [0, 1]


def test_failed_actions_keep_the_last_few_and_a_persons_command_clears_the_flag() -> None:
    core = _core("p2")
    for n in range(25):
        core.keep_failures(f"level-1-cycle-{n}", [f"notify email: bounced {n}"], MONDAY)
    assert len(core.state.failures) == 20 and core.state.failures[0].step == "level-1-cycle-5"
    assert core.state.attention == "level-1-cycle-24 failed: notify email: bounced 24"
    commands.ticket_status(core, TicketStatus(status="pending"), MONDAY)
    assert core.state.attention is not None  # the ticketing system is not a person
    commands.resume(core, None, MONDAY)
    assert core.state.attention is None


# --- how the case looks from outside ---------------------------------------------------------


def test_search_attributes_carry_the_next_breach_and_the_stuck_state() -> None:
    core = _core("p2")
    values = search_attributes(core)
    assert values[sa.OPS_DUE_AT.name] == MONDAY + timedelta(hours=2)
    assert values[sa.OPS_STATE.name] == "open" and values[sa.OPS_LEVEL.name] == 0
    core.keep_failures("level-1-cycle-0", ["notify email: bounced"], MONDAY)
    assert search_attributes(core)[sa.OPS_STATE.name] == sa.STUCK
    legacy = search_attributes(core, due_and_stuck=False)
    assert legacy[sa.OPS_STATE.name] == "open" and sa.OPS_DUE_AT.name not in legacy


def test_the_one_line_status_says_what_the_case_waits_for() -> None:
    core = _core("p2")
    list(core.due(MONDAY + timedelta(minutes=10)))
    assert case_details(core) == (
        "level 1 of 2, waiting for acknowledgement by the assignee; "
        "first response breaches at Mon 11:00 Europe/Berlin"
    )
    commands.pause(core, Pause(reason="waiting on the customer"), MONDAY)
    assert case_details(core).startswith("paused (waiting on the customer); clocks stopped")


def test_the_summary_says_by_how_much_each_sla_was_met_or_missed() -> None:
    core = _core("p2")
    list(core.due(MONDAY + timedelta(minutes=10)))
    commands.acknowledge(core, Acknowledge(by="ana"), MONDAY + timedelta(minutes=40))
    commands.resolve(core, Resolve(by="ana"), MONDAY + timedelta(hours=9))
    result = summary(core)
    outcomes = {o.name: (o.met, o.breached, o.margin) for o in result.slas}
    assert outcomes[FIRST_RESPONSE] == (True, False, timedelta(minutes=80))
    # 8h of desk time on Monday (09:00-17:00) by 16:00 UTC: resolution met, exactly in time.
    assert outcomes[RESOLUTION] == (True, False, timedelta(0))
    assert result.time_at_level == {"level 1": timedelta(minutes=30)}


# --- the shape: a clock is a value of a kind, the core is pure -----------------------------------


def test_each_clock_kind_reads_its_own_target_and_is_met_by_its_own_commands() -> None:
    spec = _policy().escalation
    assert sla_budgets(spec, "p2", "support") == {
        FIRST_RESPONSE: timedelta(hours=2),
        RESOLUTION: timedelta(hours=8),
    }
    assert sla_budgets(spec, "p4", "support") is None
    assert met_by(FIRST_RESPONSE, "acknowledge") and met_by(FIRST_RESPONSE, "resolve")
    assert not met_by(RESOLUTION, "acknowledge") and met_by(RESOLUTION, "resolve")


def test_a_new_metric_is_one_more_clock_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock kind brings its budget, warnings, deadline and what meets it; nothing else
    (the workflow included) names the clocks."""
    half_reply = ClockKind("half_reply", lambda t: t.first_response / 2, frozenset({"resolve"}))
    monkeypatch.setattr(escalation_clocks, "CLOCK_KINDS", (*CLOCK_KINDS, half_reply))
    core = _core("p2")
    core.measure_metrics(MONDAY)
    assert core.state.clocks["half_reply"].budget == timedelta(hours=1)
    core.state.levels_fired = core.total_firings()
    assert core.next_deadline() == MONDAY + timedelta(minutes=30)  # its 50% warning
    assert _steps(core, MONDAY + timedelta(minutes=45)) == [
        "warn-half_reply-50",
        "warn-half_reply-75",
    ]
    applied = commands.acknowledge(core, Acknowledge(by="ana"), MONDAY + timedelta(minutes=50))
    assert applied is not None and applied.met == [FIRST_RESPONSE]
    assert core.state.clocks["half_reply"].running
    applied = commands.resolve(core, Resolve(by="ana"), MONDAY + timedelta(minutes=55))
    assert applied.met == [RESOLUTION, "half_reply"]


def test_the_state_query_shows_each_clocks_due_moment_and_status() -> None:
    clock = SlaClock(name=RESOLUTION, budget=timedelta(hours=1), running_since=MONDAY)
    calendar = _policy().escalation.calendar
    view = escalation_clocks.shown(clock, calendar)
    assert (view.due, view.status) == (MONDAY + timedelta(hours=1), "running")
    assert clock.due is None  # the state itself is left alone
    clock.breached_at = MONDAY + timedelta(hours=1)
    clock.stop(MONDAY + timedelta(hours=2), calendar)
    view = escalation_clocks.shown(clock, calendar)
    assert (view.due, view.status) == (None, "breached")


@pytest.mark.parametrize(
    "module",
    [escalation_core, escalation_clocks, escalation_commands, escalation_status],
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
    assert not [name for name in imported if name.startswith("temporalio")]
