"""PagerDuty Events API v2: POST /v2/enqueue with the integration's routing key.

A page's `dedup_key` is the message's alert key (one per case and recipient) or else the
idempotency key: PagerDuty folds repeated triggers with the same key into one alert, so a
retried page never pages twice, and `acknowledge` / `resolve` with that key follow the case.
202 means accepted; 400 is an invalid event (not retried); 429 is throttling.
"""

from __future__ import annotations

from activities.adapters.http import VendorHttp
from activities.errors import protocol_error
from activities.outbox import Effect
from activities.ports import OutgoingMessage
from activities.settings import AdapterSettings

MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255


class PagerDutyNotifier:
    name = "pagerduty"
    in_app_database = False

    def __init__(
        self, routing_key: str, *, url: str, source: str = "opsflow", timeout: float = 10.0
    ) -> None:
        self._routing_key = routing_key
        self._source = source
        self._http = VendorHttp("pagerduty", url, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: AdapterSettings) -> PagerDutyNotifier:
        assert settings.pagerduty_routing_key is not None
        return cls(
            settings.pagerduty_routing_key.get_secret_value(),
            url=settings.pagerduty_url,
            source=settings.pagerduty_source,
            timeout=settings.http_timeout_seconds,
        )

    async def send(self, effect: Effect, message: OutgoingMessage) -> str:
        dedup_key = (message.dedup_key or effect.idempotency_key)[:MAX_DEDUP_KEY]
        summary = message.subject or message.body.strip().split("\n", 1)[0] or message.template
        body = await self._http.json(
            "send",
            "POST",
            "/v2/enqueue",
            json={
                "routing_key": self._routing_key,
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "payload": {
                    "summary": summary[:MAX_SUMMARY],
                    "source": self._source,
                    "severity": message.severity,
                    "custom_details": {
                        "body": message.body,
                        "template": message.template,
                        "recipient": message.recipient,
                    },
                },
            },
        )
        if body.get("status") != "success":
            raise protocol_error("pagerduty", "send", f"status {body.get('status')!r}")
        return str(body.get("dedup_key") or dedup_key)

    async def follow(self, effect: Effect, dedup_key: str, action: str) -> str:
        """Acknowledge or resolve the alert `dedup_key` (no payload: PagerDuty needs none)."""
        key = dedup_key[:MAX_DEDUP_KEY]
        body = await self._http.json(
            action,
            "POST",
            "/v2/enqueue",
            json={"routing_key": self._routing_key, "event_action": action, "dedup_key": key},
        )
        if body.get("status") != "success":
            raise protocol_error("pagerduty", action, f"status {body.get('status')!r}")
        return str(body.get("dedup_key") or key)
