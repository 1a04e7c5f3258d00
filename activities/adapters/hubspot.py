"""HubSpot CRM v3 (bearer token): contacts as customers, notes on their timeline.

- profile: GET /crm/v3/objects/contacts/{id}?properties=...
- cohort: GET /crm/v3/objects/contacts?limit=100&after=<cursor> paged to the end (heartbeating
  per page), filtered and hashed here;
- note: POST /crm/v3/objects/notes with `hs_note_body`, `hs_timestamp` and an association to
  the contact (HUBSPOT_DEFINED type 202, note to contact).

HubSpot documents no idempotency key for creating notes, so each note's body ends with a
reference token derived from the idempotency key (`ref opsflow<hex>`), and a retry whose
earlier attempt may have reached HubSpot first searches for it (POST
/crm/v3/objects/notes/search, `hs_note_body` CONTAINS_TOKEN) and returns the note it finds.
HubSpot's search index lags writes by a few seconds, so a retry within that lag can still
repeat the note: at-least-once in that window.

Property mapping: tier `opsflow_tier`, segment `opsflow_segment`, value `total_revenue`,
language `hs_language`, timezone `hs_timezone`, account manager `hubspot_owner_id`,
journey stage `lifecyclestage`.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal, InvalidOperation
from typing import Any

from activities.adapters.http import VendorHttp
from activities.cohorts import Condition, place
from activities.customer_contracts import CustomerProfile
from activities.errors import protocol_error
from activities.heartbeat import heartbeat
from activities.models import AddNote, CohortSpec, NoteAdded
from activities.outbox import Effect
from activities.ports import CohortMembers, Contact
from activities.settings import AdapterSettings
from store.types import utcnow

PROPERTIES = [
    "firstname",
    "lastname",
    "email",
    "phone",
    "opsflow_tier",
    "opsflow_segment",
    "total_revenue",
    "hs_language",
    "hs_timezone",
    "country",
    "hubspot_owner_id",
    "lifecyclestage",
]
NOTE_TO_CONTACT = 202
PAGE_SIZE = 100


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def _profile(record: dict[str, Any]) -> CustomerProfile:
    props: dict[str, Any] = record.get("properties") or {}
    name = " ".join(part for part in (props.get("firstname"), props.get("lastname")) if part)
    return CustomerProfile(
        id=str(record["id"]),
        name=name or f"contact {record['id']}",
        tier=props.get("opsflow_tier") or "standard",
        segment=props.get("opsflow_segment") or "unknown",
        lifetime_value=_decimal(props.get("total_revenue")),
        language=(props.get("hs_language") or "en").split("-")[0],
        timezone=props.get("hs_timezone") or "UTC",
        country=props.get("country"),
        account_manager=props.get("hubspot_owner_id"),
        journey_stage=props.get("lifecyclestage"),
    )


class HubSpotCrm:
    name = "hubspot"
    in_app_database = False

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0) -> None:
        self._http = VendorHttp(
            "hubspot", base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    @classmethod
    def from_settings(cls, settings: AdapterSettings) -> HubSpotCrm:
        assert settings.hubspot_token is not None
        return cls(
            settings.hubspot_url,
            settings.hubspot_token.get_secret_value(),
            timeout=settings.http_timeout_seconds,
        )

    async def _contact_record(self, customer_id: str) -> dict[str, Any]:
        body = await self._http.json(
            "get_customer",
            "GET",
            f"/crm/v3/objects/contacts/{customer_id}",
            params={"properties": ",".join(PROPERTIES)},
        )
        if "id" not in body:
            raise protocol_error("hubspot", "get_customer", "contact has no id")
        return body

    async def get_customer(self, customer_id: str) -> CustomerProfile:
        return _profile(await self._contact_record(customer_id))

    async def contact(self, customer_id: str) -> Contact:
        record = await self._contact_record(customer_id)
        profile = _profile(record)
        props = record.get("properties") or {}
        return Contact(
            profile.id, profile.name, props.get("email"), props.get("phone"), profile.language
        )

    async def cohort_members(self, spec: CohortSpec) -> CohortMembers:
        condition = Condition(spec.condition) if spec.condition else None
        members: list[str] = []
        eligible = 0
        after: str | None = None
        pages = 0
        while True:
            params = {"limit": str(PAGE_SIZE), "properties": ",".join(PROPERTIES)}
            if after:
                params["after"] = after
            body = await self._http.json(
                "select_cohort", "GET", "/crm/v3/objects/contacts", params=params
            )
            results = body.get("results")
            if not isinstance(results, list):
                raise protocol_error("hubspot", "select_cohort", "page has no results list")
            for record in results:
                profile = _profile(record)
                if spec.segments and profile.segment not in spec.segments:
                    continue
                if spec.tiers and profile.tier not in spec.tiers:
                    continue
                if spec.languages and profile.language not in spec.languages:
                    continue
                if condition is not None and not condition.matches(profile.model_dump()):
                    continue
                eligible += 1
                if place(profile.id, spec.seed) < spec.percent:
                    members.append(profile.id)
            pages += 1
            heartbeat(f"hubspot contacts page {pages}")
            paging = body.get("paging") or {}
            after = (paging.get("next") or {}).get("after")
            if not after:
                break
        members.sort()
        return CohortMembers(members, eligible)

    async def add_note(self, effect: Effect, request: AddNote) -> NoteAdded:
        token = note_token(effect.idempotency_key)
        if effect.retry:
            found = await self._http.json(
                "find_note",
                "POST",
                "/crm/v3/objects/notes/search",
                json={
                    "filterGroups": [
                        {
                            "filters": [
                                {
                                    "propertyName": "hs_note_body",
                                    "operator": "CONTAINS_TOKEN",
                                    "value": token,
                                }
                            ]
                        }
                    ],
                    "properties": ["hs_note_body"],
                    "limit": 1,
                },
            )
            results = found.get("results")
            first = results[0] if isinstance(results, list) and results else None
            if isinstance(first, dict) and "id" in first:
                return NoteAdded(note_id=str(first["id"]))
        body = await self._http.json(
            "add_note",
            "POST",
            "/crm/v3/objects/notes",
            json={
                "properties": {
                    "hs_timestamp": utcnow().isoformat(timespec="milliseconds"),
                    "hs_note_body": f"{request.body}\n\nref {token}",
                },
                "associations": [
                    {
                        "to": {"id": request.customer_id},
                        "types": [
                            {
                                "associationCategory": "HUBSPOT_DEFINED",
                                "associationTypeId": NOTE_TO_CONTACT,
                            }
                        ],
                    }
                ],
            },
        )
        if "id" not in body:
            raise protocol_error("hubspot", "add_note", "created note has no id")
        return NoteAdded(note_id=str(body["id"]))


def note_token(idempotency_key: str) -> str:
    """One search token (letters and digits only) that names a note's idempotency key."""
    return "opsflow" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
