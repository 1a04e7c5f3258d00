"""Business hours in a handoff: the queue's calendar, the customer's daytime, the callback
that fits both (its slot and its ticket), and moments as the people involved read them.

Pure: no Temporal, no I/O, no clock; every function takes the moment it decides for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from activities.handoff_contracts import QueueInfo
from definitions.calendar import BusinessCalendar
from workflows.handoff_model import HandoffState

CUSTOMER_HOURS = {"mon-fri": "09:00-20:00", "sat": "10:00-14:00"}
"""When a customer is called back, in their own timezone."""


def queue_calendar(timezone: str, hours: str | dict[str, str]) -> BusinessCalendar:
    return BusinessCalendar(timezone=timezone, hours=hours)


def customer_calendar(timezone: str) -> BusinessCalendar:
    try:
        return BusinessCalendar(timezone=timezone, hours=CUSTOMER_HOURS)
    except ValueError:
        return BusinessCalendar(timezone="UTC", hours=CUSTOMER_HOURS)


def callback_slot(now: datetime, queue: BusinessCalendar, customer: BusinessCalendar) -> datetime:
    """The first moment from `now` when the queue is open and it is daytime for the customer."""
    moment = now
    for _ in range(60):
        opens = queue.next_open(moment)
        fits = customer.next_open(opens)
        if fits == opens:
            return opens
        moment = fits
    return queue.next_open(now)


def callback_context(moment: datetime, timezone: str) -> dict[str, Any]:
    """The callback time in the customer's timezone, in parts a template can say in the
    customer's language (`weekday` 0 is Monday, `month` 1 is January)."""
    calendar = customer_calendar(timezone)
    local = calendar.local_time(moment)
    return {
        "date": local.date().isoformat(),
        "time": local.strftime("%H:%M"),
        "weekday": local.weekday(),
        "day": local.day,
        "month": local.month,
        "year": local.year,
        "timezone": calendar.timezone,
        "utc": moment.isoformat(),
    }


def format_local(moment: datetime, calendar: BusinessCalendar, with_day: bool = False) -> str:
    local = calendar.local_time(moment)
    return local.strftime("%a %d %b %H:%M" if with_day else "%H:%M")


def minutes(seconds: int | None) -> int:
    if seconds is None:
        return 0
    return max(1, round(seconds / 60))


@dataclass(frozen=True)
class CallbackTicket:
    """The ticket that has a person call the customer back, at `slot`."""

    slot: datetime
    subject: str
    description: str


def schedule_callback(
    state: HandoffState, info: QueueInfo, within: timedelta, why: str, now: datetime
) -> CallbackTicket:
    """The first moment the callback queue (`info`) is open and it is daytime for the
    customer; the callback is due within `within` of the queue's business time after it."""
    queue_cal = queue_calendar(info.timezone, info.hours)
    customer_cal = customer_calendar(state.profile.timezone if state.profile else "UTC")
    slot = callback_slot(now, queue_cal, customer_cal)
    due = queue_cal.add_business_time(slot, within)
    local = f"{format_local(slot, customer_cal, True)} {customer_cal.timezone}"
    state.callback_at, state.callback_local = slot, local
    packet = state.context.text if state.context else ""
    description = (
        f"Callback due {slot.isoformat()} ({local}), at the latest "
        f"{due.isoformat()}. Why: {why}.\n\n{packet}"
    )
    return CallbackTicket(
        slot=slot,
        subject=f"Call back {state.customer_id} at {local}"[:500],
        description=description[:60_000],
    )
