"""Run records: one row per execution or missed execution of any job."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from scheduler_app.models import JobRun, RunOutcome

MAX_TEXT_LENGTH = 4000
INTERRUPTED = "interrupted: the process stopped before the run finished"


def start_run(
    session: Session,
    job_id: str,
    job: str,
    scheduled_for: datetime,
    now: datetime,
    *,
    manual: bool = False,
) -> str:
    """Record a run as started and return its id (the caller commits)."""
    run = JobRun(
        id=str(uuid.uuid4()),
        job_id=job_id,
        job=job,
        scheduled_for=scheduled_for,
        started_at=now,
        outcome=RunOutcome.RUNNING,
        manual=manual,
    )
    session.add(run)
    return run.id


def finish_run(
    session: Session,
    run_id: str,
    now: datetime,
    outcome: RunOutcome,
    *,
    error: str | None = None,
    result: str | None = None,
) -> None:
    session.execute(
        update(JobRun)
        .where(JobRun.id == run_id)
        .values(
            outcome=outcome,
            finished_at=now,
            error=_clip(error),
            result=_clip(result),
        )
    )


def record_missed(
    session: Session,
    job_id: str,
    job: str,
    scheduled_times: Iterable[datetime],
    now: datetime,
    reason: str,
) -> int:
    """Record each scheduled time as a missed run; return how many (the caller commits)."""
    runs = [
        JobRun(
            id=str(uuid.uuid4()),
            job_id=job_id,
            job=job,
            scheduled_for=scheduled_for,
            finished_at=now,
            outcome=RunOutcome.MISSED,
            error=_clip(reason),
            manual=False,
        )
        for scheduled_for in scheduled_times
    ]
    session.add_all(runs)
    return len(runs)


def close_interrupted_runs(session: Session, now: datetime) -> int:
    """Mark runs left 'running' by a process that died as errors; return how many."""
    result = session.execute(
        update(JobRun)
        .where(JobRun.outcome == RunOutcome.RUNNING)
        .values(outcome=RunOutcome.ERROR, finished_at=now, error=INTERRUPTED)
    )
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def _clip(text: str | None) -> str | None:
    return None if text is None else text[:MAX_TEXT_LENGTH]
