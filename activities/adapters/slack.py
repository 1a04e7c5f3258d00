"""Slack incoming webhooks: POST {"text": ...} to the webhook URL; Slack answers `ok`.

Slack documents no idempotency key for incoming webhooks, so a crash after Slack accepted a
message and before the outbox recorded it posts the message again on retry (the outbox's
at-least-once window). Errors are plain-text codes (`invalid_payload`, `no_service`, ...).
"""

from __future__ import annotations

import hashlib

from activities.adapters.http import VendorHttp
from activities.outbox import Effect
from activities.ports import OutgoingMessage
from activities.settings import AdapterSettings

MAX_TEXT = 40_000  # Slack truncates messages longer than this


def _escape(text: str) -> str:
    # Slack's mrkdwn control characters: user text must not ping @channel or forge links.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackNotifier:
    name = "slack"
    in_app_database = False

    def __init__(self, webhook_url: str, *, timeout: float = 10.0) -> None:
        self._url = webhook_url
        self._http = VendorHttp("slack", webhook_url, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: AdapterSettings) -> SlackNotifier:
        assert settings.slack_webhook_url is not None
        return cls(
            settings.slack_webhook_url.get_secret_value(), timeout=settings.http_timeout_seconds
        )

    async def send(self, effect: Effect, message: OutgoingMessage) -> str:
        text = _escape(message.body)
        if message.subject:
            text = f"*{_escape(message.subject)}*\n{text}"
        await self._http.send("send", "POST", self._url, json={"text": text[:MAX_TEXT]})
        digest = hashlib.sha256(effect.idempotency_key.encode()).hexdigest()[:16]
        return f"slack-{digest}"
