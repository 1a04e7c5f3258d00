"""Business hours in a handoff: the queue's calendar, the customer's daytime, the callback
slot that fits both, and moments as the people involved read them.

Pure: no Temporal, no I/O, no clock; every function takes the moment it decides for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from definitions.calendar import BusinessCalendar

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
