"""The notify activity: render a template in the recipient's language and send it once."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import structlog
from temporalio import activity

from activities.deps import ActivityDeps
from activities.errors import TEMPLATE_PROBLEM, invalid
from activities.models import MessageSent, PagerEvent, PagerEventSent, SendMessage
from activities.outbox import Effect, Outbox
from activities.ports import OutgoingMessage
from definitions.templates import TemplateProblem, render_message

log = structlog.get_logger(__name__)

CUSTOMER_PREFIX = "customer:"
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
    async def send(self, request: SendMessage) -> MessageSent:
        """Send `template` on `channel` to `recipient`; returns the message id.

        A `customer:<id>` recipient is resolved here (email address, language), so the
        address never enters the workflow's history or the logs."""
        backends = self._deps.resolved_backends
        notifier = backends.notifiers.get(request.channel)
        if notifier is None:
            raise invalid(f"no backend configured for channel {request.channel!r}")
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
