"""Vendor webhook payloads mapped to opsflow event types.

Zendesk event subscriptions (`zen:event-type:ticket.*`, one event per request, with `id`,
`time`, `detail` = the ticket and `event` = {previous, current}):
  ticket.created → ticket.created; status_changed → ticket.updated (status), ticket.solved
  (to SOLVED/CLOSED) or ticket.reopened (from SOLVED/CLOSED); priority_changed, agent and
  group assignment → ticket.updated; comment_added (`event.comment` with `is_public` and
  `author.is_staff`) → ticket.updated with `public_reply_by` (an agent's public comment) or
  `requester_reply_by` (an end user's public comment), the author's id. A private comment
  (an internal note) counts for no SLA metric: it is recorded `rejected` with the reason
  (`inbox.Refused`), answered 2xx, so Zendesk does not retry it (vendors retry non-2xx
  answers forever); so is any other type, listed by `opsflow events list --rejected`.
HubSpot webhooks (a JSON array of events with `eventId`, `objectId`, `propertyName`,
`propertyValue`, `occurredAt` in ms; what happened is in `subscriptionType`, or in
`eventType`, the name HubSpot's subscription API gives the same values):
  a contact's `lifecyclestage` change → journey.stage_changed, whether it comes as the legacy
  `contact.propertyChange` or as the generic `object.propertyChange` with `objectTypeId` 0-1.
  Every other event (another kind or property, or fields that do not validate) is recorded
  in the inbox as it came, `rejected` with the reason (`inbox.Refused`): answered 2xx, so
  HubSpot does not retry it forever, yet listed by `opsflow events list --rejected`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from definitions.events import EventEnvelope
from intake.envelope import rfc3339, to_envelope
from intake.inbox import Refused
from intake.problems import Problem, invalid

ZENDESK_PRIORITY = {"URGENT": "p1", "HIGH": "p2", "NORMAL": "p3", "LOW": "p4"}
ZENDESK_STATUS = {
    "NEW": "new",
    "OPEN": "open",
    "PENDING": "pending",
    "HOLD": "on_hold",
    "SOLVED": "solved",
    "CLOSED": "closed",
}
ZENDESK_CHANNEL = {
    "email": "email",
    "web": "web",
    "chat": "chat",
    "voice": "phone",
    "sms": "sms",
    "api": "web",
    "mobile": "chat",
    "twitter": "social",
    "facebook": "social",
    "native_messaging": "chat",
}

ZENDESK_UNMAPPED = (
    "only ticket.created, status_changed, priority_changed, agent_assignment_changed, "
    "group_assignment_changed and public comments (comment_added) map"
)


def _need(document: Any, path: str) -> Any:
    value = document
    for part in path.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            raise invalid(f"{path}: missing", [{"field": path, "message": "missing"}])
        value = value[part]
    return value


def _text(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise invalid(f"{path}: must be a string or number", [{"field": path, "message": "type"}])
    return str(value)


def _upper(value: Any, path: str, table: dict[str, str]) -> str:
    text = _text(value, path).upper()
    if text not in table:
        raise invalid(
            f"{path}: unknown value {text[:40]!r}", [{"field": path, "message": "unknown value"}]
        )
    return table[text]


def _flag(document: Any, path: str) -> bool:
    value = _need(document, path)
    if not isinstance(value, bool):
        raise invalid(f"{path}: must be true or false", [{"field": path, "message": "boolean"}])
    return value


def _zendesk_refused(document: dict[str, Any], ticket: str, reason: str) -> Refused:
    kind = _text(_need(document, "type"), "type")
    try:
        moment = rfc3339(document["time"]) if isinstance(document.get("time"), str) else None
    except ValueError:
        moment = None
    return Refused(
        id=_text(_need(document, "id"), "id"),
        source="zendesk",
        type=kind[:64],
        subject=ticket,
        time=moment,
        data=document,
        reason=f"not mapped to an opsflow event: Zendesk {kind.removeprefix('zen:event-type:')}: "
        f"{reason}",
    )


def zendesk_events(document: Any) -> list[EventEnvelope]:
    if not isinstance(document, dict):
        raise invalid("a Zendesk event is a JSON object", [{"field": "body", "message": "object"}])
    kind = _text(_need(document, "type"), "type").removeprefix("zen:event-type:")
    detail = _need(document, "detail")
    ticket = _text(_need(document, "detail.id"), "detail.id")
    customer = detail.get("requester_id") if isinstance(detail, dict) else None
    data: dict[str, Any] = {"ticket_id": ticket}
    if customer is not None:
        data["customer_id"] = _text(customer, "detail.requester_id")
    raw_change = document.get("event")
    change: dict[str, Any] = raw_change if isinstance(raw_change, dict) else {}
    if kind == "ticket.created":
        data["customer_id"] = _text(_need(document, "detail.requester_id"), "detail.requester_id")
        if detail.get("priority"):
            data["priority"] = _upper(detail["priority"], "detail.priority", ZENDESK_PRIORITY)
        channel = (
            (detail.get("via") or {}).get("channel")
            if isinstance(detail.get("via"), dict)
            else None
        )
        if isinstance(channel, str):
            data["channel"] = ZENDESK_CHANNEL.get(channel.lower(), "web")
        if isinstance(detail.get("subject"), str):
            data["subject"] = detail["subject"][:500]
        event_type = "ticket.created"
    elif kind == "ticket.status_changed":
        current = _upper(_need(document, "event.current"), "event.current", ZENDESK_STATUS)
        previous = change.get("previous")
        was = ZENDESK_STATUS.get(str(previous).upper()) if previous is not None else None
        if current in ("solved", "closed"):
            event_type = "ticket.solved"
        elif was in ("solved", "closed"):
            event_type = "ticket.reopened"
        else:
            event_type, data["status"] = "ticket.updated", current
    elif kind == "ticket.priority_changed":
        event_type = "ticket.updated"
        data["priority"] = _upper(
            _need(document, "event.current"), "event.current", ZENDESK_PRIORITY
        )
    elif kind == "ticket.agent_assignment_changed":
        event_type = "ticket.updated"
        data["assignee"] = _text(_need(document, "event.current"), "event.current")
    elif kind == "ticket.group_assignment_changed":
        event_type = "ticket.updated"
        data["group"] = _text(_need(document, "event.current"), "event.current")
    elif kind == "ticket.comment_added":
        author = _text(_need(document, "event.comment.author.id"), "event.comment.author.id")
        if not _flag(document, "event.comment.is_public"):
            return [_zendesk_refused(document, ticket, "an internal note counts for no metric")]
        # Staff (agents, admins) answer the requester; anyone else is an end user writing in.
        if _flag(document, "event.comment.author.is_staff"):
            data["public_reply_by"] = author
        else:
            data["requester_reply_by"] = author
        event_type = "ticket.updated"
    else:
        return [_zendesk_refused(document, ticket, ZENDESK_UNMAPPED)]
    attributes = {
        "specversion": "1.0",
        "id": _text(_need(document, "id"), "id"),
        "source": "zendesk",
        "type": event_type,
        "subject": ticket,
    }
    if isinstance(document.get("time"), str):
        attributes["time"] = document["time"]
    return [to_envelope(attributes, data, "zendesk")]


HUBSPOT_CONTACT_TYPE = "0-1"  # objectTypeId of contacts in generic (object.*) webhooks
LIFECYCLE_STAGE = "lifecyclestage"


def _hubspot_kind(item: dict[str, Any]) -> str | None:
    # `eventType` carries the same values under the subscription API's name for them
    for name in ("subscriptionType", "eventType"):
        value = item.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _is_lifecycle_change(kind: str, item: dict[str, Any]) -> bool:
    if item.get("propertyName") != LIFECYCLE_STAGE:
        return False
    if kind == "contact.propertyChange":
        return True
    # generic webhooks use one kind for every object type and name the type apart
    return kind == "object.propertyChange" and item.get("objectTypeId") == HUBSPOT_CONTACT_TYPE


def _occurred(item: dict[str, Any]) -> datetime | None:
    """`occurredAt` (Unix milliseconds) as a time; None when absent; ValueError when out of
    range."""
    occurred = item.get("occurredAt")
    if not isinstance(occurred, int) or isinstance(occurred, bool):
        return None
    try:
        return datetime.fromtimestamp(occurred / 1000, UTC)
    except (OverflowError, OSError) as exc:
        raise ValueError("out of range") from exc


def _hubspot_stage_change(item: dict[str, Any]) -> EventEnvelope:
    customer = _text(_need(item, "objectId"), "objectId")
    try:
        moment = _occurred(item)
    except ValueError:
        raise invalid(
            "occurredAt: out of range", [{"field": "occurredAt", "message": "out of range"}]
        ) from None
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": _text(_need(item, "eventId"), "eventId"),
        "source": "hubspot",
        "type": "journey.stage_changed",
        "subject": customer,
        "time": moment.isoformat() if moment else None,
    }
    data = {
        "customer_id": customer,
        "to_stage": _text(_need(item, "propertyValue"), "propertyValue"),
    }
    return to_envelope(attributes, data, "hubspot")


def _identifier(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if 0 < len(text) <= 200 else None


def _hubspot_refused(item: dict[str, Any], kind: str | None, reason: str) -> Refused:
    # Without a usable eventId, a digest of the event itself still makes HubSpot's retries of
    # it one inbox row.
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":")).encode()
    digest = f"digest-{hashlib.sha256(canonical).hexdigest()[:40]}"
    try:
        moment = _occurred(item)
    except ValueError:
        moment = None
    return Refused(
        id=_identifier(item.get("eventId")) or digest,
        source="hubspot",
        type=f"hubspot:{kind or 'unknown'}"[:64],
        subject=_identifier(item.get("objectId")) or "",
        time=moment,
        data=item,
        reason=f"not mapped to an opsflow event: {reason}",
    )


def _unmapped(kind: str, item: dict[str, Any]) -> str:
    what = kind
    if isinstance(item.get("propertyName"), str):
        what += f" of {item['propertyName'][:100]!r}"
    if isinstance(item.get("objectTypeId"), str):
        what += f" on objectTypeId {item['objectTypeId'][:20]!r}"
    return f"HubSpot {what} (only a contact's lifecyclestage change maps: journey.stage_changed)"


def hubspot_events(document: Any) -> list[EventEnvelope]:
    """One envelope per event of the batch: the mapped ones, and a `Refused` for the rest."""
    if not isinstance(document, list) or not 1 <= len(document) <= 100:
        raise invalid(
            "HubSpot sends a JSON array of 1 to 100 events",
            [{"field": "body", "message": "array of 1..100 events"}],
        )
    events: list[EventEnvelope] = []
    for index, item in enumerate(document):
        if not isinstance(item, dict):
            raise invalid(
                f"[{index}]: must be an object", [{"field": f"[{index}]", "message": "object"}]
            )
        kind = _hubspot_kind(item)
        if kind is None:
            events.append(
                _hubspot_refused(item, None, "it has neither subscriptionType nor eventType")
            )
            continue
        if not _is_lifecycle_change(kind, item):
            events.append(_hubspot_refused(item, kind, _unmapped(kind, item)))
            continue
        try:
            events.append(_hubspot_stage_change(item))
        except Problem as problem:  # a lifecycle change whose fields do not validate
            events.append(_hubspot_refused(item, kind, problem.detail))
    return events
