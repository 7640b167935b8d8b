"""Schedules in words and their next fires, with DST transitions marked, at fixed moments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler_app.dashboard.schedule import describe_schedule, mark_offset_changes, offset_text

BERLIN = ZoneInfo("Europe/Berlin")


def test_daily_berlin_job_across_the_spring_change_is_marked_once() -> None:
    # 2026-03-29 is the last Sunday of March: Berlin goes from UTC+01:00 to UTC+02:00 at 01:00 UTC.
    after = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
    schedule = describe_schedule("0 8 * * *", "Europe/Berlin", after)

    assert schedule.words == "At 08:00, every day"
    assert [f.utc for f in schedule.fires] == [
        datetime(2026, 3, 28, 7, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 6, 0, tzinfo=UTC),
        datetime(2026, 3, 30, 6, 0, tzinfo=UTC),
        datetime(2026, 3, 31, 6, 0, tzinfo=UTC),
        datetime(2026, 4, 1, 6, 0, tzinfo=UTC),
    ]
    assert all(f.local.hour == 8 for f in schedule.fires)
    assert [f.offset_change for f in schedule.fires] == [
        None,
        "UTC+01:00 → UTC+02:00",
        None,
        None,
        None,
    ]


def test_autumn_change_is_marked_and_the_repeated_hour_fires_once() -> None:
    # 2026-10-25 is the last Sunday of October: 02:00-03:00 happens twice in Berlin.
    after = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    schedule = describe_schedule("30 2 * * *", "Europe/Berlin", after, count=3)

    assert [f.local.replace(tzinfo=None) for f in schedule.fires] == [
        datetime(2026, 10, 25, 2, 30),
        datetime(2026, 10, 26, 2, 30),
        datetime(2026, 10, 27, 2, 30),
    ]
    # The first fire (the earlier 02:30, still summer time) keeps the offset; the next day's
    # is the first in winter time.
    assert [f.offset_change for f in schedule.fires] == [None, "UTC+02:00 → UTC+01:00", None]


def test_first_fire_after_a_change_is_compared_with_the_offset_at_the_start() -> None:
    after = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 in Berlin, winter time
    fires = mark_offset_changes([datetime(2026, 3, 29, 6, 0, tzinfo=UTC)], BERLIN, after)
    assert fires[0].offset_change == "UTC+01:00 → UTC+02:00"
    assert fires[0].local.utcoffset() == timedelta(hours=2)


def test_utc_job_has_no_marks() -> None:
    after = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
    schedule = describe_schedule("*/15 * * * *", "UTC", after)
    assert schedule.words == "Every 15 minutes, every hour, every day"
    assert len(schedule.fires) == 5
    assert all(f.offset_change is None for f in schedule.fires)
    assert schedule.fires[0].utc == datetime(2026, 3, 27, 12, 15, tzinfo=UTC)


def test_offset_text() -> None:
    assert offset_text(timedelta(hours=-3, minutes=-30)) == "UTC-03:30"
    assert offset_text(timedelta(hours=5, minutes=45)) == "UTC+05:45"
    assert offset_text(None) == "UTC+00:00"


def test_an_expression_that_does_not_parse_raises_value_error() -> None:
    with pytest.raises(ValueError, match="expected 5 fields"):
        describe_schedule("not cron", "UTC", datetime(2026, 1, 1, tzinfo=UTC))
