"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import email_validator
from email_validator.rfc_constants import DNS_LABEL_LENGTH_LIMIT, EMAIL_MAX_LENGTH
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo
from pydantic.networks import validate_email
from pydantic_core import PydanticCustomError

from scheduler_app.channels.email.message import ascii_domain


def _single_line(value: str) -> str:
    # Control characters and every Unicode line or paragraph separator: the e-mail policy
    # refuses them in a header, and none belongs in a one-line subject.
    if any(unicodedata.category(char) in {"Cc", "Zl", "Zp"} for char in value):
        raise ValueError("must be a single line without control characters (CR, LF, NUL, ...)")
    return value


def _utf8(value: str, info: ValidationInfo) -> str:
    # A lone surrogate (JSON's "\ud800") has no UTF-8 form: no database stores it and no
    # message can carry it. Pydantic's JSON parser refuses one, so only text parsed otherwise
    # (FastAPI's json.loads) is looked at, and only if not ASCII (which isascii() knows without
    # reading it): encoding 5,000 non-ASCII characters took 6-16 us.
    if info.mode == "json" or value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Utf8 = AfterValidator(_utf8)


def _convertible_to_utc(value: datetime) -> datetime:
    # 0001-01-01T00:00:00+14:00 is before the first moment UTC can express (and
    # 9999-12-31T23:59:59-14:00 after the last): it could be neither stored nor compared.
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must fall within years 1 to 9999 once converted to UTC") from None
    return value


Moment = Annotated[AwareDatetime, AfterValidator(_convertible_to_utc)]
"""An aware datetime that can be converted to UTC; kept with the offset it was given."""


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# The addresses people give almost always: ASCII dot-atoms before the @, and after it lower-case
# labels of letters, digits and single inner hyphens, ending in a top-level domain of letters.
# email-validator's Unicode and IDNA checks, which such an address passes unchanged, took most of
# POST /subscribe's body validation (about 40 of 45 us); any other address still goes through
# them. The length limits are read from email-validator, so that the two cannot drift apart; it
# limits the part before the @ only in its strict mode, which pydantic does not use.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?P<domain>(?:[a-z0-9]+(?:-[a-z0-9]+)*\.)+[a-z]{2,})"
)


def _email_address(value: str) -> str:
    if _plain_address(value):
        return value
    # pydantic's EmailStr validation: the same error, or the same normalised address with its
    # domain in ASCII (IDNA) form, which every SMTP server takes; a Unicode domain needs one
    # that offers SMTPUTF8.
    address = ascii_domain(validate_email(value)[1])
    if "=?" in address:
        # RFC 2047: no encoded-word in an address. Decoders that decode one anyway (Python's
        # does) could find a line break in the To header.
        raise PydanticCustomError(
            "value_error",
            "value is not a valid email address: {reason}",
            {"reason": "it must not contain '=?', which starts an RFC 2047 encoded-word"},
        )
    return address


def _plain_address(value: str) -> bool:
    match = _PLAIN_ADDRESS.fullmatch(value)
    if match is None or len(value) > EMAIL_MAX_LENGTH or "=?" in value:
        return False
    domain = match["domain"]
    if any(len(label) > DNS_LABEL_LENGTH_LIMIT for label in domain.split(".")):
        return False
    return not any(
        domain == name or domain.endswith("." + name)
        for name in email_validator.SPECIAL_USE_DOMAIN_NAMES
    )


EmailAddress = Annotated[str, Utf8, AfterValidator(_email_address)]
Subject = Annotated[str, Field(min_length=1, max_length=200), Utf8, AfterValidator(_single_line)]
Text = Annotated[str, Utf8, AfterValidator(_no_nul)]


# Examples in the OpenAPI document (and so in /docs): one reminder, task, run and job as the
# API answers them, shared by the models that embed them.
REMINDER_EXAMPLE: dict[str, Any] = {
    "id": "0193a4b2-7c1e-7d2f-9a41-5b6c7d8e9f01",
    "email": "ada@example.com",
    "subject": "Stand up",
    "remind_at": "2030-01-15T08:00:00Z",
    "status": "scheduled",
    "attempts": 0,
    "last_error": None,
    "created_at": "2030-01-14T17:12:03.512000Z",
    "sent_at": None,
    "finished_at": None,
    "next_attempt_at": None,
}
TASK_EXAMPLE: dict[str, Any] = {
    "id": "0193a4b2-9d40-7b1a-8c55-2e3f4a5b6c7d",
    "job": "send_welcome_email",
    "args": {"email": "ada@example.com", "name": "Ada"},
    "status": "scheduled",
    "run_at": "2030-01-15T08:00:00Z",
    "attempts": 0,
    "last_error": None,
    "created_at": "2030-01-14T17:12:03.512000Z",
    "updated_at": "2030-01-14T17:12:03.512000Z",
    "finished_at": None,
    "next_attempt_at": None,
}
LAST_RUN_EXAMPLE: dict[str, Any] = {
    "id": "0193a4b2-a001-7c3d-b2e4-6f7a8b9c0d1e",
    "outcome": "success",
    "scheduled_for": "2030-01-14T07:00:00Z",
    "finished_at": "2030-01-14T07:00:01.204000Z",
}
RUN_EXAMPLE: dict[str, Any] = {
    "id": "0193a4b2-a001-7c3d-b2e4-6f7a8b9c0d1e",
    "job_id": "daily-report",
    "job": "daily_report",
    "scheduled_for": "2030-01-14T07:00:00Z",
    "started_at": "2030-01-14T07:00:00.012000Z",
    "finished_at": "2030-01-14T07:00:01.204000Z",
    "outcome": "success",
    "error": None,
    "result": "42 reminders sent, 0 failed",
    "manual": False,
}
JOB_EXAMPLE: dict[str, Any] = {
    "id": "daily-report",
    "kind": "cron",
    "job": "daily_report",
    "description": "Summary of the last 24 hours",
    "trigger": "cron: 0 8 * * * (Europe/Berlin)",
    "cron": "0 8 * * *",
    "timezone": "Europe/Berlin",
    "schedule_text": "At 08:00, every day",
    "next_run_time": "2030-01-15T07:00:00Z",
    "paused": False,
    "source": "config",
    "last_run": LAST_RUN_EXAMPLE,
}
QUARANTINED_EXAMPLE: dict[str, Any] = {
    "id": "weekly-digest",
    "error": "LookupError: job function 'reports.weekly_digest' is not registered",
    "quarantined_at": "2030-01-14T07:00:00.250000Z",
}
QUARANTINED_EXAMPLES = [QUARANTINED_EXAMPLE]
NEXT_CURSOR_EXAMPLE = "eyJrIjpbIjIwMzAtMDEtMTQiXX0"


def _subscribe_examples(schema: dict[str, Any]) -> None:
    # Computed when the document is built: a fixed date would be in the past (and refused) one
    # day, and remind_at may be at most reminders.max_delay_days ahead.
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    schema["examples"] = [
        {"email": "ada@example.com", "delay_seconds": 10800, "subject": "Stand up"},
        {"email": "ada@example.com", "remind_at": f"{tomorrow.isoformat()}T09:00:00+01:00"},
    ]


class ReminderCreate(BaseModel):
    """A one-off reminder: give exactly one of delay_seconds or remind_at."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_subscribe_examples)

    email: EmailAddress = Field(max_length=320, json_schema_extra={"format": "email"})
    delay_seconds: float | None = Field(None, gt=0, description="Seconds from now.")
    remind_at: Moment | None = Field(
        None, description="ISO 8601 with an offset, e.g. 2030-01-15T09:00:00+01:00."
    )
    subject: Subject | None = None
    message: Text | None = Field(None, max_length=5000)


class ReminderPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [REMINDER_EXAMPLE]})

    id: str
    email: str
    subject: str
    remind_at: datetime = Field(description="When the reminder is due, in UTC.")
    status: str = Field(description="scheduled, sent, failed, cancelled or missed.")
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None = Field(
        description="When a failed attempt will be tried again, while it is scheduled."
    )


class ReminderCreated(ReminderPublic):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**REMINDER_EXAMPLE, "cancel_token": "q3Zr8cT1mX0bVfK9wLs2pQyE7uHnJdA4"}]
        }
    )

    cancel_token: str = Field(
        description="Bearer token for GET and DELETE /reminders/{id}; shown only here."
    )


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok", "checks": {}}]})

    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "role": "leader",
                    "checks": {"scheduler": "running", "database": "ok"},
                }
            ]
        }
    )

    status: str
    role: Literal["leader", "follower"] = Field(
        description="`leader` runs the scheduler; a `follower` serves the API only."
    )
    checks: dict[str, str] = Field(default_factory=dict)


class ClusterLeader(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0193a4b2-7c1e-7d2f-9a41-5b6c7d8e9f01",
                    "term": 7,
                    "lease_expires": "2026-12-04T08:00:10.250000Z",
                }
            ]
        }
    )

    id: str = Field(description="The leading process's id (as in `processes`).")
    term: int = Field(description="Counts every change of leader; names the leader's writes.")
    lease_expires: datetime = Field(description="When the lease runs out unless renewed (UTC).")


class ClusterProcess(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0193a4b2-7c1e-7d2f-9a41-5b6c7d8e9f01",
                    "host": "app-1",
                    "pid": 4121,
                    "role": "leader",
                    "version": "0.1.0",
                    "started_at": "2026-12-04T07:12:00.004000Z",
                    "last_seen": "2026-12-04T08:00:09.300000Z",
                }
            ]
        }
    )

    id: str
    host: str
    pid: int
    role: Literal["leader", "follower"]
    version: str
    started_at: datetime
    last_seen: datetime


class ClusterStatus(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "leader": {
                        "id": "0193a4b2-7c1e-7d2f-9a41-5b6c7d8e9f01",
                        "term": 7,
                        "lease_expires": "2026-12-04T08:00:10.250000Z",
                    },
                    "processes": [
                        {
                            "id": "0193a4b2-7c1e-7d2f-9a41-5b6c7d8e9f01",
                            "host": "app-1",
                            "pid": 4121,
                            "role": "leader",
                            "version": "0.1.0",
                            "started_at": "2026-12-04T07:12:00.004000Z",
                            "last_seen": "2026-12-04T08:00:09.300000Z",
                        }
                    ],
                }
            ]
        }
    )

    leader: ClusterLeader | None = Field(description="None while no process holds the lease.")
    processes: list[ClusterProcess] = Field(description="Processes seen lately, oldest first.")


class ResignResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": "0193a4b2-7c1e-7d2f-9a41-5b6c7d8e9f01", "term": 7}]}
    )

    id: str = Field(description="The process that was asked to step down.")
    term: int = Field(description="The term it gives up.")


class ReloadResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "added": ["weekly-digest"],
                    "changed": ["daily-report"],
                    "removed": [],
                    "unchanged": ["token-cleanup"],
                }
            ]
        }
    )

    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: list[str]


class LastRun(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [LAST_RUN_EXAMPLE]})

    id: str
    outcome: str = Field(description="success, error, missed or running.")
    scheduled_for: datetime
    finished_at: datetime | None


class JobPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [JOB_EXAMPLE]})

    id: str
    kind: Literal["cron", "reminder", "task"]
    job: str = Field(description="The registered job function's name.")
    description: str
    trigger: str = Field(
        description="The schedule as text, `cron: <expression> (<zone>)` or `date: <due time>`, "
        "for people; programs read cron and timezone."
    )
    cron: str | None = Field(
        description="A cron job's expression as declared (5 or 6 fields, or a macro such as "
        "@daily); null for reminders and tasks."
    )
    timezone: str | None = Field(
        description="The IANA zone a cron job's expression is read in; null for reminders and "
        "tasks."
    )
    schedule_text: str = Field(description="The schedule in words.")
    next_run_time: datetime | None = Field(description="UTC; null while paused.")
    paused: bool
    source: Literal["config", "builtin", "api"] = Field(
        description="config: declared in config.yaml; builtin: maintenance that runs unless "
        "config.yaml declares the job itself; api: a reminder."
    )
    last_run: LastRun | None


class RunPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [RUN_EXAMPLE]})

    id: str
    job_id: str
    job: str
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str = Field(description="success, error, missed or running.")
    error: str | None
    result: str | None
    manual: bool = Field(description="Started by POST /jobs/{id}/run.")


class JobDetail(JobPublic):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{**JOB_EXAMPLE, "recent_runs": [RUN_EXAMPLE]}]}
    )

    recent_runs: list[RunPublic]


class JobsPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [JOB_EXAMPLE], "next_cursor": NEXT_CURSOR_EXAMPLE}]
        }
    )

    items: list[JobPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class RunsPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [RUN_EXAMPLE], "next_cursor": None}]}
    )

    items: list[RunPublic]
    next_cursor: str | None


class RunAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"job_id": "daily-report", "run_id": RUN_EXAMPLE["id"]}]}
    )

    job_id: str
    run_id: str = Field(description="Its record appears in GET /jobs/{id}/runs.")


class RemindersPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [REMINDER_EXAMPLE], "next_cursor": None}]}
    )

    items: list[ReminderPublic]
    next_cursor: str | None


class RetryFilter(BaseModel):
    """Which failed or missed reminders to schedule again."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"status": "failed", "error_contains": "SMTPConnect"}]},
    )

    status: Literal["failed", "missed"] = "failed"
    email: Text | None = Field(None, max_length=320)
    error_contains: Text | None = Field(None, max_length=200)
    finished_after: Moment | None = None
    finished_before: Moment | None = None
    limit: int = Field(1000, ge=1, le=10_000)


class RetryResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"requeued": ["0193a4b2-7c1e-7d2f-9a41-5b6c7d8e9f01"]}]}
    )

    requeued: list[str] = Field(description="Ids of the reminders scheduled again.")


class QuarantinedJobPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [QUARANTINED_EXAMPLE]})

    id: str
    error: str = Field(description="Why it could not be restored.")
    quarantined_at: datetime


class TaskCreate(BaseModel):
    """A task of one of your @job functions: at most one of delay_seconds or run_at (neither:
    as soon as possible)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "job": "send_welcome_email",
                    "args": {"email": "ada@example.com", "name": "Ada"},
                    "run_at": "2030-01-15T09:00:00+01:00",
                }
            ]
        },
    )

    job: str = Field(min_length=1, max_length=100, description="A registered job's name.")
    args: dict[str, Any] = Field(
        default_factory=dict, description="The job function's arguments, by parameter name."
    )
    delay_seconds: float | None = Field(None, gt=0, description="Seconds from now.")
    run_at: Moment | None = Field(None, description="ISO 8601 with an offset.")


class TaskPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [TASK_EXAMPLE]})

    id: str
    job: str
    args: dict[str, Any]
    status: str = Field(description="scheduled, running, succeeded, failed, cancelled or missed.")
    run_at: datetime = Field(description="When the task is due, in UTC.")
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    next_attempt_at: datetime | None = Field(
        description="When a failed attempt will be tried again, while it is scheduled."
    )


class TasksPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [TASK_EXAMPLE], "next_cursor": NEXT_CURSOR_EXAMPLE}]
        }
    )

    items: list[TaskPublic]
    next_cursor: str | None


class TaskRetryFilter(BaseModel):
    """Which failed or missed tasks to run again."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"job": "send_welcome_email", "status": "failed"}]},
    )

    job: Text | None = Field(None, max_length=100, description="Every job's tasks when absent.")
    status: Literal["failed", "missed"] = "failed"
    limit: int = Field(1000, ge=1, le=10_000)


AUDIT_ENTRY_EXAMPLE: dict[str, Any] = {
    "id": "0193a5f0-6c1e-7a4b-9d2e-1f0c3b5a7d91",
    "at": "2026-12-05T08:00:03.120000Z",
    "source": "dashboard",
    "actor": "dashboard login from 10.0.0.7",
    "action": "pause_job",
    "target": "daily-report",
    "outcome": "ok",
    "detail": None,
    "request_id": "0193a5f0-6c1d-72aa-8c4e-5b0e3c1d9f7a",
}


class AuditEntryPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [AUDIT_ENTRY_EXAMPLE]})

    id: str
    at: datetime
    source: Literal["api", "cli", "dashboard"] = Field(description="Where the action came from.")
    actor: str = Field(description="The credential used and the client's address.")
    action: str = Field(description="e.g. pause_job, retry_task, reload_configuration.")
    target: str | None = Field(description="The job, task or reminder acted on, if any.")
    outcome: Literal["ok", "error"]
    detail: str | None = Field(description="What came of it: a summary, or the error's message.")
    request_id: str | None


class AuditPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [AUDIT_ENTRY_EXAMPLE], "next_cursor": NEXT_CURSOR_EXAMPLE}]
        }
    )

    items: list[AuditEntryPublic]
    next_cursor: str | None
