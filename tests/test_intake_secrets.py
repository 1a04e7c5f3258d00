"""Issue 16 item 1: every intake sender's secret is checked at start. Empty (`whsec_` and
nothing after), too short (< 24 bytes after decoding) or not base64 is refused with one
line naming the sender, and nothing ever verifies a signature with an empty key (a request
"signed" with the empty key was accepted as that sender)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest

from activities.webhook_secrets import BadSecret, secret_problem
from intake.app import Intake
from intake.problems import Problem
from intake.signatures import verify_hubspot, verify_standard, verify_zendesk
from tests.conftest import AppDb
from tests.devstack_support import opsflow, opsflow_env
from tests.intake_support import HUBSPOT_SECRET, SECRET, ZENDESK_SECRET, make_intake

BODY = b'{"specversion":"1.0","id":"evt-1","source":"crm","type":"contact.received"}'
KEY_24 = base64.b64encode(b"k" * 24).decode()
KEY_23 = base64.b64encode(b"k" * 23).decode()

BAD = [
    ("crm", "whsec_", "sender 'crm': the secret is empty after whsec_"),
    ("crm", "", "sender 'crm': the secret is empty"),
    ("crm", f"whsec_{KEY_23}", "sender 'crm': the key is 23 bytes after base64 decoding"),
    ("crm", "whsec_not base64!", "sender 'crm': the secret is not base64"),
    # padding missing: strict base64, as Standard Webhooks libraries decode it
    (
        "crm",
        "whsec_" + base64.b64encode(b"k" * 25).decode().rstrip("="),
        "sender 'crm': the secret is not base64",
    ),
    ("zendesk", "", "sender 'zendesk': the secret is empty"),
    ("hubspot", "too-short", "sender 'hubspot': the secret is 9 bytes; at least 24"),
]


@pytest.mark.parametrize(("sender", "secret", "message"), BAD)
def test_bad_secrets_are_named(sender: str, secret: str, message: str) -> None:
    problem = secret_problem(sender, secret)
    assert problem is not None and problem.startswith(message)
    key = secret.removeprefix("whsec_")
    assert len(key) < 5 or key not in problem  # the secret itself is never echoed


@pytest.mark.parametrize(
    ("sender", "secret"),
    [
        ("crm", SECRET),
        ("crm", KEY_24),  # the prefix is optional
        ("zendesk", ZENDESK_SECRET),
        ("hubspot", HUBSPOT_SECRET),
    ],
)
def test_good_secrets_pass(sender: str, secret: str) -> None:
    assert secret_problem(sender, secret) is None


@pytest.mark.parametrize(("sender", "secret", "message"), BAD[::2])
def test_opsflow_intake_refuses_at_start_in_one_line(
    tmp_path: Path, sender: str, secret: str, message: str
) -> None:
    env = opsflow_env(data_dir=tmp_path)
    env["OPSFLOW_INTAKE_SOURCES"] = json.dumps({"ok": SECRET, sender: secret})
    result = opsflow("intake", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "OPSFLOW_INTAKE_SOURCES" in line and message in line
    assert "'ok'" not in line


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_intake_built_in_code_refuses_them_too(app_db: AppDb) -> None:
    intake = make_intake(app_db)
    with pytest.raises(BadSecret, match="sender 'crm': the secret is empty after whsec_"):
        Intake(intake.sessions, {"crm": "whsec_"}, intake.link)


def _empty_key_signature(message: bytes) -> str:
    return base64.b64encode(hmac.new(b"", message, hashlib.sha256).digest()).decode()


def test_nothing_verifies_with_an_empty_key() -> None:
    stamp = str(int(time.time()))
    forged = {
        "webhook-id": "msg_1",
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + _empty_key_signature(f"msg_1.{stamp}.".encode() + BODY),
    }
    with pytest.raises(Problem, match="no usable secret") as refused:
        verify_standard("whsec_", forged, BODY)
    assert refused.value.status == 401

    zendesk = {
        "x-zendesk-webhook-signature": _empty_key_signature(stamp.encode() + BODY),
        "x-zendesk-webhook-signature-timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    zendesk["x-zendesk-webhook-signature"] = _empty_key_signature(
        zendesk["x-zendesk-webhook-signature-timestamp"].encode() + BODY
    )
    with pytest.raises(Problem, match="no usable secret"):
        verify_zendesk("", zendesk, BODY)

    millis = str(int(time.time() * 1000))
    uri = "https://intake.example/v1/webhooks/hubspot"
    hubspot = {
        "x-hubspot-request-timestamp": millis,
        "x-hubspot-signature-v3": _empty_key_signature(
            b"POST" + uri.encode() + BODY + millis.encode()
        ),
    }
    with pytest.raises(Problem, match="no usable secret"):
        verify_hubspot("", "POST", uri, hubspot, BODY)
