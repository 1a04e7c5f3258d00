"""The outbound webhook signs per Standard Webhooks: a receiver using the `standardwebhooks`
package accepts the adapter's real request, and OPSFLOW_WEBHOOK_SECRET takes the `whsec_`
form, refusing at start a secret nobody could verify (issue 16, item 6)."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from activities.adapters.webhook import SignedWebhook, signature, signing_key, verify
from activities.environment import SettingsError
from activities.settings import AdapterSettings, load_adapter_settings
from tests.activities.conftest import Handler, Reply, Seen, VendorServer

KEY = os.urandom(32)
SECRET = "whsec_" + base64.b64encode(KEY).decode()
BODY = b'{"type":"notify.message","id":"case-6/hook"}'


# the setting takes the `whsec_` form, and the bare base64 key as the intake's senders do
@pytest.mark.parametrize("configured", [SECRET, SECRET.removeprefix("whsec_")])
async def test_a_standard_webhooks_receiver_accepts_the_adapters_real_request(
    vendor: Callable[[Handler], VendorServer], configured: str
) -> None:
    verdicts: list[str] = []

    def receiver(seen: Seen) -> Reply:
        try:
            Webhook(SECRET).verify(seen.body, seen.headers)
        except WebhookVerificationError as exc:
            verdicts.append(f"refused: {exc}")
            return Reply(401, {"error": str(exc)})
        verdicts.append("verified")
        return Reply(200, {"id": "msg-1"})

    server = vendor(receiver)
    settings = AdapterSettings(
        webhook_backend="webhook",
        webhook_url=server.url + "/hooks/opsflow",
        webhook_secret=configured,
    )
    answer = await SignedWebhook.from_settings(settings).post(
        "send", "case-6/hook", {"type": "notify.message", "id": "case-6/hook"}
    )
    assert verdicts == ["verified"] and answer == {"id": "msg-1"}
    [seen] = server.seen
    assert seen.headers["webhook-id"] == seen.headers["idempotency-key"] == "case-6/hook"
    assert seen.headers["webhook-signature"].startswith("v1,")
    # the same request under another secret is refused: the check above is a real one
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(seen.body, seen.headers)


def test_signature_and_verify_match_the_standardwebhooks_package() -> None:
    stamp = int(time.time())
    theirs = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(stamp, UTC), BODY)
    assert signature(signing_key(SECRET), "msg_1", stamp, BODY) == theirs
    headers = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(stamp), "Webhook-Signature": theirs}
    assert verify(KEY, headers, BODY, now=time.time())
    assert not verify(KEY, headers, BODY.replace(b"6", b"7"), now=time.time())
    assert not verify(KEY, headers, BODY, now=time.time() + 301)  # a replay, later
    rotated = {**headers, "Webhook-Signature": "v1,AAAA " + theirs}  # several, one matches
    assert verify(KEY, rotated, BODY, now=time.time())


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("", "the secret is empty"),
        ("whsec_", "the secret is empty after whsec_"),
        ("s3cret passphrase", "the secret is not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "the key is 5 bytes"),
    ],
)
def test_an_unusable_secret_is_a_settings_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, secret: str, reason: str
) -> None:
    monkeypatch.setenv("OPSFLOW_WEBHOOK_BACKEND", "webhook")
    monkeypatch.setenv("OPSFLOW_WEBHOOK_URL", "https://hooks.example/opsflow")
    monkeypatch.setenv("OPSFLOW_WEBHOOK_SECRET", secret)
    with pytest.raises(SettingsError) as caught:
        load_adapter_settings()
    assert str(caught.value).startswith(f"OPSFLOW_WEBHOOK_SECRET: {reason}")
    if secret.removeprefix("whsec_"):
        assert secret.removeprefix("whsec_") not in str(caught.value)  # never shown
