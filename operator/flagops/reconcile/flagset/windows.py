"""Change windows: when restarts caused by spec edits may start."""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass

from flagops.models.flagset import ChangeWindow, Weekday

WEEKDAYS = list(Weekday)  # Monday first, as date.weekday() counts


@dataclass(frozen=True)
class WindowState:
    open: bool
    opens_at: datetime.datetime | None  # the next opening when closed (UTC); None when open


def zone_of(window: ChangeWindow) -> datetime.tzinfo:
    try:
        return zoneinfo.ZoneInfo(window.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(
            f"rollout.windows: timeZone {window.time_zone!r} is not an IANA time zone (e.g. Europe/Berlin)"
        ) from err


def validate_windows(windows: Iterable[ChangeWindow]) -> None:
    """Raise ValueError saying what to fix, for what the schema cannot check."""
    for window in windows:
        zone_of(window)


def _time(text: str) -> datetime.time:
    return datetime.time.fromisoformat(text)


def _spans(
    window: ChangeWindow, now: datetime.datetime
) -> Iterable[tuple[datetime.datetime, datetime.datetime]]:
    """The window's openings from the day before `now` to a week after, in UTC. An end at or
    before the start closes on the next day; wall-clock times follow the zone's DST rules."""
    zone = zone_of(window)
    today = now.astimezone(zone).date()
    start, end = _time(window.start), _time(window.end)
    for offset in range(-1, 8):
        day = today + datetime.timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in window.days:
            continue
        end_day = day + datetime.timedelta(days=1) if end <= start else day
        opens = datetime.datetime.combine(day, start, tzinfo=zone).astimezone(datetime.UTC)
        closes = datetime.datetime.combine(end_day, end, tzinfo=zone).astimezone(datetime.UTC)
        yield opens, closes


def window_state(windows: list[ChangeWindow], now: datetime.datetime) -> WindowState:
    """Open when there are no windows or `now` is inside one; else when the next one opens."""
    if not windows:
        return WindowState(open=True, opens_at=None)
    spans = [span for window in windows for span in _spans(window, now)]
    if any(opens <= now < closes for opens, closes in spans):
        return WindowState(open=True, opens_at=None)
    return WindowState(open=False, opens_at=min((opens for opens, _ in spans if opens > now), default=None))
