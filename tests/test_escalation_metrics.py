"""Zendesk's SLA metrics as the escalation core measures them, without Temporal: a scripted
ticket conversation per metric, checked against Zendesk's definitions (support.zendesk.com,
"Defining and using SLA policies"; the ticket metric events reference,
developer.zendesk.com/documentation/ticketing/reference-guides/ticket-metric-event-types-reference,
for what pauses requester wait time and agent work time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from activities.escalation_contracts import Resolve
from tests.definition_support import pinned
from workflows import escalation_commands as commands
from workflows.escalation_clocks import (
    AGENT_WORK,
    FIRST_RESPONSE,
    NEXT_REPLY,
    PAUSABLE_UPDATE,
    PERIODIC_UPDATE,
    REQUESTER_WAIT,
    RESOLUTION,
)
from workflows.escalation_core import BreachDue, EscalationCore, opened_state
from workflows.escalation_model import (
    AgentReply,
    CaseInfo,
    RequesterReply,
    SetPriority,
    TicketStatus,
)
from workflows.escalation_status import breach_envelope, status_view

OPENED = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)
EVERY_METRIC = {
    "first_response": "1h",
    "next_reply": "2h",
    "periodic_update": "3h",
    "pausable_update": "3h",
    "requester_wait": "6h",
    "agent_work": "4h",
    "resolution": "1d",
}


def _policy(**p2: str) -> Any:
    return pinned(
        {
            "apiVersion": "opsflow/v1",
            "kind": "escalation",
            "metadata": {"name": "desk", "owner": "support-operations"},
            "spec": {
                "priorities": ["p1", "p2"],
                "calendar": "24x7",
                "slas": [
                    {
                        "priority": "p1",
                        "first_response": "30m",
                        "next_reply": "1h",
                        "resolution": "8h",
                    },
                    {"priority": "p2", **EVERY_METRIC, **p2},
                ],
                "levels": [{"after": "20m", "actions": [{"type": "assign", "queue": "tier2"}]}],
            },
        }
    )


def _core(*, metrics: bool = True, **p2: str) -> EscalationCore:
    policy = _policy(**p2)
    case = CaseInfo(ticket_id="T-1", customer_id="C-1", priority="p2", opened_at=OPENED)
    core = EscalationCore(opened_state(case, policy, OPENED), policy)
    if metrics:
        core.measure_metrics(OPENED)
    return core


def _at(minutes: int) -> datetime:
    return OPENED + timedelta(minutes=minutes)


def _spent(core: EscalationCore, name: str, minutes: int) -> timedelta:
    return core.state.clocks[name].spent(_at(minutes), core.calendar)


def _breaches(core: EscalationCore, minutes: int, clock: str) -> list[str]:
    """The breaches of `clock` due by `minutes` (the others are marked as well)."""
    return [
        step.step
        for step in core.due(_at(minutes))
        if isinstance(step, BreachDue) and step.clock == clock
    ]


def _public(core: EscalationCore, minutes: int) -> list[str]:
    applied = commands.agent_reply(core, AgentReply(by="ana"), _at(minutes))
    return applied.met if applied else []


def _requester(core: EscalationCore, minutes: int) -> None:
    commands.requester_reply(core, RequesterReply(by="requester"), _at(minutes))


def _status(core: EscalationCore, status: str, minutes: int) -> None:
    commands.ticket_status(core, TicketStatus(status=status, by="zendesk"), _at(minutes))


def test_a_case_is_measured_by_every_metric_its_sla_gives() -> None:
    core = _core()
    clocks = core.state.clocks
    assert set(clocks) == set(EVERY_METRIC)
    # The reply metrics wait for the event that starts their first target.
    shown = {name: clock.status for name, clock in status_view(core).clocks.items()}
    assert shown == {
        FIRST_RESPONSE: "running",
        RESOLUTION: "running",
        NEXT_REPLY: "waiting",
        PERIODIC_UPDATE: "waiting",
        PAUSABLE_UPDATE: "waiting",
        REQUESTER_WAIT: "running",
        AGENT_WORK: "running",
    }
    # A target left out of the policy is not measured: p1 gives a next reply only.
    commands.set_priority(core, SetPriority(priority="p1"), _at(1))
    assert set(clocks) == {FIRST_RESPONSE, NEXT_REPLY, RESOLUTION}


def test_a_policy_with_only_the_first_two_targets_behaves_as_before() -> None:
    """An existing policy (first_response and resolution only) opens the same two clocks,
    and a case opened before the metrics ignores requester messages."""
    policy = pinned(
        {
            "apiVersion": "opsflow/v1",
            "kind": "escalation",
            "metadata": {"name": "old", "owner": "support-operations"},
            "spec": {
                "priorities": ["p2"],
                "calendar": "24x7",
                "slas": [{"priority": "p2", "first_response": "1h", "resolution": "1d"}],
                "levels": [{"after": "20m", "actions": [{"type": "assign", "queue": "t2"}]}],
            },
        }
    )
    case = CaseInfo(ticket_id="T-1", customer_id="C-1", priority="p2", opened_at=OPENED)
    core = EscalationCore(opened_state(case, policy, OPENED), policy)
    core.measure_metrics(OPENED)
    assert list(core.state.clocks) == [FIRST_RESPONSE, RESOLUTION]
    before = _core(metrics=False)
    assert commands.requester_reply(before, RequesterReply(), _at(5)) is None
    assert list(before.state.clocks) == [FIRST_RESPONSE, RESOLUTION]


def test_first_response_is_met_by_the_first_public_agent_reply() -> None:
    """Zendesk: first reply time is the time between ticket creation and the first public
    comment from an agent; an internal note does not count."""
    core = _core()
    assert commands.agent_reply(core, AgentReply(by="ana", public=False), _at(10)) is None
    assert core.state.acknowledged_by is None
    assert FIRST_RESPONSE in _public(core, 40)
    assert core.state.acknowledged_by == "ana"
    assert core.state.clocks[FIRST_RESPONSE].met_at == _at(40)


def test_next_reply_runs_from_the_oldest_unanswered_requester_message() -> None:
    """Zendesk: next reply time is the time between the oldest unanswered requester comment
    and the next public agent comment. Each answered message ends a target; the next
    message starts a new one, breached on its own."""
    core = _core()
    _public(core, 10)
    assert core.state.clocks[NEXT_REPLY].waiting  # nothing unanswered yet
    _requester(core, 30)
    _requester(core, 60)  # a second message: still measured from the first
    assert _spent(core, NEXT_REPLY, 90) == timedelta(minutes=60)
    assert NEXT_REPLY in _public(core, 100)  # 70 minutes, within 2h
    clock = core.state.clocks[NEXT_REPLY]
    assert clock.met_at == _at(100) and clock.cycle == 1
    _requester(core, 120)
    assert core.state.clocks[NEXT_REPLY].cycle == 2
    assert core.next_deadline() == _at(120 + 120)
    assert _breaches(core, 240, NEXT_REPLY) == ["breach-next_reply-2"]
    event = core.state.clocks[NEXT_REPLY]
    assert event.breached_at == _at(240)
    # The next answer meets nothing within budget, and a third message is a third target.
    assert NEXT_REPLY not in _public(core, 250)
    _requester(core, 260)
    assert core.state.clocks[NEXT_REPLY].breached_at is None
    assert core.state.clocks[NEXT_REPLY].cycle == 3


def test_each_breach_of_a_restarting_metric_reaches_recovery_once_under_its_own_id() -> None:
    core = _core()
    _requester(core, 0)
    due = core.due(_at(130))
    steps = [step for step in due if isinstance(step, BreachDue) and step.clock == NEXT_REPLY]
    assert [step.step for step in steps] == ["breach-next_reply-1"]
    envelope = breach_envelope("case-T-1", steps[0].event, steps[0].cycle)
    assert envelope.id == "case-T-1/next_reply/1"
    assert steps[0].event.sla == NEXT_REPLY


def test_periodic_update_measures_each_gap_between_public_agent_updates() -> None:
    """Zendesk: periodic update is the time between each public comment from agents; it
    starts with the first one and does not pause."""
    core = _core()
    assert core.state.clocks[PERIODIC_UPDATE].waiting
    _public(core, 10)  # the first update starts the first interval
    clock = core.state.clocks[PERIODIC_UPDATE]
    assert clock.running_since == _at(10) and clock.cycle == 1
    _status(core, "pending", 20)  # waiting on the customer: it keeps running
    assert PERIODIC_UPDATE in _public(core, 100)
    assert core.state.clocks[PERIODIC_UPDATE].cycle == 2
    assert core.state.clocks[PERIODIC_UPDATE].running_since == _at(100)
    assert _breaches(core, 100 + 180, PERIODIC_UPDATE) == ["breach-periodic_update-2"]


def test_pausable_update_is_paused_while_the_ticket_waits_on_the_customer() -> None:
    """Zendesk: pausable update is the time between each public comment from agents,
    paused while the ticket is pending (here: the policy's pause_statuses)."""
    core = _core()
    _public(core, 10)
    _status(core, "pending", 70)  # 60 minutes spent
    assert _spent(core, PAUSABLE_UPDATE, 300) == timedelta(minutes=60)
    assert _spent(core, PERIODIC_UPDATE, 300) == timedelta(minutes=290)
    _status(core, "open", 300)
    assert core.state.clocks[PAUSABLE_UPDATE].due_at(core.calendar) == _at(300 + 120)
    # A public reply while pending meets this interval and starts the next one paused.
    _status(core, "pending", 310)
    assert PAUSABLE_UPDATE in _public(core, 320)
    clock = core.state.clocks[PAUSABLE_UPDATE]
    assert clock.cycle == 2 and not clock.running
    _status(core, "open", 400)
    assert core.state.clocks[PAUSABLE_UPDATE].running_since == _at(400)


def test_requester_wait_counts_new_open_and_on_hold() -> None:
    """Zendesk: requester wait time is the time in new, open and on-hold; it pauses while
    pending and is fulfilled when the ticket is solved."""
    core = _core()
    _status(core, "open", 30)
    _status(core, "on_hold", 60)  # the case pauses (a pause status), requester wait runs
    assert core.state.state == "paused"
    _status(core, "pending", 90)
    _status(core, "open", 150)  # 60 minutes pending do not count
    assert _spent(core, REQUESTER_WAIT, 180) == timedelta(minutes=120)
    applied = commands.resolve(core, Resolve(by="ana"), _at(180))
    assert REQUESTER_WAIT in applied.met


def test_agent_work_counts_new_and_open_only() -> None:
    """Zendesk: agent work time is the time in new and open; it pauses while pending or on
    hold."""
    core = _core()
    _status(core, "open", 30)
    _status(core, "on_hold", 60)
    _status(core, "open", 120)
    _status(core, "pending", 150)
    assert _spent(core, AGENT_WORK, 400) == timedelta(minutes=90)
    assert _spent(core, REQUESTER_WAIT, 400) == timedelta(minutes=150)
    _status(core, "open", 400)
    assert core.state.clocks[AGENT_WORK].due_at(core.calendar) == _at(400 + 150)
    assert _breaches(core, 400 + 150, AGENT_WORK) == ["breach-agent_work"]


def test_a_status_that_changes_only_requester_wait_or_agent_work_is_recorded() -> None:
    core = _core()
    core.state.unrecorded.clear()
    _status(core, "open", 10)  # nothing changes: no entry
    assert core.state.unrecorded == []
    _status(core, "on_hold", 20)  # pauses the case and agent work
    _status(core, "pending", 30)  # the case stays paused; requester wait pauses
    assert [entry.step for entry in core.state.unrecorded] == ["pause", "status"]


def test_a_priority_change_takes_the_new_targets_and_drops_what_it_does_not_measure() -> None:
    """A priority change re-budgets each metric and keeps the time spent (as Zendesk
    re-applies the SLA policy's targets); a metric the new priority has no target for is no
    longer measured."""
    core = _core()
    _requester(core, 0)
    _public(core, 10)  # first response and the first next reply met
    _requester(core, 20)
    commands.set_priority(core, SetPriority(priority="p1", by="lead"), _at(50))
    clocks = core.state.clocks
    assert set(clocks) == {FIRST_RESPONSE, NEXT_REPLY, RESOLUTION}
    assert clocks[NEXT_REPLY].budget == timedelta(hours=1)
    assert clocks[NEXT_REPLY].due_at(core.calendar) == _at(20 + 60)
    _public(core, 55)
    _requester(core, 56)  # a new target takes P1's budget
    assert clocks[NEXT_REPLY].due_at(core.calendar) == _at(56 + 60)
    commands.set_priority(core, SetPriority(priority="p2", by="lead"), _at(60))
    # Back at p2: the metrics come back from now; the updates at once (an agent replied).
    assert set(clocks) == set(EVERY_METRIC)
    assert clocks[NEXT_REPLY].budget == timedelta(hours=2)
    assert clocks[PERIODIC_UPDATE].running_since == _at(60)
    assert clocks[REQUESTER_WAIT].running_since == _at(60)
