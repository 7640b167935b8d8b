from __future__ import annotations

import base64
import itertools
import pickle
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from scheduler_app.cron.crontab import (
    CrontabTrigger,
    describe_crontab,
    next_fire_times,
    parse_crontab,
)
from scheduler_app.cron.entries import CronJobSpec
from scheduler_app.cron.reconcile import plan_reconcile

# Fire times are compared as ISO strings with their offset: aware datetimes of one zone compare
# by wall time alone, so 02:30+02:00 would equal 02:30+01:00 on the fall-back day.
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
EVERY_DAY = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
FIELD_COUNT = (
    "expected 5 fields (minute hour day-of-month month day-of-week) "
    "or 6 with seconds first (second minute hour day-of-month month day-of-week)"
)
SIX_FIELDS = " (6 fields read as: second minute hour day-of-month month day-of-week)"


def fire_times(trigger: CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    """Iterate the trigger the way APScheduler does: previous = now = the last fire time."""
    times: list[datetime] = []
    previous: datetime | None = None
    now = start
    while True:
        upcoming: datetime | None = trigger.get_next_fire_time(previous, now)
        if upcoming is None or upcoming.astimezone(UTC) >= end.astimezone(UTC):
            return times
        times.append(upcoming)
        previous = now = upcoming


def day_fire_times(expression: str, zone: ZoneInfo, day: date) -> list[str]:
    """Return every fire time within the local calendar day, as ISO strings."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return iso(fire_times(parse_crontab(expression, zone), start, end))


def iso(times: list[datetime]) -> list[str]:
    return [moment.isoformat() for moment in times]


def at(text: str, zone: ZoneInfo = BERLIN) -> datetime:
    """Parse a local time such as '2026-06-01 08:00' in zone."""
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def test_normal_day_fires_once_at_the_wall_time() -> None:
    assert day_fire_times("30 2 * * *", BERLIN, date(2026, 7, 15)) == ["2026-07-15T02:30:00+02:00"]
    assert day_fire_times("30 2 * * *", NEW_YORK, date(2026, 7, 15)) == [
        "2026-07-15T02:30:00-04:00"
    ]


@pytest.mark.parametrize(
    ("expression", "weekdays"),
    [
        ("0 8 * * 1", {"Monday"}),
        ("0 8 * * 0", {"Sunday"}),
        ("0 8 * * 7", {"Sunday"}),
        ("0 8 * * sun", {"Sunday"}),
        ("0 8 * * SAT,Sun", {"Saturday", "Sunday"}),
        ("0 8 * * 1-5", {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}),
        ("0 8 * * mon-fri", {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}),
        ("0 8 * * */2", {"Sunday", "Tuesday", "Thursday", "Saturday"}),
        ("0 8 * * 1-5/2", {"Monday", "Wednesday", "Friday"}),
        ("0 8 * * 5-7", {"Friday", "Saturday", "Sunday"}),
        ("0 8 * * 0,7", {"Sunday"}),
        ("0 8 * * 0-7", EVERY_DAY),
        ("0 8 * * *", EVERY_DAY),
    ],
)
def test_day_of_week_counts_from_sunday_like_crontab(expression: str, weekdays: set[str]) -> None:
    start = at("2026-06-01 00:00")  # a Monday
    times = fire_times(parse_crontab(expression, BERLIN), start, start + timedelta(days=14))
    assert {moment.strftime("%A") for moment in times} == weekdays
    assert len(times) == 2 * len(weekdays)
    assert {moment.strftime("%H:%M") for moment in times} == {"08:00"}


def test_step_over_day_of_week_becomes_weekday_names() -> None:
    trigger = parse_crontab("0 8 * * */2", BERLIN)
    fields = {field.name: str(field) for field in trigger.fields}
    assert fields["day_of_week"] == "sun,tue,thu,sat"


def test_day_of_month_and_day_of_week_together_fire_on_either() -> None:
    # Both restricted: crontab fires on the 1st of the month and on every Monday.
    trigger = parse_crontab("0 8 1 * 1", BERLIN)
    times = fire_times(trigger, at("2026-06-02 00:00"), at("2026-07-14 00:00"))
    assert [moment.day for moment in times] == [8, 15, 22, 29, 1, 6, 13]


def test_a_star_day_of_month_narrows_day_of_week() -> None:
    # A field starting with '*' counts as unrestricted, so both must match (as in Vixie cron).
    trigger = parse_crontab("0 8 */2 * 1", BERLIN)
    times = fire_times(trigger, at("2026-06-01 00:00"), at("2026-07-01 00:00"))
    assert [moment.day for moment in times] == [1, 15, 29]


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@hourly", ["2026-06-01T13:00:00+02:00", "2026-06-01T14:00:00+02:00"]),
        ("@daily", ["2026-06-02T00:00:00+02:00", "2026-06-03T00:00:00+02:00"]),
        ("@midnight", ["2026-06-02T00:00:00+02:00", "2026-06-03T00:00:00+02:00"]),
        ("@weekly", ["2026-06-07T00:00:00+02:00", "2026-06-14T00:00:00+02:00"]),
        ("@monthly", ["2026-07-01T00:00:00+02:00", "2026-08-01T00:00:00+02:00"]),
        ("@yearly", ["2027-01-01T00:00:00+01:00", "2028-01-01T00:00:00+01:00"]),
        ("@annually", ["2027-01-01T00:00:00+01:00", "2028-01-01T00:00:00+01:00"]),
        ("@DAILY", ["2026-06-02T00:00:00+02:00", "2026-06-03T00:00:00+02:00"]),
    ],
)
def test_macros(macro: str, expected: list[str]) -> None:
    trigger = parse_crontab(macro, BERLIN)
    assert trigger.expression == macro
    assert iso(next_fire_times(trigger, at("2026-06-01 12:30"), count=2)) == expected


@pytest.mark.parametrize(
    ("zone", "day", "expression", "expected"),
    [
        # Fall back: 02:00-02:59 happens twice in Berlin, 01:00-01:59 in New York.
        (BERLIN, date(2026, 10, 25), "30 2 * * *", ["2026-10-25T02:30:00+02:00"]),
        (BERLIN, date(2026, 10, 25), "0 2 * * *", ["2026-10-25T02:00:00+02:00"]),
        (BERLIN, date(2026, 10, 25), "0 3 * * *", ["2026-10-25T03:00:00+01:00"]),
        (NEW_YORK, date(2026, 11, 1), "30 1 * * *", ["2026-11-01T01:30:00-04:00"]),
        (NEW_YORK, date(2026, 11, 1), "30 2 * * *", ["2026-11-01T02:30:00-05:00"]),
        # The days either side are normal.
        (BERLIN, date(2026, 10, 24), "30 2 * * *", ["2026-10-24T02:30:00+02:00"]),
        (BERLIN, date(2026, 10, 26), "30 2 * * *", ["2026-10-26T02:30:00+01:00"]),
        (NEW_YORK, date(2026, 10, 31), "30 1 * * *", ["2026-10-31T01:30:00-04:00"]),
        (NEW_YORK, date(2026, 11, 2), "30 1 * * *", ["2026-11-02T01:30:00-05:00"]),
    ],
)
def test_fixed_hour_fires_once_when_the_clock_falls_back(
    zone: ZoneInfo, day: date, expression: str, expected: list[str]
) -> None:
    assert day_fire_times(expression, zone, day) == expected


def test_plain_apscheduler_fires_twice_when_the_clock_falls_back() -> None:
    """Guard the premise: should APScheduler change this, revisit CrontabTrigger's override."""
    plain = CronTrigger(minute="30", hour="2", timezone=BERLIN)
    times = fire_times(plain, at("2026-10-25 00:00"), at("2026-10-26 00:00"))
    assert iso(times) == ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"]


def test_fixed_hour_with_minute_steps_runs_the_repeated_hour_once() -> None:
    assert day_fire_times("*/20 2 * * *", BERLIN, date(2026, 10, 25)) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:20:00+02:00",
        "2026-10-25T02:40:00+02:00",
    ]


def test_asked_from_inside_the_repeated_hour_the_second_occurrence_is_skipped() -> None:
    trigger = parse_crontab("30 2 * * *", BERLIN)
    inside = at("2026-10-25 02:10").replace(fold=1)
    assert inside.isoformat() == "2026-10-25T02:10:00+01:00"
    upcoming = trigger.get_next_fire_time(None, inside)
    assert upcoming is not None
    assert upcoming.isoformat() == "2026-10-26T02:30:00+01:00"
    assert iso(next_fire_times(trigger, at("2026-10-24 12:00"), 3)) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        (BERLIN, date(2026, 10, 25), 25),
        (NEW_YORK, date(2026, 11, 1), 25),
        (BERLIN, date(2026, 3, 29), 23),
        (NEW_YORK, date(2026, 3, 8), 23),
        (BERLIN, date(2026, 7, 15), 24),
        (NEW_YORK, date(2026, 7, 15), 24),
    ],
)
def test_wildcard_hour_keeps_firing_by_elapsed_time(zone: ZoneInfo, day: date, hours: int) -> None:
    times = [datetime.fromisoformat(text) for text in day_fire_times("*/15 * * * *", zone, day)]
    assert len(times) == hours * 4
    # Subtracted in UTC: within one zone, subtraction too would go by wall time.
    instants = [moment.astimezone(UTC) for moment in times]
    assert {later - earlier for earlier, later in itertools.pairwise(instants)} == {
        timedelta(minutes=15)
    }


def test_wildcard_hour_fires_in_both_passes_of_the_repeated_hour() -> None:
    times = day_fire_times("*/30 * * * *", BERLIN, date(2026, 10, 25))
    assert times[4:9] == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_stepped_hour_counts_as_wildcard() -> None:
    assert day_fire_times("0 */2 * * *", BERLIN, date(2026, 10, 25))[:4] == [
        "2026-10-25T00:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        (BERLIN, date(2026, 3, 29), ["2026-03-29T03:30:00+02:00"]),
        (NEW_YORK, date(2026, 3, 8), ["2026-03-08T03:30:00-04:00"]),
    ],
)
def test_time_in_the_spring_forward_gap_fires_once_an_hour_later(
    zone: ZoneInfo, day: date, expected: list[str]
) -> None:
    # 02:30 does not exist that day: it fires at 02:30 of the old offset, which is 03:30.
    assert day_fire_times("30 2 * * *", zone, day) == expected


def test_spring_forward_leaves_the_hours_around_the_gap_alone() -> None:
    assert day_fire_times("0 1,3 * * *", BERLIN, date(2026, 3, 29)) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
    ]
    assert day_fire_times("30 2 * * *", BERLIN, date(2026, 3, 30)) == ["2026-03-30T02:30:00+02:00"]


def test_str_and_repr_show_the_expression() -> None:
    trigger = parse_crontab("0 8 * * *", BERLIN)
    assert trigger.expression == "0 8 * * *"
    assert str(trigger) == "cron: 0 8 * * * (Europe/Berlin)"
    assert repr(trigger) == "<CrontabTrigger ('0 8 * * *', timezone='Europe/Berlin')>"


@pytest.mark.parametrize("expression", ["0 8 * * 0", "0 8 1 * 1", "30 2 * * *", "*/15 * * * *"])
def test_pickle_round_trip_keeps_expression_and_schedule(expression: str) -> None:
    trigger = parse_crontab(expression, BERLIN)
    state = trigger.__getstate__()
    assert state["version"] == 2  # CronTrigger's own state version, left as it is
    assert state["crontab_version"] == 1
    assert state["expression"] == expression

    restored = pickle.loads(pickle.dumps(trigger))  # noqa: S301

    assert isinstance(restored, CrontabTrigger)
    assert restored.expression == expression
    assert str(restored) == str(trigger)
    start, end = at("2026-10-20 00:00"), at("2026-11-10 00:00")
    assert iso(fire_times(restored, start, end)) == iso(fire_times(trigger, start, end))


def test_state_from_a_newer_version_is_refused() -> None:
    state = parse_crontab("0 8 * * *", BERLIN).__getstate__()
    state["crontab_version"] = 99
    blank = CrontabTrigger.__new__(CrontabTrigger)
    with pytest.raises(ValueError, match="version 99 of CrontabTrigger"):
        blank.__setstate__(state)


def test_from_crontab_builds_the_subclass_with_crontab_weekdays() -> None:
    trigger = CrontabTrigger.from_crontab("0 8 * * 0", BERLIN)
    assert isinstance(trigger, CrontabTrigger)
    assert iso(next_fire_times(trigger, at("2026-06-01 00:00"), 1)) == ["2026-06-07T08:00:00+02:00"]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", f"{FIELD_COUNT}, got 4"),
        ("0 0 8 * * * 2026", f"{FIELD_COUNT}, got 7; a year field is not supported"),
        ("* * * * * * * *", f"{FIELD_COUNT}, got 8"),
        ("", f"{FIELD_COUNT}, got 0"),
        ("61 * * * *", "minute field '61' is invalid: allowed 0-59, *, lists, ranges and steps"),
        ("*/0 * * * *", "minute field '*/0' is invalid: allowed 0-59"),
        ("5/15 * * * *", "minute field '5/15' is invalid: allowed 0-59"),
        ("1,,2 * * * *", "minute field '1,,2' is invalid: allowed 0-59"),
        ("-1 * * * *", "minute field '-1' is invalid: allowed 0-59"),
        ("0 24 * * *", "hour field '24' is invalid: allowed 0-23, *, lists, ranges and steps"),
        ("0 9-5 * * *", "hour field '9-5' is invalid: allowed 0-23"),
        ("0 8 0 * *", "day-of-month field '0' is invalid: allowed 1-31, *, lists, ranges"),
        ("0 8 L * *", "day-of-month field 'L' is invalid: allowed 1-31"),
        ("0 8 * 13 *", "month field '13' is invalid: allowed 1-12 or jan-dec, *, lists, ranges"),
        ("0 8 * foo *", "month field 'foo' is invalid: allowed 1-12 or jan-dec"),
        (
            "0 8 * * funday",
            "day-of-week field 'funday' is invalid: allowed 0-7 (0 and 7 are Sunday) or sun-sat",
        ),
        ("0 8 * * 8", "day-of-week field '8' is invalid: allowed 0-7 (0 and 7 are Sunday)"),
        ("0 8 * * sat-sun", "day-of-week field 'sat-sun' is invalid"),
        ("0 8 * * 1#2", "day-of-week field '1#2' is invalid"),
        ("0 0 30 2 *", "day-of-month field '30' never occurs in month field '2'"),
        ("@reboot", "unknown macro '@reboot': allowed @yearly, @annually, @monthly"),
        (
            "61 * * * * *",
            "second field '61' is invalid: allowed 0-59, *, lists, ranges and steps" + SIX_FIELDS,
        ),
        ("*/0 * * * * *", "second field '*/0' is invalid: allowed 0-59"),
        ("5/15 * * * * *", "second field '5/15' is invalid: allowed 0-59"),
        ("30-10 * * * * *", "second field '30-10' is invalid: allowed 0-59"),
        ("L * * * * *", "second field 'L' is invalid: allowed 0-59"),
        ("0 60 * * * *", "minute field '60' is invalid: allowed 0-59"),
        ("0 0 24 * * *", "hour field '24' is invalid: allowed 0-23"),
        ("0 0 0 30 2 *", "day-of-month field '30' never occurs in month field '2'"),
        # Minute-first with a year last is read seconds first: the message says how.
        (
            "0 8 * * * 2026",
            "day-of-week field '2026' is invalid: allowed 0-7 (0 and 7 are Sunday) or sun-sat, "
            "*, lists, ranges and steps" + SIX_FIELDS,
        ),
    ],
)
def test_invalid_expressions_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse_crontab(expression, BERLIN)


def test_every_invalid_field_is_reported() -> None:
    with pytest.raises(ValueError, match=r"^minute field '60'") as info:
        parse_crontab("60 8 * * funday", BERLIN)
    assert "; day-of-week field 'funday'" in str(info.value)
    assert "hour" not in str(info.value)


def test_29_february_is_a_valid_if_rare_schedule() -> None:
    trigger = parse_crontab("0 0 29 2 *", ZoneInfo("UTC"))
    assert iso(next_fire_times(trigger, datetime(2026, 1, 1, tzinfo=UTC), 1)) == [
        "2028-02-29T00:00:00+00:00"
    ]


@pytest.mark.parametrize(
    ("expression", "description"),
    [
        ("0 8 * * *", "At 08:00, every day"),
        ("*/15 * * * *", "Every 15 minutes, every hour, every day"),
        ("30 14 * * 1-5", "At 14:30, Monday through Friday"),
        ("0 8 * * 0", "At 08:00, only on Sunday"),
        ("0 8 * * 7", "At 08:00, only on Sunday"),
        ("0 8 1 * 1", "At 08:00, on day 1 of the month, or on Monday"),
        ("0 8 * * MON-fri", "At 08:00, Monday through Friday"),
        # Rewritten before describing: cron-descriptor reads a weekday step as "every n weeks".
        ("0 8 * * */2", "At 08:00, only on Sunday, Tuesday, Thursday, and Saturday"),
        ("0 8 * * 5-7", "At 08:00, only on Sunday, Friday, and Saturday"),
        ("0 8 * * 0-7", "At 08:00, every day"),
        ("*,5 8 * * *", "Every minute, between 08:00 and 08:59, every day"),
        ("@daily", "At 00:00, every day"),
        ("@weekly", "At 00:00, only on Sunday"),
        ("@monthly", "At 00:00, on day 1 of the month"),
        ("*/5 * * * * *", "Every 5 seconds, every minute, every hour, every day"),
        (
            "30 0 * * * *",
            "At 30 seconds past the minute, at 0 minutes past the hour, every hour, every day",
        ),
        ("15 30 8 * * 1-5", "At 08:30:15, Monday through Friday"),
        ("0 0 8 * * *", "At 08:00, every day"),
        ("0 0 8 * * */2", "At 08:00, only on Sunday, Tuesday, Thursday, and Saturday"),
        ("0-59/20 * 9 * * *", "Every 20 seconds, every minute, between 09:00 and 09:59, every day"),
    ],
)
def test_describe_crontab(expression: str, description: str) -> None:
    assert describe_crontab(expression) == description


@pytest.mark.parametrize(
    "expression",
    ["*/5,7 * * * *", "25-32,* 12-13 23 * *,*,5-7", "0 8 * * 3-4/5", "0 8 * FEB,dec 0-6/4"],
)
def test_describe_accepts_every_valid_expression(expression: str) -> None:
    assert describe_crontab(expression).startswith(("At ", "Every "))


def test_describe_refuses_an_invalid_expression() -> None:
    with pytest.raises(ValueError, match="hour field '25'"):
        describe_crontab("0 25 * * *")


def test_next_fire_times_are_strictly_after() -> None:
    trigger = parse_crontab("0 8 * * *", BERLIN)
    eight = at("2026-06-01 08:00")
    assert iso(next_fire_times(trigger, eight)) == [
        "2026-06-02T08:00:00+02:00",
        "2026-06-03T08:00:00+02:00",
        "2026-06-04T08:00:00+02:00",
    ]
    assert next_fire_times(trigger, eight - timedelta(seconds=1), count=1) == [eight]
    assert next_fire_times(trigger, eight, count=0) == []


def test_next_fire_times_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire_times(parse_crontab("0 8 * * *", BERLIN), datetime(2026, 6, 1))


# Triggers as the code before the seconds field pickled them (CrontabTrigger state version 1,
# pickle protocol 5 as the job store uses): stored jobs hold exactly these bytes.
FIVE_FIELD_PICKLES = {
    "0 8 1 * 1": (
        "gAWVVQMAAAAAAACMGnNjaGVkdWxlcl9hcHAuY3Jvbi5jcm9udGFilIwOQ3JvbnRhYlRyaWdnZXKUk5QpgZR9lCiM"
        "B3ZlcnNpb26USwKMCHRpbWV6b25llIwIYnVpbHRpbnOUjAdnZXRhdHRylJOUjAh6b25laW5mb5SMCFpvbmVJbmZv"
        "lJOUjAlfdW5waWNrbGWUhpRSlIwNRXVyb3BlL0JlcmxpbpRLAYaUUpSMCnN0YXJ0X2RhdGWUTowIZW5kX2RhdGWU"
        "TowGZmllbGRzlF2UKIwgYXBzY2hlZHVsZXIudHJpZ2dlcnMuY3Jvbi5maWVsZHOUjAlCYXNlRmllbGSUk5QpgZR9"
        "lCiMBG5hbWWUjAR5ZWFylIwKaXNfZGVmYXVsdJSIjAtleHByZXNzaW9uc5RdlIwlYXBzY2hlZHVsZXIudHJpZ2dl"
        "cnMuY3Jvbi5leHByZXNzaW9uc5SMDUFsbEV4cHJlc3Npb26Uk5QpgZR9lIwEc3RlcJROc2JhdWJoF4wKTW9udGhG"
        "aWVsZJSTlCmBlH2UKGgcjAVtb250aJRoHoloH12UaCMpgZR9lGgmTnNiYXViaBeMD0RheU9mTW9udGhGaWVsZJST"
        "lCmBlH2UKGgcjANkYXmUaB6JaB9dlGghjA9SYW5nZUV4cHJlc3Npb26Uk5QpgZR9lChoJk6MBWZpcnN0lEsBjARs"
        "YXN0lEsBdWJhdWJoF4wJV2Vla0ZpZWxklJOUKYGUfZQoaByMBHdlZWuUaB6IaB9dlGgjKYGUfZRoJk5zYmF1YmgX"
        "jA5EYXlPZldlZWtGaWVsZJSTlCmBlH2UKGgcjAtkYXlfb2Zfd2Vla5RoHoloH12UaCMpgZR9lGgmTnNiYXViaBkp"
        "gZR9lChoHIwEaG91cpRoHoloH12UaDYpgZR9lChoJk5oOUsIaDpLCHViYXViaBkpgZR9lChoHIwGbWludXRllGge"
        "iWgfXZRoNimBlH2UKGgmTmg5SwBoOksAdWJhdWJoGSmBlH2UKGgcjAZzZWNvbmSUaB6IaB9dlGg2KYGUfZQoaCZO"
        "aDlLAGg6SwB1YmF1YmWMBmppdHRlcpROjA9jcm9udGFiX3ZlcnNpb26USwGMCmV4cHJlc3Npb26UjAkwIDggMSAq"
        "IDGUdWIu"
    ),
    "30 2 * * *": (
        "gAWVTQMAAAAAAACMGnNjaGVkdWxlcl9hcHAuY3Jvbi5jcm9udGFilIwOQ3JvbnRhYlRyaWdnZXKUk5QpgZR9lCiM"
        "B3ZlcnNpb26USwKMCHRpbWV6b25llIwIYnVpbHRpbnOUjAdnZXRhdHRylJOUjAh6b25laW5mb5SMCFpvbmVJbmZv"
        "lJOUjAlfdW5waWNrbGWUhpRSlIwNRXVyb3BlL0JlcmxpbpRLAYaUUpSMCnN0YXJ0X2RhdGWUTowIZW5kX2RhdGWU"
        "TowGZmllbGRzlF2UKIwgYXBzY2hlZHVsZXIudHJpZ2dlcnMuY3Jvbi5maWVsZHOUjAlCYXNlRmllbGSUk5QpgZR9"
        "lCiMBG5hbWWUjAR5ZWFylIwKaXNfZGVmYXVsdJSIjAtleHByZXNzaW9uc5RdlIwlYXBzY2hlZHVsZXIudHJpZ2dl"
        "cnMuY3Jvbi5leHByZXNzaW9uc5SMDUFsbEV4cHJlc3Npb26Uk5QpgZR9lIwEc3RlcJROc2JhdWJoF4wKTW9udGhG"
        "aWVsZJSTlCmBlH2UKGgcjAVtb250aJRoHoloH12UaCMpgZR9lGgmTnNiYXViaBeMD0RheU9mTW9udGhGaWVsZJST"
        "lCmBlH2UKGgcjANkYXmUaB6JaB9dlGgjKYGUfZRoJk5zYmF1YmgXjAlXZWVrRmllbGSUk5QpgZR9lChoHIwEd2Vl"
        "a5RoHohoH12UaCMpgZR9lGgmTnNiYXViaBeMDkRheU9mV2Vla0ZpZWxklJOUKYGUfZQoaByMC2RheV9vZl93ZWVr"
        "lGgeiWgfXZRoIymBlH2UaCZOc2JhdWJoGSmBlH2UKGgcjARob3VylGgeiWgfXZRoIYwPUmFuZ2VFeHByZXNzaW9u"
        "lJOUKYGUfZQoaCZOjAVmaXJzdJRLAowEbGFzdJRLAnViYXViaBkpgZR9lChoHIwGbWludXRllGgeiWgfXZRoTCmB"
        "lH2UKGgmTmhPSx5oUEsedWJhdWJoGSmBlH2UKGgcjAZzZWNvbmSUaB6IaB9dlGhMKYGUfZQoaCZOaE9LAGhQSwB1"
        "YmF1YmWMBmppdHRlcpROjA9jcm9udGFiX3ZlcnNpb26USwGMCmV4cHJlc3Npb26UjAozMCAyICogKiAqlHViLg=="
    ),
}


@pytest.mark.parametrize("expression", sorted(FIVE_FIELD_PICKLES))
def test_a_trigger_pickled_before_the_seconds_field_loads_and_fires_as_before(
    expression: str,
) -> None:
    stored = base64.b64decode(FIVE_FIELD_PICKLES[expression])
    restored = pickle.loads(stored)  # noqa: S301
    fresh = parse_crontab(expression, BERLIN)

    assert isinstance(restored, CrontabTrigger)
    assert restored.expression == expression
    assert str(restored) == f"cron: {expression} (Europe/Berlin)"
    # A five-field trigger still writes the state it always wrote, byte for byte.
    assert restored.__getstate__()["crontab_version"] == 1
    assert pickle.dumps(fresh, protocol=5) == stored
    # From just before the clocks go back to a month later: days, DST and all.
    start, end = at("2026-10-20 00:00"), at("2026-11-20 00:00")
    assert iso(fire_times(restored, start, end)) == iso(fire_times(fresh, start, end))
    assert {moment.second for moment in fire_times(restored, start, end)} == {0}


def test_a_six_field_trigger_pickles_as_state_version_2() -> None:
    trigger = parse_crontab("*/5 30 2 * * *", BERLIN)
    state = trigger.__getstate__()
    assert state["version"] == 2  # CronTrigger's own, as for five fields
    assert state["crontab_version"] == 2
    assert state["expression"] == "*/5 30 2 * * *"

    restored = pickle.loads(pickle.dumps(trigger))  # noqa: S301

    assert isinstance(restored, CrontabTrigger)
    assert restored.expression == "*/5 30 2 * * *"
    start, end = at("2026-10-24 00:00"), at("2026-10-27 00:00")
    assert iso(fire_times(restored, start, end)) == iso(fire_times(trigger, start, end))
    assert len(fire_times(restored, start, end)) == 3 * 12  # once on the fall-back day too


def test_code_that_predates_seconds_refuses_a_six_field_state_by_its_version() -> None:
    """What the previous release does with a six-field trigger: refuse it, and say why."""

    class PreviousRelease(CrontabTrigger):
        STATE_VERSION = 1

    blank = PreviousRelease.__new__(PreviousRelease)
    state = parse_crontab("*/5 * * * * *", BERLIN).__getstate__()
    with pytest.raises(ValueError, match="version 2 of PreviousRelease"):
        blank.__setstate__(state)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (
            "*/5 * * * * *",
            ["2026-06-01T12:00:05+02:00", "2026-06-01T12:00:10+02:00", "2026-06-01T12:00:15+02:00"],
        ),
        (
            "30 0 * * * *",
            ["2026-06-01T12:00:30+02:00", "2026-06-01T13:00:30+02:00", "2026-06-01T14:00:30+02:00"],
        ),
        (
            "0,30 * * * * *",
            ["2026-06-01T12:00:30+02:00", "2026-06-01T12:01:00+02:00", "2026-06-01T12:01:30+02:00"],
        ),
        (
            "10-20/5 * * * * *",
            ["2026-06-01T12:00:10+02:00", "2026-06-01T12:00:15+02:00", "2026-06-01T12:00:20+02:00"],
        ),
        (
            "15 30 8 * * 1-5",
            ["2026-06-02T08:30:15+02:00", "2026-06-03T08:30:15+02:00", "2026-06-04T08:30:15+02:00"],
        ),
        (
            "0 0 8 * * *",
            ["2026-06-02T08:00:00+02:00", "2026-06-03T08:00:00+02:00", "2026-06-04T08:00:00+02:00"],
        ),
        # Both day fields restricted: either one, as with five fields; Sunday is 0.
        (
            "45 0 8 1 * 0",
            ["2026-06-07T08:00:45+02:00", "2026-06-14T08:00:45+02:00", "2026-06-21T08:00:45+02:00"],
        ),
    ],
)
def test_six_fields_put_seconds_first(expression: str, expected: list[str]) -> None:
    trigger = parse_crontab(expression, BERLIN)
    assert iso(next_fire_times(trigger, at("2026-06-01 12:00"), 3)) == expected


def test_either_day_with_seconds_includes_the_day_of_month() -> None:
    trigger = parse_crontab("45 0 8 1 * 0", BERLIN)
    assert iso(next_fire_times(trigger, at("2026-06-25 00:00"), 3)) == [
        "2026-06-28T08:00:45+02:00",
        "2026-07-01T08:00:45+02:00",
        "2026-07-05T08:00:45+02:00",
    ]


def test_every_five_seconds_fires_twelve_times_a_minute() -> None:
    times = fire_times(
        parse_crontab("*/5 * * * * *", BERLIN), at("2026-06-01 12:00"), at("2026-06-01 12:01")
    )
    assert [moment.second for moment in times] == list(range(0, 60, 5))


def test_five_fields_mean_second_zero_exactly_as_before() -> None:
    five = parse_crontab("*/15 8 * * *", BERLIN)
    six = parse_crontab("0 */15 8 * * *", BERLIN)
    start, end = at("2026-06-01 00:00"), at("2026-06-03 00:00")
    assert iso(fire_times(five, start, end)) == iso(fire_times(six, start, end))
    # The five-field trigger leaves CronTrigger's second field at its default, as before.
    [second] = [field for field in five.fields if field.name == "second"]
    assert (str(second), second.is_default) == ("0", True)


def test_str_and_repr_show_six_fields() -> None:
    trigger = parse_crontab("*/5 * * * * *", BERLIN)
    assert str(trigger) == "cron: */5 * * * * * (Europe/Berlin)"
    assert repr(trigger) == "<CrontabTrigger ('*/5 * * * * *', timezone='Europe/Berlin')>"


def utc_steps(times: list[datetime]) -> set[timedelta]:
    instants = [moment.astimezone(UTC) for moment in times]
    return {later - earlier for earlier, later in itertools.pairwise(instants)}


def test_seconds_with_a_wildcard_hour_run_on_through_the_clocks_going_back() -> None:
    before = at("2026-10-25 02:59:40")  # the first 02:59:40, +02:00
    after = at("2026-10-25 02:00:20").replace(fold=1)  # the second 02:00:20, +01:00
    times = fire_times(parse_crontab("*/5 * * * * *", BERLIN), before, after)
    assert iso(times)[3:6] == [
        "2026-10-25T02:59:55+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:00:05+01:00",
    ]
    assert len(times) == 8  # 40 seconds
    assert utc_steps(times) == {timedelta(seconds=5)}


def test_seconds_with_a_wildcard_hour_run_on_through_the_clocks_going_forward() -> None:
    times = fire_times(
        parse_crontab("*/5 * * * * *", BERLIN), at("2026-03-29 01:59:45"), at("2026-03-29 03:00:15")
    )
    assert iso(times) == [
        "2026-03-29T01:59:45+01:00",
        "2026-03-29T01:59:50+01:00",
        "2026-03-29T01:59:55+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:00:05+02:00",
        "2026-03-29T03:00:10+02:00",
    ]
    assert utc_steps(times) == {timedelta(seconds=5)}


@pytest.mark.parametrize(
    ("zone", "day", "expression", "expected"),
    [
        # Fall back, fixed hour: the repeated hour runs once, as with five fields.
        (
            BERLIN,
            date(2026, 10, 25),
            "*/20 30 2 * * *",
            ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:20+02:00", "2026-10-25T02:30:40+02:00"],
        ),
        (NEW_YORK, date(2026, 11, 1), "15 30 1 * * *", ["2026-11-01T01:30:15-04:00"]),
        # Spring forward, in the skipped hour: once, as `30 2 * * *` fires once, an hour later.
        (BERLIN, date(2026, 3, 29), "15 30 2 * * *", ["2026-03-29T03:30:15+02:00"]),
        (BERLIN, date(2026, 3, 29), "*/20 30 2 * * *", ["2026-03-29T03:30:00+02:00"]),
        (NEW_YORK, date(2026, 3, 8), "15 30 2 * * *", ["2026-03-08T03:30:15-04:00"]),
    ],
)
def test_seconds_with_a_fixed_hour_across_dst_fire_as_five_fields_do(
    zone: ZoneInfo, day: date, expression: str, expected: list[str]
) -> None:
    assert day_fire_times(expression, zone, day) == expected


def test_a_changed_seconds_field_is_a_changed_entry() -> None:
    def entry(cron: str) -> CronJobSpec:
        return CronJobSpec(
            id="tick",
            job="token_cleanup",
            cron=cron,
            timezone="UTC",
            args=(),
            kwargs={},
            enabled=True,
            misfire_grace_s=60.0,
            coalesce=True,
            description="",
        )

    stored = {"tick": entry("0 */5 * * * *").fingerprint}
    assert plan_reconcile([entry("30 */5 * * * *")], stored).changed == [entry("30 */5 * * * *")]
    assert plan_reconcile([entry("*/5 * * * *")], stored).changed == [entry("*/5 * * * *")]
    assert plan_reconcile([entry("0 */5 * * * *")], stored).unchanged == ["tick"]
