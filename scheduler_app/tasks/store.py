"""Task rows: store them with their jobs, look them up, move them between statuses.

The functions take the caller's session and leave committing to the service that called them,
so that one request's steps share one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from scheduler_app.clock import as_utc
from scheduler_app.db.bulk import insert_rows
from scheduler_app.db.models import OPEN_STATUSES, Task, TaskStatus
from scheduler_app.engine.scheduler import JOBS, task_job_row

MAX_ERROR_LENGTH = 2000
TASKS = cast(Table, Task.__table__)
COLUMNS = tuple(TASKS.columns.keys())
EMPTY_ROW: dict[str, Any] = dict.fromkeys(COLUMNS)
_JOB_COLUMNS = ("id", "next_run_time", "job_state")


def new_row(
    task_id: str, job: str, args: dict[str, Any], run_at: datetime, now: datetime, **extra: Any
) -> dict[str, Any]:
    """A scheduled task's row (column name to value); extra sets other columns."""
    return {
        **EMPTY_ROW,
        "id": task_id,
        "job": job,
        "args": json.dumps(args, separators=(",", ":")),
        "run_at": run_at,
        "status": TaskStatus.SCHEDULED,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
        **extra,
    }


def insert_with_jobs(
    session: Session, rows: Sequence[dict[str, Any]], job_id_prefix: str, *, unless_taken: bool
) -> bool:
    """Insert task rows and, in the same transaction, the job that fires each: a task is never
    stored without its job, nor the reverse.

    With unless_taken, a single row whose Idempotency-Key is stored already is left out (its
    unique index arbitrates between processes; skipping keeps the transaction going instead of
    failing it); whether the rows were inserted.
    """
    if not rows:
        return True
    values = [tuple(row[column] for column in COLUMNS) for row in rows]
    taken = "idempotency_key_hash" if unless_taken else None
    if not insert_rows(session, TASKS, COLUMNS, values, unless_taken=taken):
        return False
    jobs = [task_job_row(r["job"], job_id_prefix, r["id"], r["run_at"]) for r in rows]
    insert_rows(session, JOBS, _JOB_COLUMNS, [tuple(job[c] for c in _JOB_COLUMNS) for job in jobs])
    return True


def args_of(task: Task) -> dict[str, Any]:
    args: dict[str, Any] = json.loads(task.args)
    return args


def finish(
    session: Session, task_id: str, status: TaskStatus, now: datetime, error: str | None = None
) -> bool:
    """Move a scheduled or running task to a final status; False if it was neither."""
    values: dict[str, object] = {"status": status, "finished_at": now, "updated_at": now}
    if error is not None:
        values["last_error"] = error[:MAX_ERROR_LENGTH]
    result = session.execute(
        update(Task).where(Task.id == task_id, Task.status.in_(OPEN_STATUSES)).values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def requeue(session: Session, task: Task, now: datetime) -> bool:
    """Run a task again now; False if it is neither finished unsuccessfully nor waiting.

    A failed or missed task is scheduled again with a fresh set of attempts. A task waiting for
    its automatic retry (scheduled, with attempts behind it) keeps its attempts and makes its
    next one now instead of at the retry time. Either way the late window counts from now.
    """
    finished = session.execute(
        update(Task)
        .where(Task.id == task.id, Task.status.in_((TaskStatus.FAILED, TaskStatus.MISSED)))
        .values(
            status=TaskStatus.SCHEDULED,
            attempts=0,
            requeued_at=now,
            next_attempt_at=now,
            finished_at=None,
            updated_at=now,
        )
    )
    if finished.rowcount:  # type: ignore[attr-defined]
        return True
    waiting = session.execute(
        update(Task)
        .where(Task.id == task.id, Task.status == TaskStatus.SCHEDULED, Task.attempts > 0)
        .values(requeued_at=now, next_attempt_at=now, updated_at=now)
    )
    return bool(waiting.rowcount)  # type: ignore[attr-defined]


def due_by(session: Session, horizon: datetime) -> list[tuple[str, str, datetime]]:
    """Every scheduled task that falls due by `horizon`: its id, its job, and the time of its
    next attempt (its due time, or the retry after a failed attempt)."""
    rows = session.execute(
        select(Task.id, Task.job, Task.run_at, Task.next_attempt_at).where(
            Task.status == TaskStatus.SCHEDULED, Task.run_at <= horizon
        )
    )
    return [(row.id, row.job, as_utc(row.next_attempt_at or row.run_at)) for row in rows]


def interrupted(session: Session, now: datetime, running_here: Collection[str] = ()) -> int:
    """Put tasks left running by a process that stopped mid-attempt back to scheduled; how many.

    Their attempt stays counted: the late window then reports that it may have run. The tasks
    in running_here are this process's own attempts still under way (a leader elected again
    while the attempts of its previous term record their outcome): they are left alone.
    """
    statement = update(Task).where(Task.status == TaskStatus.RUNNING)
    if running_here:
        statement = statement.where(Task.id.not_in(list(running_here)))
    result = session.execute(statement.values(status=TaskStatus.SCHEDULED, updated_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]
