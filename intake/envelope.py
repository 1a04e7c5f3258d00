"""CloudEvents 1.0 in, EventEnvelope out: structured, binary and batch modes.

The envelope's attributes are checked by the `cloudevents` package (required attributes,
spec version, extension names, a time zone on `time`); `data` by the type's pydantic model,
which refuses unknown fields. Every refusal names the field, with a `[n]` prefix in a batch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.v1.event import CloudEvent
from pydantic import ValidationError

from definitions.events import EVENT_TYPES, EventEnvelope, parse_event_data, subject_of
from intake.body import parse_json
from intake.problems import Problem, invalid

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
MAX_BATCH = 100
_ATTRIBUTES = {
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
}
REQUIRED = ("specversion", "id", "source", "type")
# RFC 3339 §5.6 date-time: full-date "T" full-time, seconds and an offset required
# (CloudEvents 1.0 §3.1.1 Timestamp "MUST adhere to RFC 3339"); minute precision, Unix
# seconds and offset-less times are not RFC 3339 and are refused.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def rfc3339(text: str) -> datetime:
    """An RFC 3339 date-time; ValueError for anything else."""
    match = _RFC3339.match(text)
    if not match:
        raise ValueError("not an RFC 3339 time")
    fraction = (match.group(1) or "")[:7]  # Python keeps microseconds: "." and 6 digits
    return datetime.fromisoformat(
        match.group(0)[:19] + fraction + match.group(2).upper().replace("Z", "+00:00")
    )


def _field(prefix: str, name: str) -> str:
    return f"{prefix}{name}" if prefix else name


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def to_envelope(
    attributes: Mapping[str, Any], data: Any, source: str, prefix: str = ""
) -> EventEnvelope:
    """Validate one event's attributes and data; `source` is the authenticated sender."""
    errors: list[dict[str, Any]] = []
    # JSON format §2.2: an attribute whose value is null MUST be decoded as unset. (A
    # required one is then missing and refused as such below.)
    attrs = {k: v for k, v in attributes.items() if k != "data" and v is not None}
    # The cloudevents package fills in a missing id, specversion and time with defaults, so
    # the required attributes are checked here, before it sees them.
    for name in REQUIRED:
        value = attrs.get(name)
        if not isinstance(value, str) or not value:
            problem = "required" if value is None else "must be a non-empty string"
            errors.append({"field": _field(prefix, name), "message": problem})
    if not errors and attrs["specversion"] != "1.0":
        errors.append({"field": _field(prefix, "specversion"), "message": "must be 1.0"})
    if "time" in attrs:
        try:
            if not isinstance(attrs["time"], str):
                raise ValueError("not a string")
            attrs["time"] = rfc3339(attrs["time"])
        except ValueError:
            errors.append(
                {
                    "field": _field(prefix, "time"),
                    "message": "not an RFC 3339 time with seconds and an offset, "
                    "e.g. 2026-11-23T10:00:00Z",
                }
            )
            attrs.pop("time")
    for name in attrs:
        if not isinstance(name, str) or (name not in _ATTRIBUTES and not name.isalnum()):
            errors.append({"field": _field(prefix, str(name)[:60]), "message": "unknown attribute"})
    if not errors:
        try:
            CloudEvent(dict(attrs))
        except CloudEventValidationError as exc:
            for name, problems in exc.errors.items():
                errors.extend({"field": _field(prefix, name), "message": str(p)} for p in problems)
    if errors:
        raise invalid(f"{errors[0]['field']}: {errors[0]['message']}", errors)
    if attrs["source"] != source:
        raise invalid(
            f"{_field(prefix, 'source')}: must be {source!r}, the sender this request is signed as",
            [{"field": _field(prefix, "source"), "message": f"must be {source!r}"}],
        )
    event_type = attrs["type"]
    if event_type not in EVENT_TYPES:
        known = ", ".join(EVENT_TYPES)
        raise invalid(
            f"{_field(prefix, 'type')}: unknown event type {str(event_type)[:80]!r}",
            [{"field": _field(prefix, "type"), "message": f"one of {known}"}],
        )
    content_type = attrs.get("datacontenttype")
    if content_type is not None and content_type.split(";")[0].strip() != "application/json":
        raise invalid(
            f"{_field(prefix, 'datacontenttype')}: only application/json data is accepted",
            [{"field": _field(prefix, "datacontenttype"), "message": "use application/json"}],
        )
    if not isinstance(data, dict):
        raise invalid(
            f"{_field(prefix, 'data')}: must be a JSON object",
            [{"field": _field(prefix, "data"), "message": "must be a JSON object"}],
        )
    try:
        model = parse_event_data(event_type, data)
    except ValidationError as exc:
        found = [
            {
                "field": _field(prefix, _loc(("data", *e["loc"]))),
                "message": str(e["msg"]).removeprefix("Value error, "),
            }
            for e in exc.errors()
        ]
        raise invalid(f"{found[0]['field']}: {found[0]['message']}", found) from None
    subject = attrs.get("subject") or subject_of(event_type, model)
    if len(str(attrs["id"])) > 200 or len(subject) > 200:
        raise invalid(
            "id and subject are at most 200 characters",
            [{"field": _field(prefix, "id"), "message": "at most 200 characters"}],
        )
    return EventEnvelope(
        id=attrs["id"],
        source=source,
        type=event_type,
        subject=subject,
        time=attrs.get("time"),
        data=model.model_dump(mode="json", by_alias=True),
    )


def _structured(document: Any, source: str, prefix: str = "") -> EventEnvelope:
    if not isinstance(document, dict):
        raise invalid(
            f"{prefix or 'body'}: a CloudEvent is a JSON object",
            [{"field": prefix or "body", "message": "must be a JSON object"}],
        )
    return to_envelope(document, document.get("data"), source, prefix)


def binary_attributes(content_type: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The attributes of a binary-mode event (HTTP protocol binding 1.0 §3.1), from its
    headers: `ce-<name>` values percent-decoded as UTF-8 (§3.1.3.2), and `datacontenttype`
    from the Content-Type header (§3.1.1), never from a `ce-datacontenttype` header."""
    attributes: dict[str, Any] = {}
    for key, value in headers.items():
        name = key.lower()
        if not name.startswith("ce-"):
            continue
        if name == "ce-datacontenttype":
            raise invalid(
                "ce-datacontenttype: not used in binary mode; the Content-Type header carries "
                "the data's content type (CloudEvents HTTP binding §3.1.1)",
                [{"field": "ce-datacontenttype", "message": "use the Content-Type header"}],
            )
        try:
            attributes[name[3:]] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise invalid(
                f"{name[:60]}: the percent-encoded value is not UTF-8 (HTTP binding §3.1.3.2)",
                [{"field": name[:60], "message": "percent-encoded bytes must be UTF-8"}],
            ) from None
    attributes["datacontenttype"] = content_type.strip()
    return attributes


def parse_events(
    content_type: str, headers: Mapping[str, str], body: bytes, source: str
) -> list[EventEnvelope]:
    """The events in a request, in order, or a Problem for the first thing wrong."""
    media = content_type.split(";")[0].strip().lower()
    if media == STRUCTURED:
        return [_structured(parse_json(body), source)]
    if media == BATCH:
        document = parse_json(body)
        if not isinstance(document, list):
            raise invalid(
                "a batch is a JSON array of CloudEvents",
                [{"field": "body", "message": "must be a JSON array"}],
            )
        if not 1 <= len(document) <= MAX_BATCH:
            raise invalid(
                f"a batch holds 1 to {MAX_BATCH} events, not {len(document)}",
                [{"field": "body", "message": f"1 to {MAX_BATCH} events"}],
            )
        events = [_structured(item, source, f"[{i}].") for i, item in enumerate(document)]
        ids = [e.id for e in events]
        if len(set(ids)) != len(ids):
            raise invalid("the batch repeats an event id", [{"field": "id", "message": "repeated"}])
        return events
    if media == "application/json":
        attributes = binary_attributes(content_type, headers)
        if "specversion" not in attributes:
            raise invalid(
                "binary mode needs ce-specversion, ce-id, ce-source and ce-type headers",
                [{"field": "ce-specversion", "message": "missing"}],
            )
        return [to_envelope(attributes, parse_json(body), source)]
    raise Problem(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        f"Content-Type {media[:80]!r} is not accepted: send {STRUCTURED}, {BATCH}, or "
        "application/json with ce-* headers",
        [{"field": "Content-Type", "message": "unsupported"}],
    )
