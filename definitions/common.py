"""Shared building blocks of every definition: names, texts, Duration, BusinessCalendar,
Condition and Action. Imports only the standard library, pydantic and cel-python, so
workflow code may import it (through `workflow.unsafe.imports_passed_through()`).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from definitions.calendar import ALWAYS, BusinessCalendar, Holidays
from definitions.conditions import (
    CohortCondition,
    ConditionError,
    DedupKey,
    EscalationMatch,
    RecoveryCondition,
    RouteCondition,
    check_condition,
    evaluate,
)
from definitions.directory import Priority
from definitions.duration import Duration, format_duration, parse_duration

# C0/C1 controls, DEL, and the bidi/line-separator characters that reorder or split
# what a terminal shows (U+202E turns "exe.txt" into "txt.exe").
_UNSAFE_TEXT = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _safe_text(value: str) -> str:
    match = _UNSAFE_TEXT.search(value)
    if match:
        raise ValueError(
            f"contains the control character U+{ord(match.group()):04X} at position "
            f"{match.start() + 1}; remove it"
        )
    return value


def _one_line(value: str) -> str:
    if "\n" in value or "\t" in value:
        raise ValueError("must be on one line")
    return value


NAME_PATTERN = r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$"
TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,119}$"
IDENTIFIER_PATTERN = r"^[a-z0-9][a-z0-9_.:@+-]{0,199}$"

Text = Annotated[str, StringConstraints(max_length=4_000), AfterValidator(_safe_text)]
"""Free text (descriptions, comments): no control characters, at most 4,000 characters."""
Label = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(_safe_text),
    AfterValidator(_one_line),
]
"""A one-line human label: an owner, a reason, a group."""
Name = Annotated[
    str,
    StringConstraints(pattern=NAME_PATTERN),
]
"""A definition, rule, phase or route name: lower-case letters, digits and '-', 2-63 long."""
TemplateName = Annotated[str, StringConstraints(pattern=TEMPLATE_NAME_PATTERN)]
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
"""A queue, agent, group or status id."""
Recipient = Annotated[
    str,
    StringConstraints(min_length=1, max_length=320),
    AfterValidator(_safe_text),
    AfterValidator(_one_line),
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Channel = Literal["email", "slack", "chat", "pager", "webhook"]


class OpsModel(BaseModel):
    """Every definition model refuses fields it does not know (a typo is an error)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    def __eq__(self, other: object) -> bool:
        # Fields only: private caches (a rollout's change calendar) are not part of identity.
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]


# --- actions -------------------------------------------------------------------------------


class NotifyAction(OpsModel):
    """Send a message from a template to people, in the customer's language."""

    type: Literal["notify"]
    channel: Channel
    to: list[Recipient] = Field(
        min_length=1,
        description="customer, assignee, owner, account_manager, approvers, agent, "
        "queue:<id>, team:<name>, group:<name> or an email address",
    )
    template: TemplateName
    class_: Label | None = Field(
        None, alias="class", description="Action class for frequency caps, e.g. apology."
    )


class AssignAction(OpsModel):
    """Move the case to a queue or an agent (exactly one of them)."""

    type: Literal["assign"]
    queue: Identifier | None = None
    agent: Identifier | None = None

    @model_validator(mode="after")
    def _one_target(self) -> AssignAction:
        if (self.queue is None) == (self.agent is None):
            raise ValueError("give exactly one of queue or agent")
        return self


class SetPriorityAction(OpsModel):
    type: Literal["set_priority"]
    priority: Priority | Literal["raise"] = Field(
        description="A priority, or `raise` for one step more urgent (p4 -> p3)."
    )


class UpdateTicketAction(OpsModel):
    type: Literal["update_ticket"]
    status: Identifier | None = None
    tags: list[Identifier] = Field(default_factory=list, description="Tags to add.")
    comment: Text | None = Field(None, description="An internal comment (Jinja2 template).")

    @model_validator(mode="after")
    def _something(self) -> UpdateTicketAction:
        if self.status is None and not self.tags and self.comment is None:
            raise ValueError("give at least one of status, tags or comment")
        return self


class CrmNoteAction(OpsModel):
    type: Literal["crm_note"]
    text: Text = Field(description="The note (Jinja2 template).")


class CreditAction(OpsModel):
    """Credit the customer's account; above `approval_above` a person must approve first."""

    type: Literal["credit"]
    amount: Decimal = Field(gt=0, le=100_000, max_digits=10, decimal_places=2)
    currency: Currency
    approval_above: Decimal | None = Field(None, ge=0, max_digits=10, decimal_places=2)
    reason: Label
    class_: Label | None = Field(None, alias="class")


class CreateTicketAction(OpsModel):
    """Open a new ticket (a recovery ticket, a callback) in a queue."""

    type: Literal["create_ticket"]
    queue: Identifier
    priority: Priority = "p3"
    subject: Label
    due_in: Duration | None = Field(None, description="Business time until it is due.")
    class_: Label | None = Field(None, alias="class")


class ScheduleCallbackAction(OpsModel):
    """A callback ticket due within the customer's business hours."""

    type: Literal["schedule_callback"]
    queue: Identifier = "callbacks"
    within: Duration
    class_: Label | None = Field(None, alias="class")


class StartAction(OpsModel):
    """Start another definition (by name) for the same subject."""

    type: Literal["start"]
    definition: Name


Action = Annotated[
    NotifyAction
    | AssignAction
    | SetPriorityAction
    | UpdateTicketAction
    | CrmNoteAction
    | CreditAction
    | CreateTicketAction
    | ScheduleCallbackAction
    | StartAction,
    Field(discriminator="type"),
]
"""One effect, chosen by its `type`."""

Actions = Annotated[list[Action], Field(min_length=1, max_length=50)]


__all__ = [
    "ALWAYS",
    "Action",
    "Actions",
    "AssignAction",
    "BusinessCalendar",
    "CohortCondition",
    "ConditionError",
    "CreateTicketAction",
    "CreditAction",
    "CrmNoteAction",
    "Currency",
    "DedupKey",
    "Duration",
    "EscalationMatch",
    "Holidays",
    "Identifier",
    "Label",
    "Name",
    "NotifyAction",
    "OpsModel",
    "RecoveryCondition",
    "RouteCondition",
    "ScheduleCallbackAction",
    "SetPriorityAction",
    "StartAction",
    "TemplateName",
    "Text",
    "UpdateTicketAction",
    "check_condition",
    "evaluate",
    "format_duration",
    "parse_duration",
]
