"""Running a definition's actions through the integration activities.

Each action gets a deterministic idempotency key, `<workflow id>/<step>/<n>`, so a retried
activity, a replayed workflow or a re-delivered event never acts twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, RetryState, TimeoutError

from workflows.releases import has_change

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        AddComment,
        AddNote,
        ApplyCredit,
        CommentAdded,
        CreateTicket,
        CreditApplied,
        LedgerAppend,
        LedgerBatch,
        MessageSent,
        NoteAdded,
        SendMessage,
        StartDefinition,
        Ticket,
        UpdateTicket,
    )
    from activities.oncall_contracts import LevelMessage, RoundRobin
    from definitions.common import (
        Action,
        AssignAction,
        CreateTicketAction,
        CreditAction,
        CrmNoteAction,
        NotifyAction,
        ScheduleCallbackAction,
        SetPriorityAction,
        StartAction,
        UpdateTicketAction,
    )
    from definitions.duration import format_duration
    from definitions.events import EventEnvelope
    from definitions.templates import TemplateProblem, render_string

# Vendors fail in bursts; back off up to a minute and give up after a day, by which time a
# person has seen the failed activity in the UI.
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
ACTIVITY_TIMEOUT = timedelta(seconds=30)
ACTIVITY_DEADLINE = timedelta(days=1)

PRIORITY_ORDER = ("p4", "p3", "p2", "p1")
# A level's notifications say when the level fell due (an `oncall:` recipient is whoever was
# on call then, not when the activity ran) and a round-robin level sends one notification, to
# the next of its targets. Runs recorded before this sent plain messages, one per recipient.
LEVEL_MOMENT_PATCH = "notify-level-moment"
# The definitions language names chat channels by product; the notify activity by kind.
_CHANNELS = {
    "email": "email",
    "slack": "chat",
    "chat": "chat",
    "pager": "pager",
    "webhook": "webhook",
}


async def call(
    activity: str, arg: Any, result_type: type[Any], *, give_up_after: timedelta | None = None
) -> Any:
    """Run an integration activity; it retries until `give_up_after` (default a day)."""
    return await workflow.execute_activity(
        activity,
        arg,
        result_type=result_type,
        start_to_close_timeout=ACTIVITY_TIMEOUT,
        schedule_to_close_timeout=give_up_after or ACTIVITY_DEADLINE,
        retry_policy=ACTIVITY_RETRY,
    )


def raised(priority: str) -> str:
    """One step more urgent (p4 -> p3); p1 stays p1."""
    index = PRIORITY_ORDER.index(priority)
    return PRIORITY_ORDER[min(index + 1, len(PRIORITY_ORDER) - 1)]


@dataclass
class ActionTarget:
    """Who and what a definition's actions apply to, and what their templates may use."""

    kind: str
    customer_id: str
    ticket_id: str | None = None
    assignee: str | None = None
    owner: str | None = None
    account_manager: str | None = None
    definition: str | None = None
    template_context: dict[str, Any] = field(default_factory=dict)
    start_event: EventEnvelope | None = None
    """What a `start` action hands the started workflow (its fixed id makes it count once);
    None: `start` is left to the caller."""


@dataclass(frozen=True)
class LevelNotice:
    """The escalation level whose actions these are."""

    fired_at: datetime
    """When the level fell due (LevelDue.at), not when its actions run."""
    definition: str
    """The policy's name: round-robin turns are counted per policy and level."""
    level: str
    """The level within the policy, `<priority>/<level number>` (`p1/2`)."""
    round_robin: bool = False
    """Each notify action sends once, to the next of its targets in turn across cases."""


@dataclass
class ActionOutcome:
    new_priority: str | None = None
    new_assignee: str | None = None
    new_queue: str | None = None
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _recipient(name: str, target: ActionTarget) -> str:
    if name == "customer":
        return f"customer:{target.customer_id}"
    if name == "assignee":
        return f"agent:{target.assignee}" if target.assignee else "queue:unassigned"
    if name == "owner" and target.owner:
        return f"team:{target.owner}"
    if name == "account_manager":
        return (
            f"agent:{target.account_manager}" if target.account_manager else "team:account-managers"
        )
    return name


def _render(source: str, target: ActionTarget) -> str:
    try:
        return render_string(source, target.template_context)
    except TemplateProblem as exc:
        # A definition passed lint, so this is data the template did not expect: say so in
        # the text rather than lose the whole action.
        return f"{source}\n\n[template could not be rendered: {exc}]"


class LedgerStep(Protocol):
    """A step noted for the ledger, not yet written (a case's PendingLedgerEntry)."""

    @property
    def step(self) -> str: ...
    @property
    def detail(self) -> dict[str, Any]: ...
    @property
    def at(self) -> datetime: ...
    @property
    def key(self) -> str | None: ...


def _ledger_entry(
    target: ActionTarget,
    step: str,
    detail: dict[str, Any],
    *,
    subject: str | None = None,
    at: datetime | None = None,
    key: str | None = None,
) -> LedgerAppend:
    info = workflow.info()
    return LedgerAppend(
        idempotency_key=f"{info.workflow_id}/{key or step}/ledger",
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        kind=target.kind,
        subject=subject or target.ticket_id or target.customer_id,
        step=step,
        detail=detail,
        definition=target.definition,
        at=at or workflow.now(),
    )


async def ledger(
    target: ActionTarget,
    step: str,
    detail: dict[str, Any],
    *,
    subject: str | None = None,
    at: datetime | None = None,
    key: str | None = None,
) -> None:
    """Append `step` to the ledger once; `key` (default: the step) makes it unique in the
    run, so a readable step name may repeat (a case paused twice)."""
    entry = _ledger_entry(target, step, detail, subject=subject, at=at, key=key)
    await call("ledger.append", entry, int)


LEDGER_BATCH = 500
"""Entries written per `ledger.append_many` call, well inside the 2 MB payload limit."""


async def ledger_batch(target: ActionTarget, entries: Sequence[LedgerStep]) -> None:
    """Append several steps at once (the same keys `ledger` uses): what a run has noted
    faster than one write per step keeps up with its commands."""
    rows = [_ledger_entry(target, e.step, e.detail, at=e.at, key=e.key) for e in entries]
    for start in range(0, len(rows), LEDGER_BATCH):
        await call(
            "ledger.append_many", LedgerBatch(entries=rows[start : start + LEDGER_BATCH]), list
        )


async def run_actions(
    actions: list[Action], target: ActionTarget, step: str, *, priority: str | None = None
) -> ActionOutcome:
    """Run `actions` in order for `target`; `step` names them in keys and the ledger."""
    outcome = ActionOutcome()
    base = f"{workflow.info().workflow_id}/{step}"
    for n, action in enumerate(actions):
        try:
            await _run_one(action, f"{base}/{n}", target, outcome, priority)
        except ActivityError as exc:
            # One failed action (a vendor refused it, a ticket is gone) must not end the
            # case: it is recorded, and the remaining actions still run.
            outcome.failed.append(f"{action.type}: {exc.cause or exc}")
    return outcome


def retry_class(action: Action) -> str:
    """The `give_up_after` entry that bounds an action's retries: pager, chat, email,
    webhook, ticketing, crm or start."""
    if isinstance(action, NotifyAction):
        return _CHANNELS[action.channel]
    if isinstance(action, CrmNoteAction | CreditAction):
        return "crm"
    if isinstance(action, StartAction):
        return "start"
    return "ticketing"


def failure_reason(exc: ActivityError, limit: timedelta | None = None) -> str:
    """One line on why an activity did not succeed; a retry limit that ran out says so."""
    cause = exc.cause
    limit_text = f"gave up after {format_duration(limit)}" if limit else "gave up"
    if exc.retry_state == RetryState.TIMEOUT:  # the retry limit ran out: the last error
        if isinstance(cause, TimeoutError) and cause.cause is None:
            return f"{limit_text} of retries"
        return f"{limit_text} of retries; last error: {cause or exc}"
    return str(cause or exc)


# (recipient, alert key, landed): None when the page is sent, then True or False.
PageHook = Callable[[str, str, bool | None], None]


async def run_actions_independently(
    actions: list[Action],
    target: ActionTarget,
    step: str,
    *,
    priority: str | None = None,
    give_up_after: Mapping[str, timedelta] | None = None,
    alert_key: Callable[[str], str] | None = None,
    on_page: PageHook | None = None,
    level: LevelNotice | None = None,
) -> ActionOutcome:
    """Run `actions` side by side, each recipient of a notify on its own: one that fails or
    is still retrying never holds up or skips another. Each retries for at most its
    `give_up_after` entry (see `retry_class`); what failed is in the outcome. set_priority
    steps are planned in order first, so two `raise`s still raise twice. `alert_key` names
    the alert (PagerDuty dedup_key) a page to a recipient belongs to; `on_page` hears of it.
    `level`: the escalation level these actions belong to (its notifications say when it
    fell due; a round-robin level's notify sends once, to the next of its targets)."""
    base = f"{workflow.info().workflow_id}/{step}"
    limits = dict(give_up_after or {})
    planned: dict[int, str] = {}
    current = priority or "p3"
    for n, action in enumerate(actions):
        if isinstance(action, SetPriorityAction):
            current = raised(current) if action.priority == "raise" else action.priority
            planned[n] = current
    notice = level if level is not None and has_change(LEVEL_MOMENT_PATCH) else None

    async def send(
        action: NotifyAction,
        key: str,
        recipient: str,
        limit: timedelta | None,
        turn: RoundRobin | None = None,
    ) -> str:
        """Send one notification to `recipient`, or with `turn`, to the activity's pick among
        its targets (`recipient` then names the level's turn: its alert is one per level)."""
        channel = _CHANNELS[action.channel]
        alert = alert_key(recipient) if alert_key is not None and channel == "pager" else None
        if alert is not None and on_page is not None:
            on_page(recipient, alert, None)
        fields: dict[str, Any] = {
            "idempotency_key": key,
            "channel": channel,
            "recipient": recipient if turn is None else turn.targets[0],
            "template": action.template,
            "context": target.template_context,
            "dedup_key": alert,
        }
        message = (
            SendMessage(**fields)
            if notice is None
            else LevelMessage(**fields, fired_at=notice.fired_at, round_robin=turn)
        )
        try:
            await call("notify.send", message, MessageSent, give_up_after=limit)
        except ActivityError as exc:
            if alert is not None and on_page is not None:
                on_page(recipient, alert, False)
            whom = recipient if turn is None else f"one of {', '.join(turn.targets)}"
            return f"notify {action.channel} to {whom}: {failure_reason(exc, limit)}"
        if alert is not None and on_page is not None:
            on_page(recipient, alert, True)
        return ""

    async def notify(action: NotifyAction, key: str, limit: timedelta | None) -> list[str]:
        """The errors of a notify action's sends: one per recipient, or for a round-robin
        level one send under its own key (a retry keeps the activity's pick)."""
        targets = [_recipient(name, target) for name in action.to]
        if notice is not None and notice.round_robin:
            turn = RoundRobin(definition=notice.definition, level=notice.level, targets=targets)
            return [await send(action, f"{key}/rr", f"round-robin/{notice.level}", limit, turn)]
        return await asyncio.gather(
            *(send(action, f"{key}/{m}", name, limit) for m, name in enumerate(targets))
        )

    async def one(n: int, action: Action) -> ActionOutcome:
        part = ActionOutcome()
        key = f"{base}/{n}"
        limit = limits.get(retry_class(action))
        if isinstance(action, NotifyAction):
            part.failed.extend(error for error in await notify(action, key, limit) if error)
            return part
        try:
            if isinstance(action, SetPriorityAction) and target.ticket_id:
                await call(
                    "ticketing.update_ticket",
                    UpdateTicket(
                        idempotency_key=key, ticket_id=target.ticket_id, priority=planned[n]
                    ),
                    Ticket,
                    give_up_after=limit,
                )
                part.new_priority = planned[n]
            else:
                await _run_one(action, key, target, part, priority, give_up_after=limit)
        except ActivityError as exc:
            part.failed.append(f"{action.type}: {failure_reason(exc, limit)}")
        return part

    outcome = ActionOutcome()
    for part in await asyncio.gather(*(one(n, a) for n, a in enumerate(actions))):
        outcome.new_priority = part.new_priority or outcome.new_priority
        if part.new_assignee or part.new_queue:  # a later assignment replaces an earlier one
            outcome.new_assignee, outcome.new_queue = part.new_assignee, part.new_queue
        outcome.skipped.extend(part.skipped)
        outcome.failed.extend(part.failed)
    return outcome


async def _run_one(
    action: Action,
    key: str,
    target: ActionTarget,
    outcome: ActionOutcome,
    priority: str | None,
    *,
    give_up_after: timedelta | None = None,
) -> None:
    limit = give_up_after
    if isinstance(action, NotifyAction):
        for m, name in enumerate(action.to):
            await call(
                "notify.send",
                SendMessage(
                    idempotency_key=f"{key}/{m}",
                    channel=_CHANNELS[action.channel],
                    recipient=_recipient(name, target),
                    template=action.template,
                    context=target.template_context,
                ),
                MessageSent,
                give_up_after=limit,
            )
    elif isinstance(action, AssignAction) and target.ticket_id:
        await call(
            "ticketing.update_ticket",
            UpdateTicket(
                idempotency_key=key,
                ticket_id=target.ticket_id,
                queue=action.queue,
                assignee=action.agent,
            ),
            Ticket,
            give_up_after=limit,
        )
        outcome.new_queue, outcome.new_assignee = action.queue, action.agent
    elif isinstance(action, SetPriorityAction) and target.ticket_id:
        current = outcome.new_priority or priority or "p3"
        new = raised(current) if action.priority == "raise" else action.priority
        await call(
            "ticketing.update_ticket",
            UpdateTicket(idempotency_key=key, ticket_id=target.ticket_id, priority=new),
            Ticket,
            give_up_after=limit,
        )
        outcome.new_priority = new
    elif isinstance(action, UpdateTicketAction) and target.ticket_id:
        if action.status is not None or action.tags:
            await call(
                "ticketing.update_ticket",
                UpdateTicket(
                    idempotency_key=key,
                    ticket_id=target.ticket_id,
                    status=action.status,
                    add_tags=list(action.tags),
                ),
                Ticket,
                give_up_after=limit,
            )
        if action.comment is not None:
            await call(
                "ticketing.add_comment",
                AddComment(
                    idempotency_key=f"{key}/comment",
                    ticket_id=target.ticket_id,
                    body=_render(action.comment, target),
                ),
                CommentAdded,
                give_up_after=limit,
            )
    elif isinstance(action, CrmNoteAction):
        await call(
            "crm.add_note",
            AddNote(
                idempotency_key=key,
                customer_id=target.customer_id,
                body=_render(action.text, target),
            ),
            NoteAdded,
            give_up_after=limit,
        )
    elif isinstance(action, CreditAction):
        if action.approval_above is not None and action.amount > action.approval_above:
            outcome.skipped.append(f"credit of {action.amount} {action.currency} needs approval")
            return
        await call(
            "crm.apply_credit",
            ApplyCredit(
                idempotency_key=key,
                customer_id=target.customer_id,
                amount=action.amount,
                currency=action.currency,
                reason=action.reason,
            ),
            CreditApplied,
            give_up_after=limit,
        )
    elif isinstance(action, CreateTicketAction):
        await call(
            "ticketing.create_ticket",
            CreateTicket(
                idempotency_key=key,
                customer_id=target.customer_id,
                subject=_render(action.subject, target),
                priority=action.priority,
                queue=action.queue,
                tags=["opsflow", target.kind],
            ),
            Ticket,
            give_up_after=limit,
        )
    elif isinstance(action, ScheduleCallbackAction):
        await call(
            "ticketing.create_ticket",
            CreateTicket(
                idempotency_key=key,
                customer_id=target.customer_id,
                subject="Call the customer back",
                queue=action.queue,
                tags=["opsflow", target.kind, "callback"],
            ),
            Ticket,
            give_up_after=limit,
        )
    elif isinstance(action, StartAction) and target.start_event is not None:
        await call(
            "definitions.start",
            StartDefinition(definition=action.definition, event=target.start_event),
            str,
            give_up_after=limit,
        )
    elif isinstance(action, StartAction):
        outcome.skipped.append(f"start of {action.definition!r} is done by the caller")
    else:
        outcome.skipped.append(f"{action.type} needs a ticket")
