"""Signature schemes: Standard Webhooks (checked against the standardwebhooks package),
Zendesk and HubSpot v3 (their documented formulas)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from intake.problems import Problem
from intake.signatures import (
    hubspot_signature,
    standard_signature,
    verify_hubspot,
    verify_standard,
    verify_zendesk,
    zendesk_signature,
)
from tests.intake_support import SECRET

BODY = b'{"specversion":"1.0","id":"evt-1","source":"crm","type":"ticket.created"}'


def headers(body: bytes, secret: str = SECRET, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": standard_signature(secret, "msg_1", stamp, body),
    }


def test_our_signature_is_the_standard_webhooks_one() -> None:
    stamp = int(time.time())
    theirs = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(stamp, UTC), BODY.decode())
    assert standard_signature(SECRET, "msg_1", stamp, BODY) == theirs
    # and the package's verifier accepts what we sign
    Webhook(SECRET).verify(BODY, headers(BODY), json_parse=False)


def test_valid_signature_passes() -> None:
    signed = verify_standard(SECRET, headers(BODY), BODY)
    assert signed.message_id == "msg_1"


def test_one_of_several_signatures_may_match() -> None:
    h = headers(BODY)
    h["webhook-signature"] = "v1,AAAA v2,zzz " + h["webhook-signature"]
    verify_standard(SECRET, h, BODY)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong secret", "no webhook-signature matches"),
        ("old timestamp", "more than 5 minutes off"),
        ("future timestamp", "more than 5 minutes off"),
        ("tampered body", "no webhook-signature matches"),
        ("missing header", "missing webhook-id"),
        ("garbage signature", "no webhook-signature matches"),
        ("timestamp not a number", "not Unix seconds"),
    ],
)
def test_bad_standard_signatures_are_401(case: str, expected: str) -> None:
    body = BODY
    h = headers(BODY)
    if case == "wrong secret":
        h = headers(BODY, secret="whsec_" + base64.b64encode(b"another secret").decode())
    elif case == "old timestamp":
        h = headers(BODY, stamp=int(time.time()) - 301)
    elif case == "future timestamp":
        h = headers(BODY, stamp=int(time.time()) + 301)
    elif case == "tampered body":
        body = BODY.replace(b"evt-1", b"evt-2")
    elif case == "missing header":
        del h["webhook-signature"]
    elif case == "garbage signature":
        h["webhook-signature"] = "v1,!!!not-base64"
    elif case == "timestamp not a number":
        h["webhook-timestamp"] = "1e9"
    with pytest.raises(Problem) as refused:
        verify_standard(SECRET, h, body)
    assert refused.value.status == 401
    assert expected in refused.value.detail


def test_zendesk_documented_scheme() -> None:
    # base64(HMACSHA256(TIMESTAMP + BODY)), the signing secret as the key
    secret = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = b'{"type":"zen:event-type:ticket.created"}'
    expected = base64.b64encode(
        hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    ).decode()
    assert zendesk_signature(secret, stamp, body) == expected
    h = {
        "x-zendesk-webhook-signature": expected,
        "x-zendesk-webhook-signature-timestamp": stamp,
    }
    verify_zendesk(secret, h, body)
    with pytest.raises(Problem, match="does not match"):
        verify_zendesk(secret, h, body + b" ")
    with pytest.raises(Problem, match="does not match"):
        verify_zendesk("other", h, body)
    old = "2020-01-01T00:00:00Z"
    with pytest.raises(Problem, match="5 minutes"):
        verify_zendesk(
            secret,
            {
                "x-zendesk-webhook-signature": zendesk_signature(secret, old, body),
                "x-zendesk-webhook-signature-timestamp": old,
            },
            body,
        )


def test_hubspot_v3_documented_scheme() -> None:
    # base64(HMAC-SHA256(client secret, method + URI + body + timestamp)), URI with the
    # listed characters decoded (%3A -> :, %2F -> /, ...)
    secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
    stamp = str(int(time.time() * 1000))
    body = b'[{"eventId":1,"subscriptionType":"contact.propertyChange"}]'
    uri = "https://example.com/v1/webhooks/hubspot?redirect=https%3A%2F%2Fa.example%2Fb"
    decoded = "https://example.com/v1/webhooks/hubspot?redirect=https://a.example/b"
    expected = base64.b64encode(
        hmac.new(
            secret.encode(), b"POST" + decoded.encode() + body + stamp.encode(), hashlib.sha256
        ).digest()
    ).decode()
    assert hubspot_signature(secret, "POST", uri, body, stamp) == expected
    h = {"x-hubspot-signature-v3": expected, "x-hubspot-request-timestamp": stamp}
    verify_hubspot(secret, "POST", uri, h, body)
    with pytest.raises(Problem, match="does not match"):
        verify_hubspot(secret, "POST", uri, h, body.replace(b"1", b"2"))
    with pytest.raises(Problem, match="does not match"):
        verify_hubspot(secret, "PUT", uri, h, body)
    old = str(int((time.time() - 600) * 1000))
    with pytest.raises(Problem, match="5 minutes"):
        verify_hubspot(
            secret,
            "POST",
            uri,
            {
                "x-hubspot-signature-v3": hubspot_signature(secret, "POST", uri, body, old),
                "x-hubspot-request-timestamp": old,
            },
            body,
        )
