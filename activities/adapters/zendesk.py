"""Zendesk Support API v2: tickets and comments, API-token auth (`{email}/token:{token}`).

- create: POST /api/v2/tickets.json with an `Idempotency-Key` header, so a retried create
  returns the ticket made the first time instead of a second one;
- read: GET /api/v2/tickets/{id}.json; update and comment: PUT /api/v2/tickets/{id}.json
  (a comment is `ticket.comment`, public or internal). Zendesk dedups only creates, so each
  comment's update carries the idempotency key as custom audit metadata
  (`ticket.metadata.opsflow_key`), and a retry of a comment whose earlier attempt may have
  reached Zendesk (a request that timed out after Zendesk stored it) first reads the
  ticket's latest audits (GET /api/v2/tickets/{id}/audits.json, newest first) and returns
  the comment it finds under that key instead of posting it again. Field updates are
  idempotent by nature (setting a status twice is the same status).

Mapping: priority p1..p4 -> urgent/high/normal/low; status on_hold -> hold; the queue is the
group when numeric, else a `queue_<name>` tag; the assignee is `assignee_id` when numeric,
else `assignee_email`; the customer is recorded as the ticket's `external_id` and a tag.
A ticket with a due time (`due_at`, a callback) is created as a Zendesk `task`: Zendesk keeps
`due_at` only on tasks.

Handoff routing (`assign_group`): the conversation's ticket goes to the Zendesk group of its
queue, and Zendesk's own routing picks the agent; the assignee comes back as a
`ticket.updated` event. The group is the queue when numeric, else the group whose name,
lower-cased with runs of other characters as `-`, is the queue id (`Billing` for `billing`,
`Tier 2` for `tier-2`), read once from GET /api/v2/groups.json (all pages) and kept.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from activities.adapters.http import VendorHttp
from activities.errors import invalid, protocol_error
from activities.models import AddComment, CommentAdded, CreateTicket, Ticket, UpdateTicket
from activities.outbox import Effect
from activities.settings import AdapterSettings

PRIORITY_TO_ZENDESK = {"p1": "urgent", "p2": "high", "p3": "normal", "p4": "low"}
PRIORITY_FROM_ZENDESK = {value: key for key, value in PRIORITY_TO_ZENDESK.items()}
STATUS_TO_ZENDESK = {"on_hold": "hold"}
QUEUE_TAG = "queue_"
STAGE_TAG = "stage_"
MAX_GROUP_PAGES = 50
KEY_METADATA = "opsflow_key"
AUDITS_LOOKED_AT = 100  # a retry follows its first attempt closely: the newest page suffices


class _ZendeskTicket(BaseModel):
    id: int
    subject: str | None = None
    status: str = "new"
    priority: str | None = None
    group_id: int | None = None
    assignee_id: int | None = None
    external_id: str | None = None
    tags: list[str] = []
    type: str | None = None
    due_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _assignment(queue: str | None, assignee: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if queue is not None and queue.isdigit():
        fields["group_id"] = int(queue)
    if assignee is not None:
        fields["assignee_id" if assignee.isdigit() else "assignee_email"] = (
            int(assignee) if assignee.isdigit() else assignee
        )
    return fields


def group_key(name: str) -> str:
    """A group name as a queue id: `Tier 2` -> `tier-2`, `Billing` -> `billing`."""
    return re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")


def _zendesk_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tag(prefix: str, value: str) -> str:
    return prefix + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in value.lower())


class ZendeskTicketing:
    name = "zendesk"
    in_app_database = False

    def __init__(self, base_url: str, email: str, api_token: str, *, timeout: float = 10.0) -> None:
        self._http = VendorHttp(
            "zendesk", base_url, auth=(f"{email}/token", api_token), timeout=timeout
        )
        self._base_url = base_url.rstrip("/")
        self._groups: dict[str, int] | None = None
        self._groups_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: AdapterSettings) -> ZendeskTicketing:
        assert settings.zendesk_email is not None and settings.zendesk_api_token is not None
        return cls(
            settings.zendesk_base_url,
            settings.zendesk_email,
            settings.zendesk_api_token.get_secret_value(),
            timeout=settings.http_timeout_seconds,
        )

    def _ticket(self, body: dict[str, Any], operation: str) -> Ticket:
        try:
            raw = _ZendeskTicket.model_validate(body.get("ticket"))
        except ValidationError:
            raise protocol_error("zendesk", operation, "response has no valid `ticket`") from None
        queue = str(raw.group_id) if raw.group_id is not None else None
        stage = None
        for tag in raw.tags:
            if tag.startswith(QUEUE_TAG) and queue is None:
                queue = tag.removeprefix(QUEUE_TAG)
            if tag.startswith(STAGE_TAG):
                stage = tag.removeprefix(STAGE_TAG)
        status = {"hold": "on_hold"}.get(raw.status, raw.status)
        return Ticket(
            id=str(raw.id),
            customer_id=raw.external_id,
            subject=raw.subject or "",
            status=status,
            priority=PRIORITY_FROM_ZENDESK.get(raw.priority or "normal", "p3"),
            queue=queue,
            assignee=str(raw.assignee_id) if raw.assignee_id is not None else None,
            tags=raw.tags,
            stage=stage,
            due_at=raw.due_at,
            created_at=raw.created_at,
            updated_at=raw.updated_at,
        )

    async def create_ticket(self, effect: Effect, request: CreateTicket) -> Ticket:
        tags = list(request.tags)
        if request.queue and not request.queue.isdigit():
            tags.append(_tag(QUEUE_TAG, request.queue))
        if request.stage:
            tags.append(_tag(STAGE_TAG, request.stage))
        ticket: dict[str, Any] = {
            "subject": request.subject,
            "comment": {"body": request.description or request.subject, "public": False},
            "priority": PRIORITY_TO_ZENDESK[request.priority],
            "external_id": request.customer_id,
            "tags": tags,
            **_assignment(request.queue, request.assignee),
        }
        if request.due_at is not None:
            ticket["type"] = "task"
            ticket["due_at"] = _zendesk_time(request.due_at)
        body = await self._http.json(
            "create_ticket",
            "POST",
            "/api/v2/tickets.json",
            json={"ticket": ticket},
            headers={"Idempotency-Key": effect.idempotency_key},
        )
        return self._ticket(body, "create_ticket")

    async def get_ticket(self, ticket_id: str) -> Ticket:
        body = await self._http.json(
            "get_ticket", "GET", f"/api/v2/tickets/{int_id(ticket_id)}.json"
        )
        return self._ticket(body, "get_ticket")

    async def update_ticket(self, effect: Effect, request: UpdateTicket) -> Ticket:
        ticket: dict[str, Any] = _assignment(request.queue, request.assignee)
        if request.priority is not None:
            ticket["priority"] = PRIORITY_TO_ZENDESK[request.priority]
        if request.status is not None:
            ticket["status"] = STATUS_TO_ZENDESK.get(request.status, request.status)
        extra_tags = list(request.add_tags)
        if request.queue and not request.queue.isdigit():
            extra_tags.append(_tag(QUEUE_TAG, request.queue))
        if request.stage:
            extra_tags.append(_tag(STAGE_TAG, request.stage))
        if request.tags is not None:
            ticket["tags"] = [*request.tags, *extra_tags]
        elif extra_tags:
            ticket["additional_tags"] = extra_tags
        body = await self._http.json(
            "update_ticket",
            "PUT",
            f"/api/v2/tickets/{int_id(request.ticket_id)}.json",
            json={"ticket": ticket},
        )
        return self._ticket(body, "update_ticket")

    async def add_comment(self, effect: Effect, request: AddComment) -> CommentAdded:
        ticket_id = int_id(request.ticket_id)
        if effect.retry:
            found = await self._comment_posted(ticket_id, effect.idempotency_key)
            if found is not None:
                return found
        body = await self._http.json(
            "add_comment",
            "PUT",
            f"/api/v2/tickets/{ticket_id}.json",
            json={
                "ticket": {
                    "comment": {"body": request.body, "public": request.public},
                    "metadata": {KEY_METADATA: effect.idempotency_key},
                }
            },
        )
        added = _comment_of(body.get("audit"))
        if added is None:
            raise protocol_error("zendesk", "add_comment", "response has no comment audit")
        return added

    async def _comment_posted(self, ticket_id: int, key: str) -> CommentAdded | None:
        """The comment an earlier attempt stored under `key`, from the ticket's audits."""
        body = await self._http.json(
            "find_comment",
            "GET",
            f"/api/v2/tickets/{ticket_id}/audits.json",
            params={"sort_order": "desc", "page[size]": str(AUDITS_LOOKED_AT)},
        )
        audits = body.get("audits")
        if not isinstance(audits, list):
            raise protocol_error("zendesk", "find_comment", "response has no `audits` list")
        for audit in audits:
            if not isinstance(audit, dict):
                continue
            metadata = audit.get("metadata")
            custom = metadata.get("custom") if isinstance(metadata, dict) else None
            if isinstance(custom, dict) and custom.get(KEY_METADATA) == key:
                return _comment_of(audit)
        return None

    # --- handoff routing: the queue's group -------------------------------------------------

    async def group_id(self, queue: str) -> int:
        """The Zendesk group of `queue` (see the module docstring); a 4xx-like error if none."""
        if queue.isdigit():
            return int(queue)
        async with self._groups_lock:
            if self._groups is None:
                self._groups = await self._read_groups()
            groups = self._groups
        if (key := group_key(queue)) not in groups:
            known = ", ".join(sorted(groups)[:20]) or "none"
            raise invalid(f"no Zendesk group is named like queue {queue!r} (groups: {known})")
        return groups[key]

    async def _read_groups(self) -> dict[str, int]:
        groups: dict[str, int] = {}
        path: str | None = "/api/v2/groups.json"
        for _ in range(MAX_GROUP_PAGES):
            if path is None:
                break
            body = await self._http.json("list_groups", "GET", path)
            entries = body.get("groups")
            if not isinstance(entries, list):
                raise protocol_error("zendesk", "list_groups", "response has no `groups` list")
            for entry in entries:
                if isinstance(entry, dict) and isinstance(entry.get("id"), int):
                    if entry.get("deleted"):
                        continue
                    groups.setdefault(group_key(str(entry.get("name", ""))), entry["id"])
            next_page = body.get("next_page")
            path = self._next(next_page) if isinstance(next_page, str) and next_page else None
        return groups

    def _next(self, url: str) -> str:
        """Zendesk's absolute `next_page` as a path under our base URL: the credentials are
        never sent to another host a response names."""
        if url.startswith(self._base_url + "/"):
            return url[len(self._base_url) :]
        parts = urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    async def assign_group(self, effect: Effect, ticket_id: str, queue: str) -> Ticket:
        """Put the ticket in the queue's group, unassigned: Zendesk routes it to an agent."""
        group = await self.group_id(queue)
        body = await self._http.json(
            "assign_group",
            "PUT",
            f"/api/v2/tickets/{int_id(ticket_id)}.json",
            json={"ticket": {"group_id": group, "assignee_id": None, "status": "open"}},
        )
        return self._ticket(body, "assign_group")


def _comment_of(audit: Any) -> CommentAdded | None:
    """The comment an audit added (its Comment event; else the audit itself)."""
    if not isinstance(audit, dict):
        return None
    events = audit.get("events", [])
    for event in events if isinstance(events, list) else []:
        if isinstance(event, dict) and event.get("type") == "Comment" and "id" in event:
            return CommentAdded(comment_id=str(event["id"]))
    if "id" in audit:
        return CommentAdded(comment_id=f"audit-{audit['id']}")
    return None


def int_id(ticket_id: str) -> int:
    """Zendesk ticket ids are integers; anything else can never exist there."""
    from activities.errors import invalid

    if not ticket_id.isdigit():
        raise invalid(f"Zendesk ticket ids are numbers, not {ticket_id[:40]!r}")
    return int(ticket_id)
