"""The bot's one clock: real time, or started at CHUYENDE_NOW and running on from there."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, tzinfo


class Clock:
    """Every time decision in the bot reads this object.

    It keeps an offset from the real clock rather than a frozen instant, so a demo started
    at 5/4/2024 08:00 is 08:01 a minute later. Tests move it with `advance` or `set`.
    """

    def __init__(self, tz: tzinfo, start: datetime | None = None) -> None:
        self.tz = tz
        self._offset = timedelta(0)
        if start is not None:
            self.set(start)

    def set(self, moment: datetime) -> None:
        """Jump to `moment`; a naive moment is read in the bot's time zone."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.tz)
        self._offset = moment.astimezone(UTC) - self._real_now()

    def advance(self, delta: timedelta) -> None:
        self._offset += delta

    def now(self) -> datetime:
        """The current instant, timezone-aware in UTC."""
        return self._real_now() + self._offset

    def local_now(self) -> datetime:
        return self.now().astimezone(self.tz)

    def today(self) -> date:
        """Today's date where the members live, not on the server."""
        return self.local_now().date()

    def to_local(self, moment: datetime) -> datetime:
        if moment.tzinfo is None:  # SQLite hands back naive UTC
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self.tz)

    @staticmethod
    def _real_now() -> datetime:
        return datetime.fromtimestamp(time.time(), UTC)
