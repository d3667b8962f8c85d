"""The sandbox's controllable clock and GoCardless-style timestamps.

Virtual time is the wall clock plus a persisted offset, so a demo left running sees time pass
while tests can jump days ahead with ``POST /_sandbox/advance``. Every stamp handed out is
strictly later than the previous one (at least 1 ms): the bus's sequencer orders events by
``created_at``, and a real PSP never hands out two events of one object in the same instant,
so the sandbox must not either.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

DAY_MS = 86_400_000


def format_ms(ms: int) -> str:
    """Render epoch milliseconds the way GoCardless does: ``2024-05-01T12:00:00.123Z``."""
    dt = datetime.fromtimestamp(ms // 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def format_date(ms: int) -> str:
    """Render epoch milliseconds as a GoCardless date (``YYYY-MM-DD``)."""
    return datetime.fromtimestamp(ms // 1000, UTC).date().isoformat()


def parse_time(value: str) -> int:
    """Parse an ISO-8601 date or timestamp (``Z`` or offset; naive means UTC) to epoch ms.

    Raises ValueError on anything else, which the callers turn into a GoCardless error.
    """
    text = value.strip()
    if len(text) == 10:
        d = date.fromisoformat(text)
        dt = datetime(d.year, d.month, d.day, tzinfo=UTC)
    else:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def canonical_time(value: str) -> str:
    """Normalise a timestamp filter value so plain string comparison orders it correctly."""
    return format_ms(parse_time(value))


def add_days(day: str, days: int) -> str:
    """Add days to a ``YYYY-MM-DD`` date."""
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


class Clock:
    """Virtual time = wall clock + offset; stamps are strictly increasing.

    The two pieces of state (``offset_ms`` and ``last_ms``) are plain attributes so the store
    can persist them; the clock itself does no I/O.
    """

    def __init__(self, offset_ms: int = 0, last_ms: int = 0) -> None:
        self.offset_ms = offset_ms
        self.last_ms = last_ms

    def now_ms(self) -> int:
        """Current virtual time, never earlier than the last stamp handed out."""
        return max(int(time.time() * 1000) + self.offset_ms, self.last_ms)

    def stamp(self, at_ms: int | None = None) -> int:
        """Hand out a strictly increasing stamp at (or just after) ``at_ms`` or now."""
        wanted = self.now_ms() if at_ms is None else at_ms
        self.last_ms = max(wanted, self.last_ms + 1)
        return self.last_ms

    def move_to(self, target_ms: int) -> None:
        """Jump virtual time forward to ``target_ms`` (never backwards)."""
        current = self.now_ms()
        if target_ms > current:
            self.offset_ms += target_ms - current
