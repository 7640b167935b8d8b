"""Crontab schedules on top of APScheduler 3's CronTrigger: the standard five fields, or six
with a seconds field first (second minute hour day-of-month month day-of-week).

CrontabTrigger is pickled into the job store: its import path is part of the stored data, so
never move or rename it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from cron_descriptor import ExpressionDescriptor, Options  # type: ignore[import-untyped]

MACROS: Mapping[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Crontab numbers days from 0 = Sunday; APScheduler 3 only understands them unambiguously by name.
_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# Longest possible month lengths: 29 February happens, so it is a valid (if rare) schedule.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ITEM = re.compile(
    r"(?:(?P<star>\*)|(?P<first>[0-9]+|[a-z]+)(?:-(?P<last>[0-9]+|[a-z]+))?)(?:/(?P<step>[0-9]+))?"
)


def _describe_options() -> Any:
    """Return cron-descriptor options for verbose English with a 24-hour clock."""
    try:
        # A fixed locale_code also keeps cron-descriptor 2 from warning when LANG is unset.
        return Options(verbose=True, use_24hour_time_format=True, locale_code="en_US")
    except TypeError:
        # Older releases (pyproject allows >=1.4) take no arguments to Options().
        options = Options()
        options.verbose = True
        options.use_24hour_time_format = True
        options.locale_code = "en_US"
        return options


_DESCRIBE_OPTIONS = _describe_options()


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    allowed: str
    names: Mapping[str, int] = field(default_factory=dict)
    # Highest value that `*` stands for: day-of-week 7 repeats Sunday, so `*` means 0-6.
    star_high: int | None = None

    def expand(self, text: str) -> frozenset[int]:
        """Return the values the field selects, or raise ValueError naming the field."""
        values: set[int] = set()
        for item in text.lower().split(","):
            selected = self._item(item)
            if selected is None:
                raise ValueError(
                    f"{self.name} field {text!r} is invalid: "
                    f"allowed {self.allowed}, *, lists, ranges and steps"
                )
            values.update(selected)
        return frozenset(values)

    def _item(self, item: str) -> range | None:
        match = _ITEM.fullmatch(item)
        if match is None:
            return None
        step = int(match["step"]) if match["step"] else 1
        if match["star"]:
            first: int | None = self.low
            last: int | None = self.high if self.star_high is None else self.star_high
        else:
            # Like Vixie cron, a step needs a range: `5/15` is refused rather than guessed at.
            if match["step"] and not match["last"]:
                return None
            first = self._value(match["first"])
            last = self._value(match["last"]) if match["last"] else first
        if first is None or last is None or first > last or not 1 <= step <= self.high - self.low:
            return None
        return range(first, last + 1, step)

    def _value(self, token: str) -> int | None:
        value = int(token) if token.isdigit() else self.names.get(token)
        return value if value is not None and self.low <= value <= self.high else None


# Written first when present, as Quartz, Spring and cron-descriptor do; absent means second 0.
_SECOND = _Field("second", 0, 59, "0-59")
_FIELDS = (
    _Field("minute", 0, 59, "0-59"),
    _Field("hour", 0, 23, "0-23"),
    _Field("day-of-month", 1, 31, "1-31"),
    _Field("month", 1, 12, "1-12 or jan-dec", {name: n for n, name in enumerate(_MONTH_NAMES, 1)}),
    _Field(
        "day-of-week",
        0,
        7,
        "0-7 (0 and 7 are Sunday) or sun-sat",
        {name: n for n, name in enumerate(_WEEKDAY_NAMES)},
        star_high=6,
    ),
)


@dataclass(frozen=True)
class _Schedule:
    # The fields in the plainest syntax, for cron-descriptor (see _plain).
    plain_text: str
    # None for a five-field expression: it fires at second 0, and CronTrigger's own default
    # second field stays as it always was, so its pickled state does not change either.
    seconds: frozenset[int] | None
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    hour_is_wildcard: bool
    # Both day fields restricted: crontab then fires on days matching EITHER field.
    either_day: bool

    def trigger_fields(self, *, days: bool = True, weekdays: bool = True) -> dict[str, str]:
        """Return CronTrigger keyword arguments, leaving out the day fields not asked for."""
        if not weekdays or len(self.weekdays) == 7:
            day_of_week = "*"
        else:
            day_of_week = ",".join(_WEEKDAY_NAMES[day] for day in sorted(self.weekdays))
        seconds = {} if self.seconds is None else {"second": _listing(self.seconds, _SECOND)}
        return {
            **seconds,
            "minute": _listing(self.minutes, _FIELDS[0]),
            "hour": _listing(self.hours, _FIELDS[1]),
            "day": _listing(self.days, _FIELDS[2]) if days else "*",
            "month": _listing(self.months, _FIELDS[3]),
            "day_of_week": day_of_week,
        }


def _listing(values: frozenset[int], spec: _Field) -> str:
    if len(values) == spec.high - spec.low + 1:
        return "*"
    return ",".join(str(value) for value in sorted(values))


def _plain(values: frozenset[int], spec: _Field, *, steps: bool = True) -> str:
    """Write values as `*`, `*/n`, `a-b/n` or a list of numbers and ranges."""
    # cron-descriptor misreads some valid crontab syntax: it fails on `*` inside a list and calls
    # a day-of-week step "every n weeks". Rewritten like this, it describes what cron runs.
    ordered = sorted(values)
    top = spec.high if spec.star_high is None else spec.star_high
    if len(ordered) == top - spec.low + 1:
        return "*"
    if steps and len(ordered) >= 2:
        step = ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(spec.low, top + 1, step)):
            return f"*/{step}"
        if (
            step > 1
            and len(ordered) >= 3
            and ordered == list(range(ordered[0], ordered[-1] + 1, step))
        ):
            return f"{ordered[0]}-{ordered[-1]}/{step}"
    runs: list[list[int]] = []
    for value in ordered:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ",".join(
        f"{run[0]}-{run[-1]}" if len(run) >= 3 else ",".join(map(str, run)) for run in runs
    )


def _parse(expression: str) -> _Schedule:
    text = expression.strip()
    if text.startswith("@"):
        macro = MACROS.get(text.lower())
        if macro is None:
            raise ValueError(f"unknown macro {text!r}: allowed {', '.join(MACROS)}")
        text = macro
    fields = text.split()
    if len(fields) not in (len(_FIELDS), len(_FIELDS) + 1):
        # Quartz's seven fields end with a year, which cron has no notion of.
        hint = "; a year field is not supported" if len(fields) == len(_FIELDS) + 2 else ""
        raise ValueError(
            "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds "
            f"first (second minute hour day-of-month month day-of-week), got {len(fields)}{hint}"
        )
    second_text = fields.pop(0) if len(fields) > len(_FIELDS) else None
    seconds: frozenset[int] | None = None
    values: list[frozenset[int]] = []
    problems: list[str] = []
    if second_text is not None:
        try:
            seconds = _SECOND.expand(second_text)
        except ValueError as exc:
            problems.append(str(exc))
    for spec, field_text in zip(_FIELDS, fields, strict=True):
        try:
            values.append(spec.expand(field_text))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        # Six fields meant as minute ... day-of-week year would otherwise read as a riddle.
        order = (
            " (6 fields read as: second minute hour day-of-month month day-of-week)"
            if second_text is not None
            else ""
        )
        raise ValueError("; ".join(problems) + order)

    minutes, hours, days, months, weekdays = values
    # Vixie cron's rule: a field starting with `*` counts as unrestricted for these decisions.
    day_is_wildcard = fields[2].startswith("*")
    weekday_is_wildcard = fields[4].startswith("*")
    either_day = not day_is_wildcard and not weekday_is_wildcard
    if not either_day and not any(
        day <= _MONTH_DAYS[month - 1] for month in months for day in days
    ):
        raise ValueError(
            f"day-of-month field {fields[2]!r} never occurs in month field {fields[3]!r}: "
            "the schedule would never fire"
        )
    weekdays = frozenset(day % 7 for day in weekdays)
    plain = [
        *(_plain(selected, spec) for selected, spec in zip(values[:4], _FIELDS, strict=False)),
        _plain(weekdays, _FIELDS[4], steps=False),
    ]
    if seconds is not None:
        # Seven fields, the last a year of `*`: cron-descriptor guesses what six fields mean.
        plain = [_plain(seconds, _SECOND), *plain, "*"]
    return _Schedule(
        plain_text=" ".join(plain),
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        hour_is_wildcard=fields[1].startswith("*"),
        either_day=either_day,
    )


class CrontabTrigger(CronTrigger):  # type: ignore[misc]
    """Fire on a crontab schedule (five fields, or six with seconds first), with Vixie cron's
    rules for days and DST."""

    __slots__ = ("_hour_is_wildcard", "_weekday_trigger", "expression")
    # 2: the expression may have six fields. A five-field trigger still writes 1, so that
    # code that predates the seconds field keeps reading it; six fields it refuses by version.
    STATE_VERSION = 2

    expression: str
    _hour_is_wildcard: bool
    _weekday_trigger: CronTrigger | None

    def __init__(self, expression: str, timezone: ZoneInfo) -> None:
        schedule = _parse(expression)
        super().__init__(
            timezone=timezone, **schedule.trigger_fields(weekdays=not schedule.either_day)
        )
        self.expression = expression
        self._adopt(schedule)

    @classmethod
    def from_crontab(cls, expr: str, timezone: ZoneInfo) -> CrontabTrigger:
        """Build the trigger; unlike CronTrigger's, day-of-week 0 means Sunday."""
        return cls(expr, timezone)

    def _adopt(self, schedule: _Schedule) -> None:
        self._hour_is_wildcard = schedule.hour_is_wildcard
        # CronTrigger can only AND its fields; the day-of-week half of an OR runs separately.
        self._weekday_trigger = (
            CronTrigger(timezone=self.timezone, **schedule.trigger_fields(days=False))
            if schedule.either_day
            else None
        )

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """Return the next fire time, firing only once when a fixed hour repeats at fall-back."""
        while True:
            candidate = self._next_match(previous_fire_time, now)
            if candidate is None:
                return None
            # Via UTC, because astimezone() to the same zone changes nothing: a time in the
            # spring-forward gap then reads as the wall time it really fires at.
            candidate = _utc(candidate).astimezone(self.timezone)
            if self._hour_is_wildcard or not _is_repeated_wall_time(candidate):
                return candidate
            previous_fire_time = now = candidate

    def _next_match(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        found: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        if self._weekday_trigger is not None:
            by_weekday: datetime | None = self._weekday_trigger.get_next_fire_time(
                previous_fire_time, now
            )
            # Compared in UTC: aware datetimes of one zone compare by wall time, ignoring fold.
            if by_weekday is not None and (found is None or _utc(by_weekday) < _utc(found)):
                found = by_weekday
        return found

    def __getstate__(self) -> dict[str, Any]:
        # CronTrigger's own "version" stays as it is, so its __setstate__ still accepts the state.
        state: dict[str, Any] = super().__getstate__()
        state["crontab_version"] = self.STATE_VERSION if _has_seconds(self.expression) else 1
        state["expression"] = self.expression
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        version = state.get("crontab_version", 1)
        if version > self.STATE_VERSION:
            raise ValueError(
                f"Got serialized data for version {version} of {type(self).__name__}, "
                f"but only versions up to {self.STATE_VERSION} can be handled"
            )
        super().__setstate__(state)
        self.expression = state["expression"]
        self._adopt(_parse(self.expression))

    def __str__(self) -> str:
        return f"cron: {self.expression} ({self.timezone})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ({self.expression!r}, timezone='{self.timezone}')>"


def _has_seconds(expression: str) -> bool:
    return len(expression.split()) > len(_FIELDS)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _is_repeated_wall_time(moment: datetime) -> bool:
    """Tell whether moment is the second occurrence of its wall-clock time (fall-back hour)."""
    return moment.fold == 1 and moment.replace(fold=0).utcoffset() != moment.utcoffset()


def parse_crontab(expression: str, timezone: ZoneInfo) -> CrontabTrigger:
    """Build the trigger for a crontab expression or macro, or raise ValueError naming the field."""
    return CrontabTrigger(expression, timezone)


def describe_crontab(expression: str) -> str:
    """Describe the schedule in English words, such as 'At 08:00, every day'."""
    text = _parse(expression).plain_text
    return str(ExpressionDescriptor(text, _DESCRIBE_OPTIONS).get_description())


def next_fire_times(trigger: CrontabTrigger, after: datetime, count: int = 3) -> list[datetime]:
    """Return the next `count` fire times strictly after the timezone-aware `after`."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    times: list[datetime] = []
    previous = after
    while len(times) < count:
        upcoming = trigger.get_next_fire_time(previous, previous)
        if upcoming is None:
            break
        times.append(upcoming)
        previous = upcoming
    return times
