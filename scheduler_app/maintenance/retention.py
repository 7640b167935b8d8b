"""Retention: expire stored secrets and delete old rows, one bounded batch at a time.

The rule, enforced by the token_cleanup job (each limit from `retention.*`):

- A reminder's cancel token stops being valid `cancel_token_days` after the reminder finished
  (finished_at: it was sent, failed, was cancelled or was missed). Its hash is cleared, after
  which only the admin token grants access to the reminder. The token of a scheduled reminder
  never expires.
- An Idempotency-Key stops being replayable `idempotency_key_hours` after the reminder was
  created, whatever its status. The key hash and the request fingerprint are cleared, so a
  request repeating the key then creates a new reminder.
- A finished reminder is deleted `reminder_days` after it finished, a finished task of your own
  jobs `task_days` after; a scheduled or running one never is.
- A run record is deleted `run_days` after it finished (a missed run that never finished: after
  the time it was scheduled for); a run still 'running' never is.
- An audit entry is deleted `audit_days` after the action; a dashboard login once it expired.

"More than N ago" is strict: a row whose time is exactly at the cutoff is kept.

Each step selects up to `batch_size` primary keys, then updates or deletes those keys (the
condition checked again, so a row changed in between is left alone) and commits. Short
transactions keep locks brief while a large backlog is worked off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Delete, Update, delete, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from scheduler_app.clock import as_utc
from scheduler_app.db.models import (
    OPEN_STATUSES,
    AuditEntry,
    DashboardSession,
    JobRun,
    RunOutcome,
    Task,
)
from scheduler_app.reminders.job import REMINDER_JOB
from scheduler_app.settings import RetentionSettings

# Bound parameters per statement: SQLite allows 32766, PostgreSQL 65535, batch_size up to 100000.
KEYS_PER_STATEMENT = 500

# One batch: (session, cutoff, batch_size) -> (keys selected, rows changed).
BatchStep = Callable[[Session, datetime, int], tuple[int, int]]


@dataclass(frozen=True)
class Cutoffs:
    """Rows whose time is before a cutoff are past retention."""

    cancel_token: datetime
    idempotency_key: datetime
    reminder: datetime
    task: datetime
    run: datetime
    audit: datetime
    login: datetime


def retention_cutoffs(now: datetime, retention: RetentionSettings) -> Cutoffs:
    """Return the cutoffs that the retention settings give at now (UTC)."""
    now = as_utc(now)
    return Cutoffs(
        cancel_token=now - timedelta(days=retention.cancel_token_days),
        idempotency_key=now - timedelta(hours=retention.idempotency_key_hours),
        reminder=now - timedelta(days=retention.reminder_days),
        task=now - timedelta(days=retention.task_days),
        run=now - timedelta(days=retention.run_days),
        audit=now - timedelta(days=retention.audit_days),
        login=now,
    )


def _chunks(keys: Sequence[str]) -> list[Sequence[str]]:
    return [keys[i : i + KEYS_PER_STATEMENT] for i in range(0, len(keys), KEYS_PER_STATEMENT)]


def _batch(
    session: Session,
    key: InstrumentedAttribute[str],
    condition: ColumnElement[bool],
    limit: int,
    change: Callable[[Sequence[str]], Update | Delete],
) -> tuple[int, int]:
    keys = list(session.scalars(select(key).where(condition).limit(limit)))
    changed = 0
    for chunk in _chunks(keys):
        # DML executes to a CursorResult, which has the rowcount that Result lacks.
        result = cast(CursorResult[Any], session.execute(change(chunk)))
        changed += result.rowcount
    session.commit()
    return len(keys), changed


def expire_cancel_tokens(session: Session, cutoff: datetime, limit: int) -> tuple[int, int]:
    """Clear the cancel token hash of up to limit reminders finished before cutoff."""
    condition = Task.cancel_token_hash.is_not(None) & (Task.finished_at < cutoff)
    return _batch(
        session,
        Task.id,
        condition,
        limit,
        lambda keys: (
            update(Task).where(Task.id.in_(keys), condition).values(cancel_token_hash=None)
        ),
    )


def expire_idempotency_keys(session: Session, cutoff: datetime, limit: int) -> tuple[int, int]:
    """Clear the Idempotency-Key hash and fingerprint of up to limit reminders created before
    cutoff."""
    condition = (Task.idempotency_key_hash.is_not(None) | Task.request_fingerprint.is_not(None)) & (
        Task.created_at < cutoff
    )
    return _batch(
        session,
        Task.id,
        condition,
        limit,
        lambda keys: (
            update(Task)
            .where(Task.id.in_(keys), condition)
            .values(idempotency_key_hash=None, request_fingerprint=None)
        ),
    )


def delete_finished_reminders(session: Session, cutoff: datetime, limit: int) -> tuple[int, int]:
    """Delete up to limit reminders finished before cutoff, never a scheduled or running one."""
    return _delete_finished(session, Task.job == REMINDER_JOB, cutoff, limit)


def delete_finished_tasks(session: Session, cutoff: datetime, limit: int) -> tuple[int, int]:
    """Delete up to limit tasks of your own jobs finished before cutoff, never an open one."""
    return _delete_finished(session, Task.job != REMINDER_JOB, cutoff, limit)


def _delete_finished(
    session: Session, of_jobs: ColumnElement[bool], cutoff: datetime, limit: int
) -> tuple[int, int]:
    condition = of_jobs & Task.status.not_in(OPEN_STATUSES) & (Task.finished_at < cutoff)
    return _batch(
        session,
        Task.id,
        condition,
        limit,
        lambda keys: delete(Task).where(Task.id.in_(keys), condition),
    )


def delete_old_runs(session: Session, cutoff: datetime, limit: int) -> tuple[int, int]:
    """Delete up to limit run records that ended before cutoff, never a running one."""
    # Spelled as an OR rather than COALESCE so that the finished_at index can serve the first arm.
    ended_before = (JobRun.finished_at < cutoff) | (
        JobRun.finished_at.is_(None) & (JobRun.scheduled_for < cutoff)
    )
    condition = (JobRun.outcome != RunOutcome.RUNNING) & ended_before
    return _batch(
        session,
        JobRun.id,
        condition,
        limit,
        lambda keys: delete(JobRun).where(JobRun.id.in_(keys), condition),
    )


def delete_old_audit_entries(session: Session, cutoff: datetime, limit: int) -> tuple[int, int]:
    """Delete up to limit audit entries of actions before cutoff."""
    condition = AuditEntry.at < cutoff
    return _batch(
        session,
        AuditEntry.id,
        condition,
        limit,
        lambda keys: delete(AuditEntry).where(AuditEntry.id.in_(keys), condition),
    )


def delete_expired_logins(session: Session, cutoff: datetime, limit: int) -> tuple[int, int]:
    """Delete up to limit dashboard logins that expired before cutoff."""
    condition = DashboardSession.expires_at < cutoff
    return _batch(
        session,
        DashboardSession.token_hash,
        condition,
        limit,
        lambda keys: delete(DashboardSession).where(
            DashboardSession.token_hash.in_(keys), condition
        ),
    )
