from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import Field

from scheduler_app.cron.crontab import CrontabTrigger
from scheduler_app.cron.entries import CronJobSpec, parse_job_specs
from scheduler_app.engine.executor import RegisteredJob
from scheduler_app.errors import ConfigError

if TYPE_CHECKING:
    # Only for type checking, as job modules often do: the annotation does not resolve at run
    # time, and the other parameters must still be checked.
    from scheduler_app.engine.executor import JobContext


class Box:
    """A class pydantic has no schema for."""


async def report(ctx: object, days: int = 1, *, recipients: list[str] | None = None) -> str:
    return f"{days} {recipients}"


async def cleanup(ctx: object, batch_size: int, dry_run: bool = False) -> str:
    return f"{batch_size} {dry_run}"


async def tag(ctx: object, *labels: str, **extra: float) -> str:
    return f"{labels} {extra}"


async def bounded(ctx: object, limit: Annotated[int, Field(gt=0)]) -> str:
    return str(limit)


async def anything(ctx: object, *values: Any) -> str:
    return str(values)


async def typed_context(ctx: JobContext, count: int, box: Box | None = None) -> str:
    return f"{count} {box}"


async def deliver(ctx: object, reminder_id: str) -> str:
    return reminder_id


REGISTRY: Mapping[str, RegisteredJob] = {
    job.name: job
    for job in (
        RegisteredJob("daily_report", report, "Mail the daily report."),
        RegisteredJob("token_cleanup", cleanup, "Delete expired tokens."),
        RegisteredJob("tag", tag, "Tag things."),
        RegisteredJob("bounded", bounded, "Respect a limit."),
        RegisteredJob("anything", anything, "Take anything."),
        RegisteredJob("typed_context", typed_context, "Annotated with the real context."),
        RegisteredJob("deliver_reminder", deliver, "Deliver one reminder.", configurable=False),
    )
}
KNOWN = "known jobs: anything, bounded, daily_report, tag, token_cleanup, typed_context"
ALLOWED = (
    "allowed keys: args, coalesce, cron, description, enabled, id, job, kwargs, "
    "misfire_grace_s, timezone"
)


def parse(entries: Any, default_timezone: str = "Europe/Berlin") -> list[CronJobSpec]:
    return parse_job_specs(
        entries, source="config.yaml", default_timezone=default_timezone, registry=REGISTRY
    )


def problems(entries: Any, default_timezone: str = "Europe/Berlin") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(entries, default_timezone)
    return info.value.message.splitlines()


def entry(**fields: Any) -> dict[str, Any]:
    return {"id": "daily-report", "job": "daily_report", "cron": "0 8 * * *", **fields}


def spec(**fields: Any) -> CronJobSpec:
    [parsed] = parse([entry(**fields)])
    return parsed


def test_defaults() -> None:
    assert spec() == CronJobSpec(
        id="daily-report",
        job="daily_report",
        cron="0 8 * * *",
        timezone="Europe/Berlin",
        args=(),
        kwargs={},
        enabled=True,
        misfire_grace_s=3600.0,
        coalesce=True,
        description="Mail the daily report.",
    )


def test_every_key_given() -> None:
    parsed = spec(
        timezone="America/New_York",
        args=[7],
        kwargs={"recipients": ["ada@example.com"]},
        enabled=False,
        misfire_grace_s=60,
        coalesce=False,
        description="Weekly numbers.",
    )
    assert parsed.timezone == "America/New_York"
    assert parsed.args == (7,)
    assert parsed.kwargs == {"recipients": ["ada@example.com"]}
    assert parsed.enabled is False
    assert parsed.misfire_grace_s == 60.0
    assert isinstance(parsed.misfire_grace_s, float)
    assert parsed.coalesce is False
    assert parsed.description == "Weekly numbers."


def test_entries_from_yaml() -> None:
    text = """
jobs:
  - id: daily-report
    job: daily_report
    cron: "0 8 * * 1-5"
    kwargs: {days: 7}
  - id: token.cleanup_2
    job: token_cleanup
    cron: "@hourly"
    timezone: UTC
    args: [500]
    description: ""
"""
    first, second = parse(yaml.safe_load(text)["jobs"])
    assert (first.id, first.kwargs, first.timezone) == (
        "daily-report",
        {"days": 7},
        "Europe/Berlin",
    )
    assert (second.id, second.args, second.timezone) == ("token.cleanup_2", (500,), "UTC")
    assert second.description == ""


def test_empty_list_gives_no_jobs() -> None:
    assert parse([]) == []


def test_trigger_uses_the_entry_time_zone() -> None:
    trigger = spec(cron="0 8 * * 0", timezone="America/New_York").trigger()
    assert isinstance(trigger, CrontabTrigger)
    assert str(trigger) == "cron: 0 8 * * 0 (America/New_York)"
    assert trigger.timezone == ZoneInfo("America/New_York")


def test_variadic_parameters_take_extra_arguments() -> None:
    parsed = spec(job="tag", args=["a", "b"], kwargs={"weight": 1.5, "count": 2})
    assert parsed.args == ("a", "b")


def test_not_a_list() -> None:
    assert problems({"id": "x"}) == ["config.yaml: jobs: must be a list"]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"job": "daily_reprt"},
            f"config.yaml: jobs[0] 'daily-report': unknown job 'daily_reprt' ({KNOWN})",
        ),
        (
            {"job": "jobs.daily_report:daily_report"},
            "config.yaml: jobs[0] 'daily-report': unknown job 'jobs.daily_report:daily_report' "
            f"({KNOWN}; name a registered job, not an import path)",
        ),
        (
            {"job": "deliver_reminder", "args": ["r1"]},
            "config.yaml: jobs[0] 'daily-report': job 'deliver_reminder' is internal to the "
            "service and cannot be scheduled here",
        ),
        (
            {"job": ["daily_report"]},
            "config.yaml: jobs[0] 'daily-report': job must be the name of a registered job, "
            "not a list",
        ),
        (
            {"cron": "61 8 * * *"},
            "config.yaml: jobs[0] 'daily-report': minute field '61' is invalid: "
            "allowed 0-59, *, lists, ranges and steps",
        ),
        (
            {"cron": "61 0 8 * * *"},
            "config.yaml: jobs[0] 'daily-report': second field '61' is invalid: "
            "allowed 0-59, *, lists, ranges and steps "
            "(6 fields read as: second minute hour day-of-month month day-of-week)",
        ),
        (
            {"cron": "0 8 * *"},
            "config.yaml: jobs[0] 'daily-report': expected 5 fields "
            "(minute hour day-of-month month day-of-week) or 6 with seconds first "
            "(second minute hour day-of-month month day-of-week), got 4",
        ),
        (
            {"cron": 8},
            "config.yaml: jobs[0] 'daily-report': cron must be a crontab expression "
            "such as '0 8 * * *', not a number",
        ),
        (
            {"timezone": "Mars/Base"},
            "config.yaml: jobs[0] 'daily-report': unknown time zone 'Mars/Base' "
            "(use an IANA name such as 'Europe/Berlin')",
        ),
        (
            {"timezone": 1},
            "config.yaml: jobs[0] 'daily-report': timezone must be an IANA name such as "
            "'Europe/Berlin', not a number",
        ),
        (
            {"id": "reminder:42"},
            "config.yaml: jobs[0] 'reminder:42': id 'reminder:42' is invalid: use 1-100 "
            "letters, digits, '_', '.' and '-', starting with a letter or digit",
        ),
        (
            {"id": "-leading-dash"},
            "config.yaml: jobs[0] '-leading-dash': id '-leading-dash' is invalid: use 1-100 "
            "letters, digits, '_', '.' and '-', starting with a letter or digit",
        ),
        (
            {"id": 42},
            "config.yaml: jobs[0]: id must be a string, not a number",
        ),
        (
            {"cronn": "0 9 * * *"},
            f"config.yaml: jobs[0] 'daily-report': unknown key 'cronn' ({ALLOWED})",
        ),
        (
            {"args": "7"},
            "config.yaml: jobs[0] 'daily-report': args must be a list, not a string",
        ),
        (
            {"kwargs": ["days", 7]},
            "config.yaml: jobs[0] 'daily-report': kwargs must be a mapping of argument names "
            "to values",
        ),
        (
            {"kwargs": {1: 7}},
            "config.yaml: jobs[0] 'daily-report': kwargs must be a mapping of argument names "
            "to values",
        ),
        (
            {"enabled": "yes please"},
            "config.yaml: jobs[0] 'daily-report': enabled must be true or false, not 'yes please'",
        ),
        (
            {"coalesce": 1},
            "config.yaml: jobs[0] 'daily-report': coalesce must be true or false, not 1",
        ),
        (
            {"misfire_grace_s": 0},
            "config.yaml: jobs[0] 'daily-report': misfire_grace_s must be a number of seconds "
            "greater than 0, not 0",
        ),
        (
            {"misfire_grace_s": "1h"},
            "config.yaml: jobs[0] 'daily-report': misfire_grace_s must be a number of seconds "
            "greater than 0, not '1h'",
        ),
        (
            {"misfire_grace_s": True},
            "config.yaml: jobs[0] 'daily-report': misfire_grace_s must be a number of seconds "
            "greater than 0, not True",
        ),
        (
            {"description": "x" * 501},
            "config.yaml: jobs[0] 'daily-report': description must be a string of at most 500 "
            "characters",
        ),
        (
            {"description": None},
            "config.yaml: jobs[0] 'daily-report': description must be a string of at most 500 "
            "characters",
        ),
    ],
)
def test_each_problem_names_file_entry_and_cause(fields: dict[str, Any], problem: str) -> None:
    assert problems([entry(**fields)]) == [problem]


def test_entry_that_is_not_a_mapping() -> None:
    assert problems(["daily_report"]) == [
        "config.yaml: jobs[0]: must be a mapping of keys to values, not a string "
        "(start each entry with '- id: ...')"
    ]


def test_missing_required_keys() -> None:
    assert problems([{"job": "daily_report"}, {}]) == [
        "config.yaml: jobs[0]: missing required key 'id'",
        "config.yaml: jobs[0]: missing required key 'cron'",
        "config.yaml: jobs[1]: missing required key 'id'",
        "config.yaml: jobs[1]: missing required key 'job'",
        "config.yaml: jobs[1]: missing required key 'cron'",
    ]


def test_duplicate_id_names_the_first_entry() -> None:
    entries = [entry(), entry(id="other"), entry(cron="0 9 * * *")]
    assert problems(entries) == [
        "config.yaml: jobs[2] 'daily-report': duplicate id 'daily-report' (already used by jobs[0])"
    ]


def test_invalid_default_time_zone_is_reported_per_entry() -> None:
    assert problems([entry()], default_timezone="Nowhere/Land") == [
        "config.yaml: jobs[0] 'daily-report': unknown time zone 'Nowhere/Land' "
        "(use an IANA name such as 'Europe/Berlin')"
    ]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"args": [1, 2]}, "too many positional arguments: daily_report takes at most 1, got 2"),
        (
            {"kwargs": {"dayz": 2}},
            "unknown keyword argument 'dayz' (daily_report accepts: days, recipients)",
        ),
        (
            {"args": [2], "kwargs": {"days": 3}},
            "argument days is given twice, in args and in kwargs",
        ),
        ({"kwargs": {"days": "many"}}, "argument days: Input should be a valid integer"),
        ({"args": ["7"]}, "argument days: Input should be a valid integer"),
        ({"kwargs": {"days": 7.0}}, "argument days: Input should be a valid integer"),
        ({"kwargs": {"days": True}}, "argument days: Input should be a valid integer"),
        (
            {"kwargs": {"recipients": ["ada@example.com", 5]}},
            "argument recipients[1]: Input should be a valid string",
        ),
        (
            {"kwargs": {"recipients": "ada@example.com"}},
            "argument recipients: Input should be a valid list",
        ),
    ],
)
def test_arguments_are_checked_against_the_signature(fields: dict[str, Any], problem: str) -> None:
    assert problems([entry(**fields)]) == [f"config.yaml: jobs[0] 'daily-report': {problem}"]


@pytest.mark.parametrize(
    ("job", "fields", "found"),
    [
        ("token_cleanup", {}, ["missing required argument 'batch_size'"]),
        (
            "token_cleanup",
            {"kwargs": {"batch_size": "many", "dry_run": "no"}},
            [
                "argument batch_size: Input should be a valid integer",
                "argument dry_run: Input should be a valid boolean",
            ],
        ),
        ("token_cleanup", {"args": [100, False]}, []),
        ("bounded", {"args": [0]}, ["argument limit: Input should be greater than 0"]),
        ("bounded", {"kwargs": {"limit": 5}}, []),
        (
            "tag",
            {"args": ["a", 2], "kwargs": {"weight": "heavy"}},
            [
                "argument labels[1]: Input should be a valid string",
                "argument weight: Input should be a valid number",
            ],
        ),
        ("typed_context", {"args": ["7"]}, ["argument count: Input should be a valid integer"]),
        ("typed_context", {"args": [7]}, []),
        (
            "typed_context",
            {"args": [7, "box"]},
            ["argument box: Input should be an instance of Box"],
        ),
        # The context parameter is never supplied by the configuration.
        ("bounded", {"kwargs": {"limit": 5, "ctx": None}}, ["unknown keyword argument 'ctx'"]),
    ],
)
def test_argument_checks_for_other_signatures(
    job: str, fields: dict[str, Any], found: list[str]
) -> None:
    entries = [entry(job=job, **fields)]
    if not found:
        assert len(parse(entries)) == 1
        return
    lines = problems(entries)
    assert len(lines) == len(found)
    for line, expected in zip(lines, found, strict=True):
        assert line.startswith(f"config.yaml: jobs[0] 'daily-report': {expected}")


def test_every_problem_of_every_entry_is_reported_at_once() -> None:
    entries = [
        entry(id="token-cleanup", job="token_cleanup", cron="61 * * * *", args=[10]),
        entry(job="daily_reprt", enabled="sometimes"),
        {"id": "x", "job": "daily_report", "cron": "0 8 * * *", "timezone": "Mars/Base"},
        {"job": "deliver_reminder"},
        entry(id="token-cleanup", kwargs={"days": "many"}, extra=1),
        "not a mapping",
    ]
    lines = problems(entries)
    assert lines == [
        "config.yaml: jobs[0] 'token-cleanup': minute field '61' is invalid: "
        "allowed 0-59, *, lists, ranges and steps",
        f"config.yaml: jobs[1] 'daily-report': unknown job 'daily_reprt' ({KNOWN})",
        "config.yaml: jobs[1] 'daily-report': enabled must be true or false, not 'sometimes'",
        "config.yaml: jobs[2] 'x': unknown time zone 'Mars/Base' "
        "(use an IANA name such as 'Europe/Berlin')",
        "config.yaml: jobs[3]: missing required key 'id'",
        "config.yaml: jobs[3]: missing required key 'cron'",
        "config.yaml: jobs[3]: job 'deliver_reminder' is internal to the service and cannot be "
        "scheduled here",
        f"config.yaml: jobs[4] 'token-cleanup': unknown key 'extra' ({ALLOWED})",
        "config.yaml: jobs[4] 'token-cleanup': duplicate id 'token-cleanup' "
        "(already used by jobs[0])",
        "config.yaml: jobs[4] 'token-cleanup': argument days: Input should be a valid integer",
        "config.yaml: jobs[5]: must be a mapping of keys to values, not a string "
        "(start each entry with '- id: ...')",
    ]


def test_a_problem_never_spans_lines() -> None:
    lines = problems([entry(id="bad\nid")])
    assert lines == [
        "config.yaml: jobs[0] 'bad\\nid': id 'bad\\nid' is invalid: use 1-100 letters, "
        "digits, '_', '.' and '-', starting with a letter or digit"
    ]


def test_fingerprint_is_a_sha256_hex_digest_stable_for_equal_specs() -> None:
    first, second = spec(kwargs={"days": 7}), spec(kwargs={"days": 7})
    assert first is not second
    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 64
    assert int(first.fingerprint, 16) >= 0


def test_fingerprint_ignores_key_order_and_int_versus_float_grace() -> None:
    ordered = spec(job="tag", kwargs={"a": 1.0, "b": 2.0}, misfire_grace_s=60)
    reordered = spec(job="tag", kwargs={"b": 2.0, "a": 1.0}, misfire_grace_s=60.0)
    assert ordered.fingerprint == reordered.fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"id": "weekly-report"},
        {"job": "tag"},
        {"cron": "0 9 * * *"},
        {"cron": "0  8 * * *"},
        {"cron": "0 0 8 * * *"},
        {"cron": "30 0 8 * * *"},
        {"timezone": "UTC"},
        {"args": [2]},
        {"args": ["1"]},
        {"kwargs": {"days": 2}},
        {"kwargs": {"recipients": ["ada@example.com"]}},
        {"enabled": False},
        {"misfire_grace_s": 60},
        {"coalesce": False},
        {"description": "Another text."},
    ],
)
def test_fingerprint_changes_with_any_field(change: dict[str, Any]) -> None:
    base = CronJobSpec(
        id="daily-report",
        job="daily_report",
        cron="0 8 * * *",
        timezone="Europe/Berlin",
        args=(1,),
        kwargs={"days": 1},
        enabled=True,
        misfire_grace_s=3600.0,
        coalesce=True,
        description="Mail the daily report.",
    )
    changed = dataclasses.replace(base, **change)
    assert changed != base
    assert changed.fingerprint != base.fingerprint


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ([1], [True]),
        ([1], [1.5]),
        ([{1: "a"}], [{"1": "a"}]),
        ([date(2026, 1, 1)], ["2026-01-01"]),
        ([{"x": [1, 2]}], [{"x": [2, 1]}]),
    ],
)
def test_fingerprint_tells_apart_values_that_json_would_merge(
    one: list[Any], other: list[Any]
) -> None:
    assert (
        spec(job="anything", args=one).fingerprint != spec(job="anything", args=other).fingerprint
    )
