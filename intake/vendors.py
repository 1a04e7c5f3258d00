"""Vendor webhook payloads mapped to opsflow event types.

Zendesk event subscriptions (`zen:event-type:ticket.*`, one event per request, with `id`,
`time`, `detail` = the ticket and `event` = {previous, current}):
  ticket.created → ticket.created; status_changed → ticket.updated (status), ticket.solved
  (to SOLVED/CLOSED) or ticket.reopened (from SOLVED/CLOSED); priority_changed, agent and
  group assignment → ticket.updated.
HubSpot webhooks (a JSON array of events with `eventId`, `subscriptionType`, `objectId`,
`propertyName`, `propertyValue`, `occurredAt` in ms):
  contact.propertyChange of `lifecyclestage` → journey.stage_changed.
Anything else is acknowledged and ignored (vendors retry non-2xx answers forever).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from definitions.events import EventEnvelope
from intake.envelope import to_envelope
from intake.problems import invalid

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
    else:
        return []
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


def hubspot_events(document: Any) -> list[EventEnvelope]:
    if not isinstance(document, list) or not 1 <= len(document) <= 100:
        raise invalid(
            "HubSpot sends a JSON array of 1 to 100 events",
            [{"field": "body", "message": "array of 1..100 events"}],
        )
    events: list[EventEnvelope] = []
    for index, item in enumerate(document):
        prefix = f"[{index}]."
        if not isinstance(item, dict):
            raise invalid(
                f"[{index}]: must be an object", [{"field": f"[{index}]", "message": "object"}]
            )
        kind = item.get("subscriptionType")
        if kind != "contact.propertyChange" or item.get("propertyName") != "lifecyclestage":
            continue
        customer = _text(_need(item, "objectId"), prefix + "objectId")
        attributes: dict[str, Any] = {
            "specversion": "1.0",
            "id": _text(_need(item, "eventId"), prefix + "eventId"),
            "source": "hubspot",
            "type": "journey.stage_changed",
            "subject": customer,
        }
        occurred = item.get("occurredAt")
        if isinstance(occurred, int) and not isinstance(occurred, bool):
            try:
                attributes["time"] = datetime.fromtimestamp(occurred / 1000, UTC).isoformat()
            except (ValueError, OverflowError, OSError):
                raise invalid(
                    f"{prefix}occurredAt: out of range",
                    [{"field": prefix + "occurredAt", "message": "out of range"}],
                ) from None
        data = {
            "customer_id": customer,
            "to_stage": _text(_need(item, "propertyValue"), prefix + "propertyValue"),
        }
        events.append(to_envelope(attributes, data, "hubspot", prefix))
    return events
