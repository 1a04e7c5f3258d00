"""Issue 16 item 4: CloudEvents 1.0 to the letter. Each test names the rule it checks:

- JSON Event Format 1.0 §2.2 (Type System Mapping): "When decoding an event, an attribute
  whose value is JSON null MUST be treated as if it were absent" — null = unset.
- CloudEvents 1.0 core §3.1.1 (Type System, Timestamp): "Date and time expression using
  the Gregorian Calendar", string encoding per RFC 3339; RFC 3339 §5.6 `date-time`
  requires seconds and a time offset.
- HTTP Protocol Binding 1.0 §3.1.3.2 (HTTP Header Values): binary-mode `ce-*` values are
  percent-encoded (space, `"`, `%` and anything outside printable ASCII, as UTF-8) and MUST
  be percent-decoded by the receiver.
- HTTP Protocol Binding 1.0 §3.1.1 (HTTP Content-Type): in binary mode the Content-Type
  header carries `datacontenttype`; there is no `ce-datacontenttype` header.

Binary requests are made with the `cloudevents` package's own HTTP binding (to_binary), so
what a conformant sender produces is what the intake must take.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from intake import inbox
from tests.conftest import AppDb
from tests.intake_support import cloud_event, encode, http, make_intake, post_event, signed_headers

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

DATA = {"customer_id": "C-0001", "channel": "phone"}


async def post_binary(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes
) -> httpx.Response:
    signed = signed_headers(body, content_type=headers.pop("content-type", "application/json"))
    return await client.post("/v1/events/crm", content=body, headers={**headers, **signed})


def binary(attributes: dict[str, Any], data: dict[str, Any] = DATA) -> tuple[dict[str, str], bytes]:
    message = to_binary(
        CloudEvent({"datacontenttype": "application/json", **attributes}, data), JSONFormat()
    )
    headers = {k.lower(): v for k, v in message.headers.items()}
    return headers, message.body


async def test_json_null_optional_attributes_are_absent(app_db: AppDb) -> None:
    """JSON Event Format §2.2: null decodes as unset (was 422)."""
    event = cloud_event(
        "contact.received",
        DATA,
        subject=None,
        time=None,
        dataschema=None,
        datacontenttype=None,
    )
    async with http(make_intake(app_db)) as client:
        answer = await post_event(client, event)
    assert answer.status_code == 202, answer.text
    [row] = await inbox.find(app_db.sessions, event["id"])
    assert (row.subject, row.time) == ("C-0001", None)  # the subject derived, as when absent


async def test_a_required_attribute_null_is_missing(app_db: AppDb) -> None:
    """JSON Event Format §2.2 with core §3.1: id null is id absent, and id is REQUIRED."""
    event = cloud_event("contact.received", DATA, id=None)
    async with http(make_intake(app_db)) as client:
        answer = await post_event(client, event)
    assert answer.status_code == 422
    assert answer.json()["detail"] == "id: required"


@pytest.mark.parametrize(
    "time",
    [
        "2026-11-23T10:00Z",  # minute precision
        "1700000000",  # Unix seconds
        "2026-11-23T10:00:00",  # no offset
        "2026-11-23",  # a date
        "2026-11-23 10:00:00Z",  # a space is not RFC 3339 §5.6's "T"
        "20261123T100000Z",  # ISO 8601 basic format
    ],
)
async def test_time_must_be_rfc3339_with_seconds_and_offset(app_db: AppDb, time: str) -> None:
    """Core §3.1.1 Timestamp + RFC 3339 §5.6: full-date "T" full-time, time-offset required."""
    async with http(make_intake(app_db)) as client:
        structured = await post_event(client, cloud_event("contact.received", DATA, time=time))
        headers, body = binary({"id": "evt-bin", "source": "crm", "type": "contact.received"})
        headers["ce-time"] = time.replace(":", "%3A")
        in_binary = await post_binary(client, headers, body)
    for answer in (structured, in_binary):
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith("time: not an RFC 3339 time with seconds")


@pytest.mark.parametrize(
    "time",
    ["2026-11-23T10:00:00Z", "2026-11-23t10:00:00.123456789z", "2026-11-23T10:00:00.5-05:30"],
)
async def test_rfc3339_times_are_taken(app_db: AppDb, time: str) -> None:
    event = cloud_event("contact.received", DATA, time=time)
    async with http(make_intake(app_db)) as client:
        assert (await post_event(client, event)).status_code == 202
    [row] = await inbox.find(app_db.sessions, event["id"])
    assert row.time is not None and row.time.utcoffset() is not None


async def test_binary_header_values_are_percent_decoded(app_db: AppDb) -> None:
    """HTTP binding §3.1.3.2: the cloudevents package percent-encodes the subject (spaces,
    `%`, `"`, non-ASCII as UTF-8) and the time (`:` stays, `+` stays); we decode them."""
    subject = 'Zoë "VIP" 100% — C-0001'
    moment = datetime(2026, 11, 23, 10, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    headers, body = binary(
        {
            "id": "evt-pct",
            "source": "crm",
            "type": "contact.received",
            "subject": subject,
            "time": moment,
        }
    )
    assert headers["ce-subject"] != subject and "%" in headers["ce-subject"]
    async with http(make_intake(app_db)) as client:
        answer = await post_binary(client, headers, body)
    assert answer.status_code == 202, answer.text
    [row] = await inbox.find(app_db.sessions, "evt-pct")
    assert row.subject == subject
    assert row.time == moment.astimezone(UTC)


async def test_binary_time_fully_percent_encoded_is_taken(app_db: AppDb) -> None:
    """§3.1.3.2: a sender may percent-encode more than it must; decoding gives the time."""
    headers, body = binary({"id": "evt-t", "source": "crm", "type": "contact.received"})
    headers["ce-time"] = "2026-11-23T10%3A00%3A00%2B01%3A00"
    async with http(make_intake(app_db)) as client:
        assert (await post_binary(client, headers, body)).status_code == 202
    [row] = await inbox.find(app_db.sessions, "evt-t")
    assert row.time == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


async def test_binary_percent_encoding_that_is_not_utf8_is_refused(app_db: AppDb) -> None:
    headers, body = binary({"id": "evt-x", "source": "crm", "type": "contact.received"})
    headers["ce-subject"] = "C-0001%FF"
    async with http(make_intake(app_db)) as client:
        answer = await post_binary(client, headers, body)
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("ce-subject: the percent-encoded value is not UTF-8")


async def test_binary_content_type_is_datacontenttype(app_db: AppDb) -> None:
    """HTTP binding §3.1.1: Content-Type carries datacontenttype; ce-datacontenttype is not
    a binary-mode header and is refused (it was accepted, and could contradict it)."""
    headers, body = binary({"id": "evt-ct", "source": "crm", "type": "contact.received"})
    assert headers["content-type"] == "application/json"  # what the package sends
    headers["content-type"] = "application/json; charset=utf-8"
    async with http(make_intake(app_db)) as client:
        assert (await post_binary(client, dict(headers), body)).status_code == 202
        headers["ce-id"] = "evt-ct2"
        headers["ce-datacontenttype"] = "application/json"
        refused = await post_binary(client, headers, body)
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("ce-datacontenttype: not used in binary mode")


async def test_structured_datacontenttype_other_than_json_is_refused(app_db: AppDb) -> None:
    event = cloud_event("contact.received", DATA, datacontenttype="text/plain")
    async with http(make_intake(app_db)) as client:
        answer = await client.post(
            "/v1/events/crm", content=encode(event), headers=signed_headers(encode(event))
        )
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("datacontenttype: only application/json")
