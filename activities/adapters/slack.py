"""Slack, in one of two modes.

- Web API (`OPSFLOW_SLACK_BOT_TOKEN` and `OPSFLOW_SLACK_CHANNEL`): `chat.postMessage` with
  the idempotency key in the message's metadata (`event_type` `opsflow_effect`,
  `event_payload.idempotency_key`). A retry whose earlier attempt may have reached Slack
  first reads the channel's latest messages (`conversations.history` with
  `include_all_metadata`) and returns the message it finds under that key: exactly once,
  as long as the message is among the channel's newest 200.
- Incoming webhook (`OPSFLOW_SLACK_WEBHOOK_URL`): POST {"text": ...}; Slack answers `ok`.
  Incoming webhooks take no idempotency key and cannot read the channel, so a crash after
  Slack accepted a message and before the outbox recorded it posts it again on retry
  (at-least-once). Errors are plain-text codes (`invalid_payload`, `no_service`, ...).

The Web API answers HTTP 200 with `{"ok": false, "error": ...}` for refusals: `ratelimited`
and `internal_error`-like codes are retried, the rest (`channel_not_found`, `not_in_channel`,
`invalid_auth`, ...) fail at once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.adapters.http import VendorHttp
from activities.errors import VENDOR_AUTH, VENDOR_REJECTED, VENDOR_UNAVAILABLE
from activities.outbox import Effect
from activities.ports import OutgoingMessage
from activities.settings import AdapterSettings

MAX_TEXT = 40_000  # Slack truncates messages longer than this
SLACK_API = "https://slack.com/api"
EVENT_TYPE = "opsflow_effect"
HISTORY_LOOKED_AT = "200"
RETRYABLE = {"ratelimited", "internal_error", "fatal_error", "service_unavailable"}
AUTH = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "missing_scope"}


def _escape(text: str) -> str:
    # Slack's mrkdwn control characters: user text must not ping @channel or forge links.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackNotifier:
    name = "slack"
    in_app_database = False

    def __init__(
        self,
        webhook_url: str | None = None,
        *,
        bot_token: str | None = None,
        channel: str | None = None,
        api_url: str = SLACK_API,
        timeout: float = 10.0,
    ) -> None:
        if webhook_url is None and not (bot_token and channel):
            raise ValueError("Slack needs a webhook URL, or a bot token and a channel")
        self._url = webhook_url
        self._channel = channel
        self._web = bot_token is not None and channel is not None
        if self._web:
            self._http = VendorHttp(
                "slack", api_url, headers={"Authorization": f"Bearer {bot_token}"}, timeout=timeout
            )
        else:
            self._http = VendorHttp("slack", webhook_url or "", timeout=timeout)

    @classmethod
    def from_settings(cls, settings: AdapterSettings) -> SlackNotifier:
        token = settings.slack_bot_token
        if token is not None and settings.slack_channel:
            return cls(
                bot_token=token.get_secret_value(),
                channel=settings.slack_channel,
                timeout=settings.http_timeout_seconds,
            )
        assert settings.slack_webhook_url is not None
        return cls(
            settings.slack_webhook_url.get_secret_value(), timeout=settings.http_timeout_seconds
        )

    async def send(self, effect: Effect, message: OutgoingMessage) -> str:
        text = _escape(message.body)
        if message.subject:
            text = f"*{_escape(message.subject)}*\n{text}"
        if self._web:
            return await self._post(effect, text[:MAX_TEXT])
        assert self._url is not None
        await self._http.send("send", "POST", self._url, json={"text": text[:MAX_TEXT]})
        digest = hashlib.sha256(effect.idempotency_key.encode()).hexdigest()[:16]
        return f"slack-{digest}"

    async def _post(self, effect: Effect, text: str) -> str:
        if effect.retry:
            found = await self._posted(effect.idempotency_key)
            if found is not None:
                return found
        body = await self._call(
            "send",
            "POST",
            "/chat.postMessage",
            json={
                "channel": self._channel,
                "text": text,
                "metadata": {
                    "event_type": EVENT_TYPE,
                    "event_payload": {"idempotency_key": effect.idempotency_key},
                },
            },
        )
        return f"slack-{body.get('channel', self._channel)}-{body.get('ts', '')}"

    async def _posted(self, key: str) -> str | None:
        """The message an earlier attempt posted under `key`, from the channel's history."""
        assert self._channel is not None
        body = await self._call(
            "find_message",
            "GET",
            "/conversations.history",
            params={
                "channel": self._channel,
                "limit": HISTORY_LOOKED_AT,
                "include_all_metadata": "true",
            },
        )
        messages = body.get("messages")
        for item in messages if isinstance(messages, list) else []:
            metadata = item.get("metadata") if isinstance(item, dict) else None
            payload = metadata.get("event_payload") if isinstance(metadata, dict) else None
            if isinstance(payload, dict) and payload.get("idempotency_key") == key:
                return f"slack-{self._channel}-{item.get('ts', '')}"
        return None

    async def _call(self, operation: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
        body = await self._http.json(operation, method, path, **kw)
        if body.get("ok") is True:
            return body
        error = str(body.get("error", "unknown_error"))[:100]
        if error in RETRYABLE:
            raise ApplicationError(f"slack {operation}: {error}", type=VENDOR_UNAVAILABLE)
        kind = VENDOR_AUTH if error in AUTH else VENDOR_REJECTED
        raise ApplicationError(f"slack {operation}: {error}", type=kind, non_retryable=True)
