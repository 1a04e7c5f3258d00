"""Builds each system's backend from the adapter settings (sandbox unless configured)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.adapters.hubspot import HubSpotCrm
from activities.adapters.pagerduty import PagerDutyNotifier
from activities.adapters.prometheus import PrometheusMetrics
from activities.adapters.sandbox import (
    SandboxChanges,
    SandboxCredits,
    SandboxCrm,
    SandboxMetrics,
    SandboxNotifier,
    SandboxTicketing,
)
from activities.adapters.sandbox_presence import SandboxPresence
from activities.adapters.slack import SlackNotifier
from activities.adapters.smtp_email import SmtpNotifier
from activities.adapters.webhook import SignedWebhook, WebhookChanges, WebhookNotifier
from activities.adapters.zendesk import ZendeskTicketing
from activities.models import Channel
from activities.ports import (
    ChangesPort,
    CreditsPort,
    CrmPort,
    MetricsPort,
    NotifierPort,
    PresencePort,
    TicketingPort,
)
from activities.settings import AdapterSettings


@dataclass(frozen=True)
class Backends:
    crm: CrmPort
    credits: CreditsPort
    ticketing: TicketingPort
    changes: ChangesPort
    metrics: MetricsPort
    presence: PresencePort
    notifiers: dict[Channel, NotifierPort] = field(default_factory=dict)

    @classmethod
    def sandbox(cls, sessions: async_sessionmaker[AsyncSession]) -> Backends:
        notifier = SandboxNotifier(sessions)
        return cls(
            crm=SandboxCrm(sessions),
            credits=SandboxCredits(sessions),
            ticketing=SandboxTicketing(sessions),
            changes=SandboxChanges(sessions),
            metrics=SandboxMetrics(sessions),
            presence=SandboxPresence(sessions),
            notifiers={"email": notifier, "chat": notifier, "pager": notifier, "webhook": notifier},
        )

    @classmethod
    def from_settings(
        cls, settings: AdapterSettings, sessions: async_sessionmaker[AsyncSession]
    ) -> Backends:
        sandbox = cls.sandbox(sessions)
        webhook = (
            SignedWebhook.from_settings(settings)
            if "webhook" in (settings.webhook_backend, settings.changes_backend)
            else None
        )
        notifiers = dict(sandbox.notifiers)
        if settings.email_backend == "smtp":
            notifiers["email"] = SmtpNotifier.from_settings(settings)
        if settings.chat_backend == "slack":
            notifiers["chat"] = SlackNotifier.from_settings(settings)
        if settings.pager_backend == "pagerduty":
            notifiers["pager"] = PagerDutyNotifier.from_settings(settings)
        if settings.webhook_backend == "webhook" and webhook is not None:
            notifiers["webhook"] = WebhookNotifier(webhook)
        return cls(
            crm=HubSpotCrm.from_settings(settings)
            if settings.crm_backend == "hubspot"
            else sandbox.crm,
            credits=sandbox.credits,
            ticketing=ZendeskTicketing.from_settings(settings)
            if settings.ticketing_backend == "zendesk"
            else sandbox.ticketing,
            changes=WebhookChanges(webhook)
            if settings.changes_backend == "webhook" and webhook is not None
            else sandbox.changes,
            metrics=PrometheusMetrics.from_settings(settings)
            if settings.metrics_backend == "prometheus"
            else sandbox.metrics,
            presence=sandbox.presence,
            notifiers=notifiers,
        )
