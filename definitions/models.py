"""The definition language: one pydantic model per kind, a discriminated union on `kind`,
and the pinned form a workflow receives as input.

Imports only the standard library, pydantic and definitions' own pure modules, so workflow
modules may import it (inside `workflow.unsafe.imports_passed_through()`).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from definitions.common import (
    Action,
    Actions,
    BusinessCalendar,
    Channel,
    CohortCondition,
    DedupKey,
    Duration,
    EscalationMatch,
    Identifier,
    Label,
    Name,
    OpsModel,
    RecoveryCondition,
    RouteCondition,
    TemplateName,
    Text,
)
from definitions.directory import Kind, Priority
from definitions.schedule import ScheduleSpec

API_VERSION = "opsflow/v1"
ANY_STAGE = "*"

Percent = Annotated[int, Field(ge=1, le=1_000)]
Language = Annotated[str, Field(pattern=r"^[a-z]{2}$")]


def _unique(values: list[Any], what: str) -> list[Any]:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)
    return values


class Metadata(OpsModel):
    name: Name
    owner: Label = Field(description="Team or person who answers for this definition.")
    description: Text = ""
    labels: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_./-]{0,62}$")], Label] = Field(
        default_factory=dict
    )


# --- escalation ----------------------------------------------------------------------------


class SlaTarget(OpsModel):
    """Targets for one priority at one journey stage (`*`: any stage without its own)."""

    priority: Priority
    stage: Identifier | Literal["*"] = ANY_STAGE
    first_response: Duration = Field(
        description="Business time until the first public agent reply (or an acknowledge)."
    )
    resolution: Duration = Field(description="Business time until the case is resolved.")
    # Zendesk's further metrics; a target left out is not measured.
    next_reply: Duration | None = Field(
        None,
        description="Business time from the oldest requester message not yet answered to "
        "the next public agent reply.",
    )
    periodic_update: Duration | None = Field(
        None,
        description="Business time between public agent updates, from the first one on.",
    )
    pausable_update: Duration | None = Field(
        None,
        description="As periodic_update, paused while the ticket is in a pause status.",
    )
    requester_wait: Duration | None = Field(
        None, description="Business time the ticket spends new, open or on hold."
    )
    agent_work: Duration | None = Field(
        None, description="Business time the ticket spends new or open."
    )

    @model_validator(mode="after")
    def _response_before_resolution(self) -> SlaTarget:
        if self.first_response > self.resolution:
            raise ValueError("first_response is longer than resolution")
        return self


class EscalationLevel(OpsModel):
    after: Duration = Field(description="Business time since the case opened.")
    name: Label | None = None
    actions: Actions
    round_robin: bool = Field(
        False,
        description="Each case's notification of this level goes to the next of its targets "
        "in turn (across cases), not to all of them.",
    )


class ActionRetry(OpsModel):
    """How long an escalation action keeps retrying a failing system before it is recorded
    as failed; the case's clocks and levels never wait for it."""

    pager: Duration = Field(timedelta(minutes=15), description="Pages (PagerDuty).")
    chat: Duration = Field(timedelta(minutes=30), description="Slack and chat messages.")
    email: Duration = Field(timedelta(hours=1))
    webhook: Duration = Field(timedelta(hours=1))
    ticketing: Duration = Field(
        timedelta(hours=1),
        description="assign, set_priority, update_ticket, create_ticket, schedule_callback.",
    )
    crm: Duration = Field(timedelta(hours=1), description="crm_note and credit.")
    start: Duration = Field(timedelta(hours=1), description="Starting another definition.")

    @model_validator(mode="after")
    def _bounded(self) -> ActionRetry:
        for name in type(self).model_fields:
            value: timedelta = getattr(self, name)
            if not timedelta(minutes=1) <= value <= timedelta(days=7):
                raise ValueError(f"{name}: give between 1m and 7d")
        return self


class PriorityEscalation(OpsModel):
    """How cases at one priority escalate where they differ from the policy's defaults
    (a P1 on a 24x7 calendar that pages, a P4 with one level)."""

    calendar: BusinessCalendar | None = None
    warn_at: list[Percent] | None = None
    on_warning: list[Action] | None = None
    levels: Annotated[list[EscalationLevel], Field(min_length=1, max_length=20)] | None = None
    repeat: int | None = Field(None, ge=0, le=10)
    on_breach: list[Action] | None = None
    pause_statuses: list[Identifier] | None = None


class EscalationSpec(OpsModel):
    order: int = Field(
        100,
        ge=0,
        le=100_000,
        description="Selection order: policies are tried lowest first (then by name); the "
        "first that covers the case's priority and whose match holds takes the case.",
    )
    match: EscalationMatch = Field("true", description="Which cases this policy takes.")
    priorities: Annotated[list[Priority], Field(min_length=1)] = Field(
        description="The priorities this policy handles; each needs an SLA."
    )
    calendar: BusinessCalendar
    slas: Annotated[list[SlaTarget], Field(min_length=1)]
    warn_at: list[Percent] = Field(
        default_factory=list, description="Percentages of an SLA at which to warn (below 100)."
    )
    on_warning: list[Action] = Field(
        default_factory=list, description="Actions at each warn_at percentage."
    )
    pause_statuses: list[Identifier] = Field(
        default_factory=lambda: ["pending", "on_hold"],
        description="Ticket statuses that stop the clocks (waiting on the customer).",
    )
    levels: Annotated[list[EscalationLevel], Field(min_length=1, max_length=20)]
    repeat: int = Field(0, ge=0, le=10, description="How many more times the levels cycle.")
    on_breach: list[Action] = Field(
        default_factory=list, description="Actions when an SLA breaches (besides the event)."
    )
    give_up_after: ActionRetry = Field(
        default_factory=ActionRetry,
        description="Per kind of action, how long it keeps retrying before it counts as failed.",
    )
    by_priority: dict[Priority, PriorityEscalation] = Field(
        default_factory=dict,
        description="Per priority, the calendar, warnings, levels, repeat and on_breach that "
        "replace the defaults above; a priority change switches to them.",
    )

    def _override(self, priority: str, name: str) -> Any:
        plan = self.by_priority.get(priority)  # type: ignore[call-overload]
        value = getattr(plan, name) if plan is not None else None
        return getattr(self, name) if value is None else value

    def calendar_for(self, priority: str) -> BusinessCalendar:
        calendar: BusinessCalendar = self._override(priority, "calendar")
        return calendar

    def levels_for(self, priority: str) -> list[EscalationLevel]:
        levels: list[EscalationLevel] = self._override(priority, "levels")
        return levels

    def repeat_for(self, priority: str) -> int:
        repeat: int = self._override(priority, "repeat")
        return repeat

    def warn_at_for(self, priority: str) -> list[int]:
        warn_at: list[int] = self._override(priority, "warn_at")
        return warn_at

    def on_warning_for(self, priority: str) -> list[Action]:
        actions: list[Action] = self._override(priority, "on_warning")
        return actions

    def pause_statuses_for(self, priority: str) -> list[str]:
        statuses: list[str] = self._override(priority, "pause_statuses")
        return statuses

    def on_breach_for(self, priority: str) -> list[Action]:
        actions: list[Action] = self._override(priority, "on_breach")
        return actions

    @field_validator("priorities")
    @classmethod
    def _distinct(cls, value: list[Priority]) -> list[Priority]:
        return _unique(value, "priority")

    def sla_for(self, priority: str, stage: str | None) -> SlaTarget | None:
        """The SLA for a case: its stage's own targets first, then the `*` ones."""
        fallback = None
        for target in self.slas:
            if target.priority != priority:
                continue
            if target.stage == stage:
                return target
            if target.stage == ANY_STAGE:
                fallback = target
        return fallback


# --- rollout -------------------------------------------------------------------------------


class ChangeTarget(OpsModel):
    system: Literal["flag"] = Field("flag", description="What the change flips.")
    key: Identifier = Field(description="The flag key, e.g. new-billing-flow.")
    value: Label = Field("on", description="The value exposed customers get.")


class Impact(OpsModel):
    risk: Literal["standard", "normal", "emergency"] = Field(
        description="standard: pre-approved; normal: needs approvals; emergency: one "
        "approver and no change windows."
    )
    journeys: list[Identifier] = Field(default_factory=list)
    compliance: list[Identifier] = Field(default_factory=list)


class Approvals(OpsModel):
    group: Identifier = Field(description="Who may approve.")
    required: int = Field(1, ge=1, le=10)
    allow_owner: bool = Field(False, description="May the change owner approve their own change?")
    members: list[Identifier] = Field(
        default_factory=list,
        description="Who belongs to the group; empty: anyone may approve (the owner only if "
        "allow_owner).",
    )
    timeout: Duration = Field(description="After this, the approvers' channel and owner are paged.")
    channel: Channel = Field(
        "slack", description="Where approvers are asked (at once), reminded and paged."
    )
    reminders: int = Field(
        1, ge=0, le=10, description="Reminders before the timeout, evenly spaced (1: halfway)."
    )


class Blackout(OpsModel):
    start: date
    end: date = Field(description="Last blacked-out day (inclusive).")
    reason: Label

    @model_validator(mode="after")
    def _ordered(self) -> Blackout:
        if self.end < self.start:
            raise ValueError("end is before start")
        return self

    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]


class Analysis(OpsModel):
    interval: Duration = Field(description="How often every check is read during a bake.")
    failure_limit: int = Field(
        0,
        ge=0,
        le=100,
        description="Failing readings a check may have in a row (failure_count: consecutive) "
        "or in the whole bake (total) before it fails.",
    )
    failure_count: Literal["consecutive", "total"] = Field(
        "consecutive",
        description="consecutive: a passing reading starts the count afresh (Argo Rollouts' "
        "consecutiveErrorLimit); total: every failing reading of the bake counts.",
    )
    error_limit: int = Field(
        3, ge=1, le=100, description="Consecutive metric errors that count as one failure."
    )
    min_samples: int = Field(30, ge=1, description="Fewer samples make a reading inconclusive.")
    inconclusive: Literal["hold", "pass", "fail"] = Field(
        "hold", description="hold: pause and page the owner."
    )


class Check(OpsModel):
    metric: Identifier
    max: float | None = Field(None, allow_inf_nan=False)
    min: float | None = Field(None, allow_inf_nan=False)
    max_increase_pct: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Most the cohort may exceed the baseline, %."
    )
    max_decrease_pct: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Most the cohort may fall below the baseline, %.",
    )
    window: Duration = Field(description="How far back each reading looks.")
    on_fail: Literal["rollback", "hold"] = "rollback"

    @model_validator(mode="after")
    def _has_threshold(self) -> Check:
        limits = (self.max, self.min, self.max_increase_pct, self.max_decrease_pct)
        if all(limit is None for limit in limits):
            raise ValueError("give a threshold: max, min, max_increase_pct or max_decrease_pct")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError("min is above max")
        return self


class Cohort(OpsModel):
    percent: float = Field(gt=0, le=100, allow_inf_nan=False, description="Cumulative share.")
    when: CohortCondition | None = Field(
        None, description="Only customers matching this (e.g. an internal pilot segment)."
    )


class Phase(OpsModel):
    name: Name
    cohort: Cohort
    bake: Duration
    checks: list[Check] = Field(default_factory=list)
    gate: Literal["auto", "approval"] = "auto"
    irreversible: bool = False


class RecoveryStep(OpsModel):
    when: CohortCondition | None = None
    actions: Actions


class CustomerNotice(OpsModel):
    channel: Channel = "email"
    template: TemplateName


class Rollback(OpsModel):
    notify: CustomerNotice | None = None
    recovery: list[RecoveryStep] = Field(default_factory=list)


class RolloutSpec(OpsModel):
    change: ChangeTarget
    impact: Impact
    approvals: Approvals
    windows: BusinessCalendar = Field(
        description="When phases may start: timezone and hours; holidays are closed."
    )
    blackouts: list[Blackout] = Field(default_factory=list)
    analysis: Analysis
    phases: Annotated[list[Phase], Field(min_length=1, max_length=20)]
    rollback: Rollback
    deadline: Duration | None = Field(None, description="Overall limit; pauses do not count.")

    _change_calendar: BusinessCalendar | None = PrivateAttr(None)

    def change_calendar(self) -> BusinessCalendar:
        """The windows with every blackout day closed: `next_open` says when a phase may start."""
        if self._change_calendar is None:
            closed = set(self.windows.resolved_holidays)
            for blackout in self.blackouts:
                closed.update(blackout.days())
            # An override opens its date even on a holiday, but never inside a blackout.
            blackout_days = {day for blackout in self.blackouts for day in blackout.days()}
            self._change_calendar = BusinessCalendar(
                timezone=self.windows.timezone,
                hours=self.windows.hours,
                breaks=self.windows.breaks,
                overrides={
                    day: hours
                    for day, hours in self.windows.overrides.items()
                    if day not in blackout_days
                },
                holidays=self.windows.holidays,
                resolved_holidays=sorted(closed),
            )
        return self._change_calendar


# --- recovery ------------------------------------------------------------------------------


class Stall(OpsModel):
    stage: Identifier = Field(description="The journey stage the customer is stuck in.")
    for_: Duration = Field(alias="for", description="Business time without leaving the stage.")


class Trigger(OpsModel):
    event: Identifier | None = Field(None, description="Event type, e.g. survey.responded.")
    when: RecoveryCondition = "true"
    count: int = Field(1, ge=1, le=1_000, description="Matching events needed within `within`.")
    within: Duration | None = None
    stall: Stall | None = None

    @model_validator(mode="after")
    def _shape(self) -> Trigger:
        if (self.event is None) == (self.stall is None):
            raise ValueError("give exactly one of event or stall")
        if self.count > 1 and self.within is None:
            raise ValueError("a count above 1 needs a window: within")
        return self


class ApprovalGate(OpsModel):
    approvers: Identifier = Field(description="Group whose members may approve.")
    members: list[Identifier] = Field(
        default_factory=list,
        description="Who belongs to the group; empty: anyone but the requester may approve.",
    )
    requester: Identifier | None = Field(
        None, description="Who asks for the action (default: the definition's owner)."
    )
    required: int = Field(1, ge=1, le=10, description="Distinct approvers needed (N of M).")
    channel: Channel = Field("slack", description="Where the approvers are asked and reminded.")
    remind_before: Duration | None = Field(
        None,
        description="Remind the approvers this long before the timeout (default: a "
        "quarter of the timeout).",
    )
    timeout: Duration
    on_timeout: Literal["skip", "escalate", "approve_reduced"] = Field(
        description="skip (nothing is paid), escalate (ask escalate_to, then skip) or "
        "approve_reduced (pays reduced_amount with no human involved)."
    )
    escalate_to: Identifier | None = None
    reduced_amount: Decimal | None = Field(None, gt=0, max_digits=10, decimal_places=2)

    @model_validator(mode="after")
    def _timeout_choice(self) -> ApprovalGate:
        if self.members and self.required > len(self.members):
            raise ValueError(
                f"required {self.required} approvers, but the group lists {len(self.members)}"
            )
        if self.remind_before is not None and self.remind_before >= self.timeout:
            raise ValueError("remind_before must be shorter than the timeout")
        if self.on_timeout == "escalate" and self.escalate_to is None:
            raise ValueError("on_timeout escalate needs escalate_to")
        if self.on_timeout == "approve_reduced" and self.reduced_amount is None:
            raise ValueError("on_timeout approve_reduced needs reduced_amount")
        return self


class Rung(OpsModel):
    actions: Actions


class RecoveryRule(OpsModel):
    name: Name
    description: Text = ""
    severity: int = Field(3, ge=1, le=5, description="1 is the most severe.")
    mode: Literal["live", "shadow"] = Field("live", description="shadow: record, act on nothing.")
    trigger: Trigger
    dedup: DedupKey | None = Field(None, description="CEL giving the key one failure has.")
    cooldown: Duration | None = None
    actions: Actions
    ladder: list[Rung] = Field(
        default_factory=list, description="Next steps if it triggers again within the episode."
    )
    approval: ApprovalGate | None = None
    follow_up: bool = Field(
        True,
        description="Does an episode this rule acts in get the follow-up survey? false for "
        "rules that only ask a person to look (the customer was not contacted).",
    )


class FrequencyCap(OpsModel):
    class_: Label = Field(alias="class")
    max: int = Field(ge=1, le=100)
    per: Duration


class FollowUp(OpsModel):
    after: Duration
    channel: Channel = "email"
    template: TemplateName
    recovered_at: int = Field(4, ge=1, le=5, description="Survey score that means recovered.")
    not_recovered_queue: Identifier = Field(
        "cx-review",
        description="A lower follow-up score hands the episode to a person: a ticket in this "
        "queue with the episode's context; the episode stays open until someone closes it.",
    )


class RecoverySpec(OpsModel):
    mode: Literal["live", "shadow"] = "live"
    calendar: BusinessCalendar = Field(description="Business days for stalls and callbacks.")
    rules: Annotated[list[RecoveryRule], Field(min_length=1, max_length=100)]
    caps: list[FrequencyCap] = Field(default_factory=list)
    follow_up: FollowUp | None = None
    episode_timeout: Duration = Field(timedelta(days=30))


# --- handoff -------------------------------------------------------------------------------


class LowConfidence(OpsModel):
    below: float = Field(gt=0, lt=1, allow_inf_nan=False)
    turns: int = Field(2, ge=1, le=20)


class NegativeSentiment(OpsModel):
    below: float = Field(ge=-1, le=1, allow_inf_nan=False)


class HandoffTriggers(OpsModel):
    customer_asks: bool = True
    ask_intents: list[Identifier] = Field(
        default_factory=list,
        description="The bot's intents that mean the customer asks for a person, besides "
        "human_agent, agent, human, talk_to_human, talk_to_agent, speak_to_agent and person.",
    )
    bot_requests: bool = True
    low_confidence: LowConfidence | None = None
    negative_sentiment: NegativeSentiment | None = None
    topics: list[Identifier] = Field(
        default_factory=list, description="Regulated topics: cancellation, complaint, legal, ..."
    )
    tiers: list[Identifier] = Field(
        default_factory=list, description="Customer tiers always handed to a person."
    )


ContextItem = Literal[
    "transcript", "intents", "attempts", "profile", "open_tickets", "sentiment", "summary"
]


class Route(OpsModel):
    name: Name
    when: RouteCondition = "true"
    queue: Identifier
    skills: list[Identifier] = Field(default_factory=list)
    optional_skills: list[Identifier] = Field(default_factory=list)
    languages: list[Language] = Field(default_factory=list)
    tiers: list[Identifier] = Field(default_factory=list)

    @property
    def catches_all(self) -> bool:
        return self.when.strip() == "true" and not self.languages and not self.tiers


class HandoffSpec(OpsModel):
    triggers: HandoffTriggers
    context: Annotated[list[ContextItem], Field(min_length=1)]
    routes: Annotated[list[Route], Field(min_length=1, max_length=50)]
    offer_timeout: Duration
    max_offers: int = Field(3, ge=1, le=20, description="Offers before moving to overflow.")
    relax_after: Duration | None = Field(None, description="Drop optional skills after this.")
    max_wait: Duration
    max_queue_depth: int | None = Field(None, ge=1)
    overflow_queue: Identifier | None = None
    notice: CustomerNotice = Field(description="Tells the customer a person is coming.")
    fallback: Actions = Field(description="When no one can take it (after hours, wait too long).")
    escalation_policy: Name = Field(description="The escalation definition that takes over.")


# --- documents -----------------------------------------------------------------------------


class _Document(OpsModel):
    api_version: Literal["opsflow/v1"] = Field(alias="apiVersion")
    metadata: Metadata


class EscalationDefinition(_Document):
    kind: Literal["escalation"]
    spec: EscalationSpec


class RolloutDefinition(_Document):
    kind: Literal["rollout"]
    spec: RolloutSpec


class RecoveryDefinition(_Document):
    kind: Literal["recovery"]
    spec: RecoverySpec


class HandoffDefinition(_Document):
    kind: Literal["handoff"]
    spec: HandoffSpec


class ScheduleDefinition(_Document):
    kind: Literal["schedule"]
    spec: ScheduleSpec


AnyDefinition = Annotated[
    EscalationDefinition
    | RolloutDefinition
    | RecoveryDefinition
    | HandoffDefinition
    | ScheduleDefinition,
    Field(discriminator="kind"),
]
DEFINITION_MODELS: dict[Kind, type[_Document]] = {
    "escalation": EscalationDefinition,
    "rollout": RolloutDefinition,
    "recovery": RecoveryDefinition,
    "handoff": HandoffDefinition,
    "schedule": ScheduleDefinition,
}
definition_adapter: TypeAdapter[AnyDefinition] = TypeAdapter(AnyDefinition)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a definition document, for editors and `opsflow defs schema`."""
    schema = definition_adapter.json_schema(by_alias=True)
    # `calendar: 24x7` is accepted as shorthand for an always-open UTC calendar.
    calendar = schema["$defs"]["BusinessCalendar"]
    schema["$defs"]["BusinessCalendar"] = {
        "anyOf": [{"const": "24x7", "description": "Always open (UTC)."}, calendar],
        "title": calendar.get("title", "BusinessCalendar"),
        "description": calendar.get("description", ""),
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "opsflow definition"
    return schema


MAX_SHARED_PINNED = 256
_SHARED_PINNED: dict[tuple[Any, ...], PinnedDefinition] = {}


class PinnedDefinition(BaseModel):
    """The exact definition version a workflow run was started with: its input, never re-read."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    content_hash: str
    kind: Kind
    definition: AnyDefinition

    @model_validator(mode="wrap")
    @classmethod
    def _shared(cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        """Payloads (JSON) of one version share one validated copy: every case of a policy
        carries it in its input, and a worker holding 10,000 waiting cases held 10,000
        copies (~56 kB each for the shipped support policy). Frozen, so sharing is safe; the
        key includes the content hash, so an edited definition is never mistaken for one."""
        if info.mode != "json" or not isinstance(data, dict):
            return handler(data)
        key = (data.get("name"), data.get("version"), data.get("content_hash"))
        if not all(isinstance(part, str | int) for part in key):
            return handler(data)
        shared = _SHARED_PINNED.get(key)
        if shared is None:
            shared = handler(data)
            if len(_SHARED_PINNED) >= MAX_SHARED_PINNED:
                _SHARED_PINNED.pop(next(iter(_SHARED_PINNED)))
            _SHARED_PINNED[key] = shared
        return shared

    @property
    def ref(self) -> str:
        """`name@version`, as shown in OpsDefinition and the ledger."""
        return f"{self.name}@{self.version}"

    def _expect(self, kind: Kind) -> Any:
        if self.definition.kind != kind:
            raise TypeError(f"{self.ref} is a {self.definition.kind} definition, not {kind}")
        return self.definition.spec

    @property
    def escalation(self) -> EscalationSpec:
        spec: EscalationSpec = self._expect("escalation")
        return spec

    @property
    def rollout(self) -> RolloutSpec:
        spec: RolloutSpec = self._expect("rollout")
        return spec

    @property
    def recovery(self) -> RecoverySpec:
        spec: RecoverySpec = self._expect("recovery")
        return spec

    @property
    def handoff(self) -> HandoffSpec:
        spec: HandoffSpec = self._expect("handoff")
        return spec

    @property
    def schedule(self) -> ScheduleSpec:
        spec: ScheduleSpec = self._expect("schedule")
        return spec
