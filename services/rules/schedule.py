"""Whether a rule is armed at an event time: weekly windows in the site's time zone."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from aimass.site import Window

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def armed(windows: list[Window] | tuple[Window, ...], timezone: str, at_ms: float) -> bool:
    """True when ``at_ms`` (epoch ms) falls in one of the windows; no windows = always armed.
    A window that runs past midnight belongs to the day it starts on."""
    if not windows:
        return True
    local = dt.datetime.fromtimestamp(at_ms / 1000.0, _zone(timezone))
    day, minute = local.weekday(), local.hour * 60 + local.minute
    for w in windows:
        start, end = _minutes(w.from_), _minutes(w.to)
        if start <= end:
            if DAYS[day] in w.days and start <= minute < end:
                return True
        elif (DAYS[day] in w.days and minute >= start) or (DAYS[(day - 1) % 7] in w.days and minute < end):
            return True
    return False
