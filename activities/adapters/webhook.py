"""A generic webhook signed per Standard Webhooks (https://www.standardwebhooks.com/), for
notifications and for changes.

Each request is a JSON POST with these headers:

- `webhook-id` and `Idempotency-Key`: the idempotency key (the same on every retry, so the
  receiver can drop duplicates);
- `webhook-timestamp`: Unix seconds when this attempt was signed;
- `webhook-signature`: `v1,` + base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>").

The secret (OPSFLOW_WEBHOOK_SECRET) is `whsec_` + the base64 of the key, as Standard Webhooks
libraries take it, so a receiver verifies with e.g.
`standardwebhooks.Webhook(secret).verify(body, headers)`: over the exact bytes received,
refusing timestamps more than 5 minutes off.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from activities.adapters.http import VendorHttp
from activities.errors import invalid
from activities.models import ApplyChange, ChangeApplied, ChangeReverted, RevertChange
from activities.outbox import Effect
from activities.ports import OutgoingMessage
from activities.settings import AdapterSettings

WHSEC_PREFIX = "whsec_"
TOLERANCE_SECONDS = 5 * 60


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 after the optional `whsec_`."""
    try:
        key = base64.b64decode(secret.strip().removeprefix(WHSEC_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise invalid("the webhook secret is not whsec_ followed by base64") from None
    if not key:
        raise invalid("the webhook secret must not be empty")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` + base64 HMAC-SHA256 over "<id>.<timestamp>.<body>"."""
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def verify(
    key: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = TOLERANCE_SECONDS,
) -> bool:
    """What a receiver does: refuse stale or future timestamps (replays), then accept any `v1`
    signature of the space-separated list that matches, compared in constant time."""
    lowered = {name.lower(): value for name, value in headers.items()}
    webhook_id = lowered.get("webhook-id", "")
    timestamp = lowered.get("webhook-timestamp", "")
    if not webhook_id or not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        return False
    expected = signature(key, webhook_id, int(timestamp), body).encode()
    return any(
        hmac.compare_digest(expected, given.encode())
        for given in lowered.get("webhook-signature", "").split(" ")
    )


class SignedWebhook:
    def __init__(self, url: str, key: bytes, *, timeout: float = 10.0) -> None:
        """`key`: the HMAC key itself (`signing_key` of a `whsec_` secret)."""
        if not key:
            raise invalid("the webhook secret must not be empty")
        self._url = url
        self._key = key
        self._http = VendorHttp("webhook", url, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: AdapterSettings) -> SignedWebhook:
        assert settings.webhook_url is not None and settings.webhook_secret is not None
        return cls(
            settings.webhook_url,
            signing_key(settings.webhook_secret.get_secret_value()),
            timeout=settings.http_timeout_seconds,
        )

    async def post(self, operation: str, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": key,
            "Idempotency-Key": key,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(self._key, key, timestamp, body),
        }
        response = await self._http.send(
            operation, "POST", self._url, content=body, headers=headers
        )
        if not response.content.strip():
            return {}
        try:
            decoded = response.json()
        except (ValueError, RecursionError):
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
