"""Which sender secrets the intake accepts; checked at start, before any request.

- opsflow's own senders sign with Standard Webhooks: the secret is `whsec_` + base64 of
  the key (the prefix is optional), and the key is what HMAC uses, so it must decode (strict
  base64, with padding) to at least MIN_KEY_BYTES bytes.
- `zendesk` and `hubspot` hold the vendors' own secrets (Zendesk's signing secret,
  HubSpot's app client secret), which they use as the HMAC key as written: at least
  MIN_KEY_BYTES bytes of text, not base64-decoded.

An empty key would let anyone sign (HMAC with an empty key is public knowledge), so no
verification ever runs with one (`standard_key` refuses it too).

Standard library only: the settings use this before anything else is imported.
"""

from __future__ import annotations

import base64
import binascii

MIN_KEY_BYTES = 24
VENDOR_SOURCES = frozenset({"zendesk", "hubspot"})
PREFIX = "whsec_"


class BadSecret(ValueError):
    """A sender's secret cannot be used; the message says why (never the secret)."""


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_<base64>`); BadSecret when it is
    empty or not base64."""
    raw = secret.removeprefix(PREFIX).strip()
    if not raw:
        raise BadSecret(
            f"the secret is empty{' after ' + PREFIX if secret.startswith(PREFIX) else ''}"
        )
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadSecret(
            f"the secret is not base64 ({PREFIX} followed by the base64 of the key, e.g. from "
            "`openssl rand -base64 32`)"
        ) from None
    if not key:
        raise BadSecret("the secret decodes to an empty key")
    return key


def secret_problem(sender: str, secret: str) -> str | None:
    """Why `sender` cannot use `secret`, in one line naming the sender; None when it can."""
    try:
        if sender in VENDOR_SOURCES:
            size = len(secret.strip().encode())
            if size == 0:
                raise BadSecret("the secret is empty")
            if size < MIN_KEY_BYTES:
                raise BadSecret(f"the secret is {size} bytes; at least {MIN_KEY_BYTES} are needed")
        else:
            key = standard_key(secret)
            if len(key) < MIN_KEY_BYTES:
                raise BadSecret(
                    f"the key is {len(key)} bytes after base64 decoding; at least "
                    f"{MIN_KEY_BYTES} are needed"
                )
    except BadSecret as exc:
        return f"sender {sender!r}: {exc}"
    return None


def check_sources(sources: dict[str, str]) -> None:
    """BadSecret naming every sender whose secret cannot be used."""
    problems = [p for name, secret in sources.items() if (p := secret_problem(name, secret))]
    if problems:
        raise BadSecret("; ".join(problems))
