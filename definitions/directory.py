"""The names definitions may refer to, kept in one place so lint can check them.

Queues mirror the sandbox queues seeded by store/seed.py (a test keeps the two in step);
with a real ticketing vendor, its group ids are mapped onto these queue ids by the adapter.
Template variables: each kind's messages may read only these root names, and lint refuses
a template that reads anything else (see definitions/README.md for their fields).
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["escalation", "rollout", "recovery", "handoff", "schedule"]
KINDS: tuple[Kind, ...] = ("escalation", "rollout", "recovery", "handoff", "schedule")

PRIORITIES = ("p1", "p2", "p3", "p4")
Priority = Literal["p1", "p2", "p3", "p4"]

JOURNEY_STAGES = ("onboarding", "active", "renewal", "at_risk", "churned")

# queue id -> languages the queue's agents speak
QUEUES: dict[str, tuple[str, ...]] = {
    "support": ("en", "de", "fr", "es"),
    "billing": ("en", "de", "fr", "es"),
    "technical": ("en", "de", "fr"),
    "retention": ("en", "de", "fr", "es"),
    "vip": ("en", "es", "fr"),
    "tier-2": ("en", "de"),
    "onboarding": ("en", "fr"),
    "callbacks": ("en", "de", "fr", "es"),
    "cx-review": ("en", "de", "fr", "es"),
}

CHANNELS = ("email", "slack", "chat", "pager", "webhook")
"""Notification channels the notify activity delivers to."""

METRICS = ("csat", "complaint_rate", "handle_time")
"""Customer-experience metrics the metrics activity can read for a cohort."""

EVENT_TYPES = (
    "contact.received",
    "survey.responded",
    "sentiment.scored",
    "journey.stage_changed",
    "sla.breached",
    "case.escalated",
)
"""The event types a recovery rule may trigger on: the types of the event contract
(definitions/events.py) that reach `customer-<id>` (the intake's recovery route and the
escalation's `sla.breached` and `case.escalated`). A rule reads the type's data fields as
`event.<field>`, plus `event.id`, `event.source`, `event.type` and `event.time`; lint
refuses any other field."""

LANGUAGES = ("en", "de", "fr", "es")
"""Every message template ships in each of these languages."""

TEMPLATE_VARIABLES: dict[Kind, frozenset[str]] = {
    "escalation": frozenset({"case", "customer", "sla", "level"}),
    "rollout": frozenset({"change", "phase", "customer"}),
    "recovery": frozenset({"customer", "event", "episode", "action"}),
    "handoff": frozenset({"conversation", "customer", "agent", "queue", "wait"}),
    "schedule": frozenset(),  # a schedule sends no messages
}

RECIPIENT_ROLES = (
    "customer",
    "assignee",
    "owner",
    "account_manager",
    "approvers",
    "agent",
)
"""Recipients resolved at run time; a recipient may also be `queue:<id>`, `team:<name>`,
`group:<name>` or an email address."""
