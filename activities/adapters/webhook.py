"""A generic webhook signed with HMAC-SHA256, for notifications and for changes.

Each request is a JSON POST with these headers:

- `Webhook-Id` and `Idempotency-Key`: the idempotency key (the same on every retry, so the
  receiver can drop duplicates);
- `Webhook-Timestamp`: Unix seconds when this attempt was signed;
- `Webhook-Signature`: `sha256=` + hex HMAC-SHA256(secret, "<timestamp>.<id>.<body>").

Receivers verify the signature over the exact bytes received and reject stale timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

from activities.adapters.http import VendorHttp
from activities.errors import invalid
from activities.models import ApplyChange, ChangeApplied, ChangeReverted, RevertChange
from activities.outbox import Effect
from activities.ports import OutgoingMessage
from activities.settings import AdapterSettings

SIGNATURE_HEADER = "Webhook-Signature"


def signature(secret: bytes, timestamp: str, webhook_id: str, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.{webhook_id}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: bytes, headers: dict[str, str], body: bytes, *, now: float, tolerance: float = 300
) -> bool:
    """What a receiver does: constant-time compare, and refuse replays of old requests."""
    timestamp = headers.get("webhook-timestamp", "")
    webhook_id = headers.get("webhook-id", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        return False
    expected = signature(secret, timestamp, webhook_id, body)
    return hmac.compare_digest(expected, headers.get("webhook-signature", ""))


class SignedWebhook:
    def __init__(self, url: str, secret: bytes, *, timeout: float = 10.0) -> None:
        if not secret:
            raise invalid("the webhook secret must not be empty")
        self._url = url
        self._secret = secret
        self._http = VendorHttp("webhook", url, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: AdapterSettings) -> SignedWebhook:
        assert settings.webhook_url is not None and settings.webhook_secret is not None
        return cls(
            settings.webhook_url,
            settings.webhook_secret.get_secret_value().encode(),
            timeout=settings.http_timeout_seconds,
        )

    async def post(self, operation: str, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Webhook-Id": key,
            "Idempotency-Key": key,
            "Webhook-Timestamp": timestamp,
            SIGNATURE_HEADER: signature(self._secret, timestamp, key, body),
        }
        response = await self._http.send(
            operation, "POST", self._url, content=body, headers=headers
        )
        if not response.content.strip():
            return {}
        try:
            decoded = response.json()
        except ValueError:
            return {}  # receivers may answer 2xx with any body; the status is the contract
        return decoded if isinstance(decoded, dict) else {}


class WebhookNotifier:
    name = "webhook"
    in_app_database = False

    def __init__(self, webhook: SignedWebhook) -> None:
        self._webhook = webhook

    async def send(self, effect: Effect, message: OutgoingMessage) -> str:
        answer = await self._webhook.post(
            "send",
            effect.idempotency_key,
            {
                "type": "notify.message",
                "id": effect.idempotency_key,
                "channel": message.channel,
                "recipient": message.recipient,
                "customer_id": message.customer_id,
                "subject": message.subject,
                "body": message.body,
                "language": message.language,
                "template": message.template,
                "severity": message.severity,
            },
        )
        message_id = answer.get("id")
        return str(message_id) if message_id else effect.idempotency_key


class WebhookChanges:
    name = "webhook"
    in_app_database = False

    def __init__(self, webhook: SignedWebhook) -> None:
        self._webhook = webhook

    async def apply(
        self, effect: Effect, request: ApplyChange, members: Sequence[str]
    ) -> ChangeApplied:
        answer = await self._webhook.post(
            "apply",
            effect.idempotency_key,
            {
                "type": "change.apply",
                "change_id": request.change_id,
                "flag_key": request.flag_key,
                "value": request.value,
                "cohort": request.cohort.model_dump(mode="json"),
                "customer_ids": list(members),
            },
        )
        total = answer.get("total_exposed", len(members))
        return ChangeApplied(
            change_id=request.change_id,
            exposed=int(answer.get("exposed", len(members))),
            total_exposed=int(total),
        )

    async def revert(
        self, effect: Effect, request: RevertChange, members: Sequence[str] | None = None
    ) -> ChangeReverted:
        """`change.revert`: the whole change when `cohort` is null; otherwise one phase's own
        customers: `customer_ids`, i.e. members of `cohort` that are in none of the `earlier`
        cohorts (receivers may recompute them from the specs, see activities/cohorts.py)."""
        payload: dict[str, Any] = {
            "type": "change.revert",
            "change_id": request.change_id,
            "flag_key": request.flag_key,
            "cohort": None,
        }
        if request.cohort is not None:
            payload["cohort"] = request.cohort.model_dump(mode="json")
            payload["earlier"] = [spec.model_dump(mode="json") for spec in request.earlier]
            payload["customer_ids"] = list(members or [])
        answer = await self._webhook.post("revert", effect.idempotency_key, payload)
        default = len(members) if members is not None else 0
        return ChangeReverted(
            change_id=request.change_id, reverted=int(answer.get("reverted", default))
        )
