"""Times as intervals: what a date, a date-time and the clock cover, and how they compare.

A datetime is the instant `[t, t+1us)`; a bare date is the whole UTC day. `a < b` means `a`
ends before `b` starts, so `now le 2026-11-27` holds for all of that day ("end inclusive")
and `now gt 2026-11-27` from the next midnight.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable

__all__ = [
    "TIME_COMPARE",
    "Interval",
    "interval_of",
    "parse_interval",
]

Interval = tuple[dt.datetime, dt.datetime]


_TICK = dt.timedelta(microseconds=1)
_DAY = dt.timedelta(days=1)


def interval_of(value: dt.date | dt.datetime) -> Interval:
    """The interval a date (whole UTC day) or an instant covers."""
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return (aware, aware + _TICK)
    start = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return (start, start + _DAY)


@functools.lru_cache(maxsize=4096)
def parse_interval(text: str) -> Interval | None:
    """Parse an RFC 3339 date or date-time string into an interval (None if invalid)."""
    if not 10 <= len(text) <= 40:
        return None
    try:
        if len(text) == 10:
            return interval_of(dt.date.fromisoformat(text))
        return interval_of(dt.datetime.fromisoformat(text))
    except ValueError:
        return None


#: Interval comparisons: a = (as, ae), b = (bs, be), both half-open.
TIME_COMPARE: dict[str, Callable[[Interval, Interval], bool]] = {
    "lt": lambda a, b: a[1] <= b[0],
    "le": lambda a, b: a[0] < b[1],
    "gt": lambda a, b: a[0] >= b[1],
    "ge": lambda a, b: a[1] > b[0],
    "eq": lambda a, b: a[0] < b[1] and a[1] > b[0],
    "ne": lambda a, b: not (a[0] < b[1] and a[1] > b[0]),
}
