"""A cron job's schedule for people: in words, and its next fire times in UTC and in its zone,
with the fires marked where the zone's UTC offset changes (a DST transition in between).

Pure functions of the expression, the zone and a given moment: no clock, no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from scheduler_app.cron.crontab import describe_crontab, next_fire_times, parse_crontab

FIRES_SHOWN = 5


@dataclass(frozen=True)
class Fire:
    """One coming fire time, in UTC and in the job's zone."""

    utc: datetime
    local: datetime
    # Set when the zone's UTC offset differs from the previous fire's (or, for the first, from
    # the offset at the moment the list starts): e.g. "UTC+01:00 → UTC+02:00".
    offset_change: str | None = None


@dataclass(frozen=True)
class Schedule:
    expression: str
    timezone: str
    words: str
    fires: list[Fire]


def offset_text(offset: timedelta | None) -> str:
    """An offset as UTC±HH:MM."""
    minutes = int((offset or timedelta()).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"


def mark_offset_changes(times: Sequence[datetime], zone: ZoneInfo, after: datetime) -> list[Fire]:
    """The fire times (aware) as Fires, each marked when its offset in zone differs from the
    one before it; the first is compared with the offset at `after`."""
    fires: list[Fire] = []
    previous = after.astimezone(zone).utcoffset()
    for moment in times:
        local = moment.astimezone(zone)
        offset = local.utcoffset()
        change = None
        if offset != previous:
            change = f"{offset_text(previous)} → {offset_text(offset)}"
        fires.append(
            Fire(utc=moment.astimezone(ZoneInfo("UTC")), local=local, offset_change=change)
        )
        previous = offset
    return fires


def describe_schedule(
    expression: str, timezone: str, after: datetime, count: int = FIRES_SHOWN
) -> Schedule:
    """The schedule in words and its next `count` fires strictly after the aware `after`.

    Raises ValueError for an expression or zone that does not parse (a stored row from an older
    version, say): callers show the raw expression then.
    """
    zone = ZoneInfo(timezone)
    trigger = parse_crontab(expression, zone)
    times = next_fire_times(trigger, after, count)
    return Schedule(
        expression=expression,
        timezone=timezone,
        words=describe_crontab(expression),
        fires=mark_offset_changes(times, zone, after),
    )
