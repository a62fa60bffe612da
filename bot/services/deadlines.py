"""The one place that answers "is this on time?" and "how long is left?"."""

from __future__ import annotations

from datetime import date, datetime, timedelta, tzinfo

from bot.models import Deadline


def last_day(deadline: Deadline) -> date:
    """The last local day that still counts.

    "trước ngày 10/4" (inclusive=False) ends on 9/4; "chậm nhất ngày 6/5" (inclusive=True)
    ends on 6/5 itself.
    """
    return deadline.due_date if deadline.inclusive else deadline.due_date - timedelta(days=1)


def is_on_time(deadline: Deadline, at: datetime, tz: tzinfo) -> bool:
    """On time when done on or before the last day, in the members' local time."""
    return at.astimezone(tz).date() <= last_day(deadline)


def days_left(deadline: Deadline, today: date) -> int:
    """Whole days from today to the last day: 0 on the last day, negative once past."""
    return (last_day(deadline) - today).days


def is_ahead(deadline: Deadline, today: date) -> bool:
    return days_left(deadline, today) >= 0
