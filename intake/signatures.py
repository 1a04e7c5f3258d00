"""Who may send: Standard Webhooks for opsflow's own senders, and the vendors' own schemes.

All three are HMAC-SHA256 over the raw body bytes, compared in constant time, with the
signed timestamp no more than 5 minutes from our clock.
- Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds), `webhook-signature`
  (space-separated `v1,<base64>`), over `"{id}.{timestamp}.{body}"`, key = base64 of the
  `whsec_` secret.
- Zendesk: `X-Zendesk-Webhook-Signature` = base64(HMAC(secret, timestamp + body)) with
  `X-Zendesk-Webhook-Signature-Timestamp` (ISO 8601).
- HubSpot v3: `X-HubSpot-Signature-v3` = base64(HMAC(client secret, method + URI + body +
  timestamp)) with `X-HubSpot-Request-Timestamp` (Unix milliseconds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from activities.webhook_secrets import BadSecret, standard_key
from intake.problems import Problem, unauthorized

TOLERANCE_SECONDS = 5 * 60


@dataclass(frozen=True)
class Signed:
    """A verified request: which message it was, so a replay can be recognised."""

    message_id: str
    timestamp: str


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _check_age(seconds: float, now: float | None) -> None:
    now = time.time() if now is None else now
    if abs(now - seconds) > TOLERANCE_SECONDS:
        raise unauthorized("the signature timestamp is more than 5 minutes off")


def _vendor_key(secret: str) -> bytes:
    key = secret.encode()
    if not key.strip():
        # never verify with an empty key: anyone could sign (the intake refuses such a
        # sender at start; this is the last line of defence)
        raise unauthorized("this sender has no usable secret")
    return key


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64>` for a Standard Webhooks request (what `opsflow events send` sends)."""
    digest = _hmac(standard_key(secret), f"{message_id}.{timestamp}.".encode() + body)
    return "v1," + base64.b64encode(digest).decode()


def verify_standard(
    secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> Signed:
    message_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (message_id and stamp and signatures):
        raise unauthorized(
            "missing webhook-id, webhook-timestamp or webhook-signature header (Standard Webhooks)"
        )
    if not stamp.isdigit() or len(stamp) > 12:
        raise unauthorized("webhook-timestamp is not Unix seconds")
    _check_age(int(stamp), now)
    try:
        key = standard_key(secret)
    except BadSecret:
        raise unauthorized("this sender has no usable secret") from None
    expected = _hmac(key, f"{message_id}.{stamp}.".encode() + body)
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, given):
            return Signed(message_id[:200], stamp)
    raise unauthorized("no webhook-signature matches the body")


def zendesk_signature(secret: str, timestamp: str, body: bytes) -> str:
    return base64.b64encode(_hmac(_vendor_key(secret), timestamp.encode() + body)).decode()


def verify_zendesk(
    secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> Signed:
    signature = headers.get("x-zendesk-webhook-signature")
    stamp = headers.get("x-zendesk-webhook-signature-timestamp")
    if not (signature and stamp):
        raise unauthorized(
            "missing X-Zendesk-Webhook-Signature or X-Zendesk-Webhook-Signature-Timestamp"
        )
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        raise unauthorized("X-Zendesk-Webhook-Signature-Timestamp is not ISO 8601") from None
    if moment.tzinfo is None:
        raise unauthorized("X-Zendesk-Webhook-Signature-Timestamp has no time zone")
    _check_age(moment.timestamp(), now)
    expected = zendesk_signature(secret, stamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise unauthorized("X-Zendesk-Webhook-Signature does not match the body")
    return Signed(signature, stamp)


_HUBSPOT_DECODED = re.compile(r"%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.IGNORECASE)


def hubspot_uri(uri: str) -> str:
    """The URI as HubSpot signs it: the characters its docs list are percent-decoded."""
    return _HUBSPOT_DECODED.sub(lambda m: unquote(m.group()), uri)


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    message = method.upper().encode() + hubspot_uri(uri).encode() + body + timestamp.encode()
    return base64.b64encode(_hmac(_vendor_key(secret), message)).decode()


def verify_hubspot(
    secret: str,
    method: str,
    uri: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
) -> Signed:
    signature = headers.get("x-hubspot-signature-v3")
    stamp = headers.get("x-hubspot-request-timestamp")
    if not (signature and stamp):
        raise unauthorized("missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp")
    if not stamp.isdigit() or len(stamp) > 15:
        raise unauthorized("X-HubSpot-Request-Timestamp is not Unix milliseconds")
    _check_age(int(stamp) / 1000, now)
    expected = hubspot_signature(secret, method, uri, body, stamp)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise unauthorized("X-HubSpot-Signature-v3 does not match the request")
    return Signed(signature, stamp)


def replayed() -> Problem:
    return unauthorized("this signed request was already received (replayed webhook-id)")
