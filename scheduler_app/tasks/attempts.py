"""Attempt bookkeeping: start a due task's attempt, and record how it ended.

Each function is one database step of an attempt; the batch writer commits (steps of
concurrent attempts share a transaction, see db/batch_writer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    String,
    Update,
    bindparam,
    column,
    func,
    or_,
    update,
)
from sqlalchemy.orm import Session

from scheduler_app.cluster import lease
from scheduler_app.db.batch_writer import Grouped
from scheduler_app.db.bulk import update_rows
from scheduler_app.db.models import Task, TaskStatus
from scheduler_app.tasks import policy
from scheduler_app.tasks.store import MAX_ERROR_LENGTH, TASKS, finish

# The cutoff of a task without a late window: earlier than any due time.
_NO_CUTOFF = datetime(1, 1, 2, tzinfo=UTC)


@dataclass(frozen=True)
class TaskAttempt:
    """A task about to run: what its function needs, and its attempt number (1-based)."""

    id: str
    job: str
    args: dict[str, Any]
    run_at: datetime
    attempts: int


def _attempt(row: Any) -> TaskAttempt:
    return TaskAttempt(row.id, row.job, json.loads(row.args), row.run_at, row.attempts)


@dataclass(frozen=True)
class AttemptStart:
    task_id: str
    now: datetime
    late_window: timedelta | None
    # The leadership term the attempt starts under; when `fenced`, it starts only while the
    # lease is still held under it (None: this process does not lead, nothing starts).
    term: int | None = None
    fenced: bool = False


def start_one(session: Session, start: AttemptStart) -> tuple[str, TaskAttempt | None]:
    """Decide what a due task needs: ("run", attempt) with the task running and the attempt
    counted, ("missed", None) or ("failed", None) when it is past its late window (recorded
    with the reason), or ("skipped", None) when it is no longer scheduled."""
    task = session.get(Task, start.task_id)
    if task is None or task.status != TaskStatus.SCHEDULED:
        return "skipped", None
    state = policy.TaskState(
        task.run_at, task.requeued_at, task.attempts, task.last_error, task.last_attempt_at
    )
    too_late = policy.lateness(state, start.now, start.late_window)
    if too_late is not None:
        finish(session, task.id, TaskStatus(too_late.status), start.now, too_late.reason)
        return too_late.status, None
    counted = session.execute(
        _COUNT_ONE_ATTEMPT, {"task_id": start.task_id, "now": start.now}
    ).one_or_none()
    if counted is None:
        return "skipped", None
    return "run", _attempt(counted)


def start_attempts(
    session: Session, starts: list[AttemptStart]
) -> list[tuple[str, TaskAttempt | None]]:
    """start_one for many tasks: those still scheduled and within their late window start by
    one UPDATE per late window; the others go one by one."""
    now = max(start.now for start in starts)
    dialect = session.connection().dialect.name
    held = {
        term
        for term in {start.term for start in starts if start.fenced}
        if term is not None and lease.still_held(session.connection(), term)
    }
    by_id: dict[str, TaskAttempt] = {}
    for window, term in {(start.late_window, _fence_of(start)) for start in starts}:
        task_ids = list(
            dict.fromkeys(
                s.task_id for s in starts if s.late_window == window and _fence_of(s) == term
            )
        )
        if term is not _UNFENCED and term not in held:
            continue
        statement, listed = _count_listed(dialect, task_ids, fenced=term is not _UNFENCED)
        cutoff = _NO_CUTOFF if window is None else now - window
        parameters = {"now": now, "cutoff": cutoff, "lease_term": term, **listed}
        counted = session.execute(statement, parameters).all()
        by_id.update((row.id, _attempt(row)) for row in counted)
    return [
        ("run", by_id[start.task_id])
        if start.task_id in by_id
        else ("fenced", None)
        if start.fenced and start.term not in held
        else start_one(session, start)
        for start in starts
    ]


# The fence of a start: its term, or this for an attempt that needs no lease.
_UNFENCED = -1


def _fence_of(start: AttemptStart) -> int | None:
    return start.term if start.fenced else _UNFENCED


# Start an attempt of the tasks that the caller selects (those still scheduled): running, one
# more attempt counted; returns a TaskAttempt's fields.
# Core rather than the ORM: in a burst this runs for thousands of rows, and loading them as ORM
# objects cost more than the database did. Built once: building it per batch cost more than
# running it.
_COUNT_ATTEMPT = (
    update(TASKS)
    .values(
        status=TaskStatus.RUNNING,
        attempts=TASKS.c.attempts + 1,
        last_attempt_at=bindparam("now"),
        updated_at=bindparam("now"),
        next_attempt_at=None,
    )
    .returning(TASKS.c.id, TASKS.c.job, TASKS.c.args, TASKS.c.run_at, TASKS.c.attempts)
)
_COUNT_ONE_ATTEMPT = _COUNT_ATTEMPT.where(
    TASKS.c.id == bindparam("task_id"), TASKS.c.status == TaskStatus.SCHEDULED
)


def _count_listed(
    dialect: str, task_ids: list[str], *, fenced: bool
) -> tuple[Update, dict[str, Any]]:
    """The UPDATE that starts an attempt of each listed task that is still scheduled and
    within the late window, and the parameters that list them.

    The tasks are joined as rows of (id, 'scheduled'), the status included, so that no plan
    can start from the status index: as `id IN (...) AND status = 'scheduled'`, SQLite (always)
    and PostgreSQL (before it has statistics, as right after a burst was posted) read every
    scheduled task for each batch: 27 ms for 100 of 5,000 on PostgreSQL. The rows go as one
    parameter, so that the statement is the same for every batch and is compiled once: on
    PostgreSQL two arrays (see bulk), on SQLite a JSON object of id to status, whose entries
    json_each() gives as (key, value). A text with one placeholder per task was compiled
    again for every new batch size: about a millisecond each, hundreds of times in a burst.
    """
    if dialect == "postgresql":
        statuses = [TaskStatus.SCHEDULED.value] * len(task_ids)
        statement = _COUNT_UNNESTED_FENCED if fenced else _COUNT_UNNESTED
        return statement, {"ids": task_ids, "statuses": statuses}
    listed = json.dumps(dict.fromkeys(task_ids, TaskStatus.SCHEDULED.value))
    return (_COUNT_JSON_EACH_FENCED if fenced else _COUNT_JSON_EACH), {"listed": listed}


def _count_in_window(task_id: ColumnElement[str], status: ColumnElement[str]) -> Update:
    return _COUNT_ATTEMPT.where(
        TASKS.c.id == task_id,
        TASKS.c.status == status,
        or_(TASKS.c.run_at >= bindparam("cutoff"), TASKS.c.requeued_at >= bindparam("cutoff")),
    )


_UNNESTED = (
    func.unnest(bindparam("ids", type_=ARRAY(String)), bindparam("statuses", type_=ARRAY(String)))
    .table_valued(column("id", String), column("status", String))
    .render_derived()
)
_COUNT_UNNESTED = _count_in_window(_UNNESTED.c.id, _UNNESTED.c.status)
_JSON_EACH = func.json_each(bindparam("listed", type_=String)).table_valued(
    column("key", String), column("value", String)
)
_COUNT_JSON_EACH = _count_in_window(_JSON_EACH.c.key, _JSON_EACH.c.value)
# The same, only while the lease is held under the term given as `lease_term`: the write that
# starts an attempt names the term, so a process that lost the lease starts nothing, even before
# it knows (see cluster.fence).
_COUNT_UNNESTED_FENCED = _COUNT_UNNESTED.where(lease.holds("postgresql"))
_COUNT_JSON_EACH_FENCED = _COUNT_JSON_EACH.where(lease.holds("sqlite"))


def mark_all_succeeded(session: Session, done: list[tuple[str, datetime]]) -> list[None]:
    """Mark many tasks succeeded, in one statement. Unconditional: once a task's work is done
    (a message is out), "succeeded" is the truth even if a cancel raced it."""
    rows = [(task_id, now, now) for task_id, now in done]
    update_rows(
        session,
        TASKS,
        "id",
        ("finished_at", "updated_at"),
        rows,
        # An earlier attempt's error no longer describes a task that succeeded.
        constants={"status": TaskStatus.SUCCEEDED, "next_attempt_at": None, "last_error": None},
    )
    return [None] * len(done)


START_ATTEMPTS = Grouped("start attempts", start_attempts, patient=True)
MARK_SUCCEEDED = Grouped("mark succeeded", mark_all_succeeded, patient=True)
# The same step for reminders, by the name an operator reads in the log: "mark sent".
MARK_SENT = Grouped("mark sent", mark_all_succeeded, patient=True)


def record_retry(
    session: Session, task_id: str, attempt: int, now: datetime, retry_at: datetime, error: str
) -> bool:
    """Schedule the running task for another attempt at retry_at, with this attempt's error;
    whether it was (see _still_running)."""
    result = session.execute(
        update(TASKS)
        .where(*_still_running(task_id, attempt))
        .values(
            status=TaskStatus.SCHEDULED,
            last_error=error[:MAX_ERROR_LENGTH],
            next_attempt_at=retry_at,
            updated_at=now,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_failed(session: Session, task_id: str, attempt: int, now: datetime, error: str) -> bool:
    """Record the task failed after this attempt; whether it was (see _still_running)."""
    result = session.execute(
        update(TASKS)
        .where(*_still_running(task_id, attempt))
        .values(
            status=TaskStatus.FAILED,
            last_error=error[:MAX_ERROR_LENGTH],
            finished_at=now,
            updated_at=now,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _still_running(task_id: str, attempt: int) -> tuple[ColumnElement[bool], ...]:
    """The task is still in this attempt: running, and no attempt counted since.

    A failed attempt's outcome is written only then. Otherwise the task has moved on: it was
    cancelled, or this process lost the lease mid-attempt (a long pause) and the new leader
    put the task back and ran it again, maybe to success. A late failure of the old attempt
    must then neither undo that nor schedule another attempt.
    """
    return (
        TASKS.c.id == task_id,
        TASKS.c.status == TaskStatus.RUNNING,
        TASKS.c.attempts == attempt,
    )
