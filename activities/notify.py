"""The notify activity: render a template in the recipient's language and send it once.

Recipients resolved here, so addresses never enter a workflow's history or the logs:
`customer:<id>` (the CRM's contact), and `oncall:<schedule>`, the person on call when the
escalation level fired (the schedule's newest deployed version with the overrides stored by
`opsflow oncall override`), reached through the people directory. A level with
`round_robin: true` sends to one of its targets, the next in turn across cases; the pick is
stored per idempotency key, so a retry sends to the same target.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

import structlog
from temporalio import activity

from activities.deps import ActivityDeps
from activities.errors import TEMPLATE_PROBLEM, invalid
from activities.models import MessageSent, PagerEvent, PagerEventSent, SendMessage
from activities.oncall_contracts import LevelMessage
from activities.outbox import Effect, Outbox
from activities.people import PeopleDirectory
from activities.ports import OutgoingMessage
from definitions.errors import OpsflowError
from definitions.schedule import schedule_name
from definitions.templates import TemplateProblem, render_message
from store import oncall

log = structlog.get_logger(__name__)

CUSTOMER_PREFIX = "customer:"
AGENT_PREFIX = "agent:"
FALLBACK_LANGUAGE = "en"


@runtime_checkable
class AlertFollower(Protocol):
    """A pager backend whose alerts can be acknowledged and resolved (PagerDuty)."""

    @property
    def name(self) -> str: ...

    @property
    def in_app_database(self) -> bool: ...

    async def follow(self, effect: Effect, dedup_key: str, action: str) -> str: ...


class NotifyActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self._deps = deps
        self._outbox = Outbox(deps.sessions)

    @activity.defn(name="notify.send")
    async def send(self, request: LevelMessage | SendMessage) -> MessageSent:
        """Send `template` on `channel` to `recipient`; returns the message id.

        `customer:<id>` and `oncall:<schedule>` recipients are resolved here (address,
        language), so the address never enters the workflow's history or the logs. A
        LevelMessage (an escalation level's) may carry when the level fired and the targets
        of a round-robin level."""
        backends = self._deps.resolved_backends
        notifier = backends.notifiers.get(request.channel)
        if notifier is None:
            raise invalid(f"no backend configured for channel {request.channel!r}")
        target, on_call = await self._target(request)
        if on_call is not None:
            recipient = await self._person(on_call, request.channel)
            language, customer_id = request.language or FALLBACK_LANGUAGE, None
        else:
            if target != request.recipient:
                request = request.model_copy(update={"recipient": target})
            recipient, language, customer_id = await self._resolve(request)
        try:
            rendered = render_message(
                request.template,
                language,
                request.context,
                folder=self._deps.template_folder,
            )
        except TemplateProblem as exc:
            raise invalid(f"template {request.template!r}: {exc}", type=TEMPLATE_PROBLEM) from None
        message = OutgoingMessage(
            channel=request.channel,
            recipient=recipient,
            subject=rendered.subject,
            body=rendered.body,
            language=rendered.language,
            template=request.template,
            severity=request.severity,
            customer_id=customer_id,
            dedup_key=request.dedup_key,
        )

        async def deliver(effect: Effect) -> MessageSent:
            message_id = await notifier.send(effect, message)
            return MessageSent(
                message_id=message_id,
                channel=request.channel,
                backend=notifier.name,
                language=rendered.language,
            )

        sent = await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="notify",
            operation=f"send_{request.channel}",
            backend=notifier,
            result_type=MessageSent,
            act=deliver,
        )
        log.info(
            "notify.sent",
            channel=request.channel,
            template=request.template,
            language=sent.language,
            backend=sent.backend,
            customer_id=customer_id,
            message_id=sent.message_id,
        )
        return sent

    @activity.defn(name="notify.pager_event")
    async def pager_event(self, request: PagerEvent) -> PagerEventSent:
        """Acknowledge or resolve the alert a case's pages opened, once per idempotency key.
        A pager backend without alerts (the sandbox outbox) has nothing to follow."""
        notifier = self._deps.resolved_backends.notifiers.get("pager")
        if not isinstance(notifier, AlertFollower):
            backend = notifier.name if notifier is not None else "none"
            return PagerEventSent(backend=backend, followed=False)
        follower = notifier

        async def deliver(effect: Effect) -> PagerEventSent:
            await follower.follow(effect, request.dedup_key, request.action)
            return PagerEventSent(backend=follower.name, followed=True)

        sent = await self._outbox.run(
            idempotency_key=request.idempotency_key,
            system="notify",
            operation=f"pager_{request.action}",
            backend=follower,
            result_type=PagerEventSent,
            act=deliver,
        )
        log.info("notify.pager_event", action=request.action, backend=sent.backend)
        return sent

    async def _target(self, request: LevelMessage | SendMessage) -> tuple[str, str | None]:
        """The recipient this message goes to: a round-robin level's pick (stored, so a
        retry keeps it) or the request's; and for an `oncall:<schedule>` target, the person
        on call when the level fired."""
        level = request if isinstance(request, LevelMessage) else None
        target = request.recipient
        if level is not None and level.round_robin is not None:
            turn = level.round_robin
            target = await oncall.pick_round_robin(
                self._deps.sessions,
                request.idempotency_key,
                turn.definition,
                turn.level,
                list(turn.targets),
            )
        schedule = schedule_name(target)
        if schedule is None:
            return target, None
        fired_at = level.fired_at if level is not None else None
        return target, await self._on_call(schedule, fired_at or _first_scheduled())

    async def _on_call(self, schedule: str, at: datetime) -> str:
        """The person on call for `schedule` at `at` (stored overrides included)."""
        try:
            person = await oncall.on_call(self._deps.sessions, schedule, at)
        except OpsflowError as exc:  # no such schedule: retrying cannot help
            raise invalid(f"oncall:{schedule}: {exc}") from None
        if person is None:
            raise invalid(f"no one is on call for schedule {schedule!r} at {at.isoformat()}")
        log.info("notify.on_call", schedule=schedule, at=at.isoformat())
        return person

    async def _person(self, person: str, channel: str) -> str:
        """Where a message to a person on call (directory id or email) goes: on email, their
        address from the people directory; elsewhere `agent:<id>`, as an assignee is named
        (the pager's or chat's destination is configured; the recipient says who is meant)."""
        crm = self._deps.resolved_backends.crm
        contact = await crm.person(person) if isinstance(crm, PeopleDirectory) else None
        if channel != "email":
            return f"{AGENT_PREFIX}{contact.person_id if contact else person}"
        if contact is not None and contact.email:
            return contact.email
        if "@" in person:
            return person
        raise invalid(f"person {person!r} has no email address in the directory")

    async def _resolve(self, request: SendMessage) -> tuple[str, str, str | None]:
        """(address, language, customer id) for the request's recipient."""
        if not request.recipient.startswith(CUSTOMER_PREFIX):
            return request.recipient, request.language or FALLBACK_LANGUAGE, None
        customer_id = request.recipient.removeprefix(CUSTOMER_PREFIX)
        contact = await self._deps.resolved_backends.crm.contact(customer_id)
        language = request.language or contact.language or FALLBACK_LANGUAGE
        if request.channel == "email":
            if not contact.email:
                raise invalid(f"customer {customer_id!r} has no email address")
            return contact.email, language, customer_id
        # Chat, pager and webhook messages about a customer go to the configured destination;
        # the recipient names the customer only.
        return request.recipient, language, customer_id


def _first_scheduled() -> datetime:
    """When this activity was first scheduled: the same on every retry, and right after the
    level fired unless the worker was down (a workflow that passes `fired_at` says exactly)."""
    return activity.info().scheduled_time
