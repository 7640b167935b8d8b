"""ORM tables owned by the service (the APScheduler job table is the job store's own)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from scheduler_app.clock import as_utc


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which stores no offset) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    pass


class TaskStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MISSED = "missed"


# A task waits for an attempt, or is in one: what "pending" means for limits and recovery.
OPEN_STATUSES = (TaskStatus.SCHEDULED, TaskStatus.RUNNING)


class Task(Base):
    """One run of a job function at a time, with its arguments: the source of truth.

    The APScheduler job that fires it carries only the job's name and this row's id.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(
            "status IN ('scheduled', 'running', 'succeeded', 'failed', 'cancelled', 'missed')",
            name="ck_tasks_status",
        ),
        Index("ix_tasks_status_run_at", "status", "run_at"),
        Index("ix_tasks_finished_at", "finished_at"),
        Index("ix_tasks_created_at", "created_at"),
        # Open tasks by recipient, for reminders.max_pending_per_address.
        Index("ix_tasks_recipient_status", func.lower(text("recipient")), "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # The registered name of the job function that runs it.
    job: Mapped[str] = mapped_column(String(100))
    # The function's arguments as a JSON object (never pickled): read without the code.
    args: Mapped[str] = mapped_column(Text)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.SCHEDULED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when an operator schedules a failed or missed task again: the late window then counts
    # from here instead of from run_at.
    requeued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Whom the task's message goes to (a reminder's address), for per-recipient limits.
    recipient: Mapped[str | None] = mapped_column(String(320))
    # SHA-256 of the task's own bearer token (a reminder's cancel token): a leaked database
    # does not let anyone cancel tasks.
    cancel_token_hash: Mapped[str | None] = mapped_column(String(64))
    idempotency_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))


class RunOutcome(enum.StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    MISSED = "missed"


class CronJob(Base):
    """A recurring job as declared in config.yaml; the APScheduler job of the same id runs it."""

    __tablename__ = "cron_jobs"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    job: Mapped[str] = mapped_column(String(100))
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    args: Mapped[list[Any]] = mapped_column(JSON)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean)
    misfire_grace_s: Mapped[float] = mapped_column(Float)
    coalesce: Mapped[bool] = mapped_column(Boolean)
    description: Mapped[str] = mapped_column(String(500))
    # Hash of everything above: a changed hash means the file changed this job.
    fingerprint: Mapped[str] = mapped_column(String(64))
    # Paused by an operator; kept across restarts and reloads, independent of `enabled`.
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="config")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobRun(Base):
    """One execution (or missed execution) of a job: a cron tick or a task's attempt."""

    __tablename__ = "job_runs"
    __table_args__ = (
        CheckConstraint(
            "outcome IN ('running', 'success', 'error', 'missed')", name="ck_job_runs_outcome"
        ),
        Index("ix_job_runs_job_id_started", "job_id", "scheduled_for"),
        Index("ix_job_runs_outcome_finished", "outcome", "finished_at"),
        Index("ix_job_runs_finished", "finished_at"),
        # A recurring job's tick runs once, whichever process fires it (see engine.runs).
        Index("ux_job_runs_job_id_tick", "job_id", "tick", unique=True),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(200))
    job: Mapped[str] = mapped_column(String(100))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    # The fire time of the recurring job's tick this run claimed; None for a task's attempt, a
    # manual run, a missed tick and every run recorded before ticks were claimed.
    tick: Mapped[datetime | None] = mapped_column(UTCDateTime)


class QuarantinedJob(Base):
    """A stored job that could not be restored, set aside for an operator to repair."""

    __tablename__ = "quarantined_jobs"

    id: Mapped[str] = mapped_column(String(191), primary_key=True)
    next_run_time: Mapped[float | None] = mapped_column(Float)
    job_state: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str] = mapped_column(Text)
    quarantined_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ServiceSecret(Base):
    """A secret the service generated for itself, shared by every process on the database."""

    __tablename__ = "service_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class Leadership(Base):
    """The scheduler's lease: who leads, under which term, until when (the database's clock).

    One row, made by the migration. Times are seconds since the epoch on the database's clock,
    so that no host's clock is ever compared with another's.
    """

    __tablename__ = "leadership"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The process (ClusterProcess.id) that holds the lease; None when nobody does.
    holder: Mapped[str | None] = mapped_column(String(64))
    # Counts every acquisition: work started under one term is fenced off from every other.
    term: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)
    acquired_at: Mapped[float | None] = mapped_column(Float)
    # Set to the term whose holder an operator asked to step down (from any process).
    resign_term: Mapped[int | None] = mapped_column(BigInteger)


class ClusterProcess(Base):
    """A running `scheduler-app` process on the database, as it last reported itself."""

    __tablename__ = "cluster_processes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    # The machine's boot and pid namespace: a process on the same one can tell that this one's
    # pid is dead (and take its lease over at once).
    node: Mapped[str] = mapped_column(String(128))
    # Seconds since the epoch, on the database's clock.
    started_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)


class AuditEntry(Base):
    """An operator's action (through the API, the command line or the dashboard) and its result.

    Kept in the database so that every process's entries are in one list, newest first by id
    (ids grow with time).
    """

    __tablename__ = "audit_entries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Where the action came from: "api", "cli" or "dashboard".
    source: Mapped[str] = mapped_column(String(16))
    # Who, as far as the service can tell: the credential used and the client's address.
    actor: Mapped[str] = mapped_column(String(200))
    # What: e.g. "pause_job", "retry_task", "reload", "resign".
    action: Mapped[str] = mapped_column(String(64))
    # The job, task or other object acted on; None for actions on the service as a whole.
    target: Mapped[str | None] = mapped_column(String(300))
    # "ok" or "error"; detail says what came of it (the error's message, a summary).
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(String(1000))
    request_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_entries_action_id", "action", "id"),)


class DashboardSession(Base):
    """A dashboard login: the cookie holds a random value, the row only its hash."""

    __tablename__ = "dashboard_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Sent with every form and checked on every POST (the double of the cookie a page from
    # another site cannot read).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # The client's address at login, for the audit entries of this session's actions.
    client: Mapped[str] = mapped_column(String(200))
