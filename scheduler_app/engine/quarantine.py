"""Stored jobs that could not be restored: listed for operators, put back once repaired."""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from scheduler_app.db.models import QuarantinedJob
from scheduler_app.engine.scheduler import JOBS
from scheduler_app.errors import Conflict, NotFound


def list_quarantined(session: Session) -> list[QuarantinedJob]:
    return list(session.scalars(select(QuarantinedJob).order_by(QuarantinedJob.quarantined_at)))


def restore(session: Session, job_id: str) -> None:
    """Put a set-aside job back in the job store as it was; if it still cannot be restored,
    the scheduler sets it aside again on its next pass."""
    kept = session.get(QuarantinedJob, job_id)
    if kept is None:
        raise NotFound(f"no quarantined job with id '{job_id}'")
    if session.scalar(select(JOBS.c.id).where(JOBS.c.id == job_id)) is not None:
        raise Conflict(f"a job with id '{job_id}' is scheduled again already; delete this copy")
    session.execute(
        insert(JOBS).values(id=kept.id, next_run_time=kept.next_run_time, job_state=kept.job_state)
    )
    session.execute(delete(QuarantinedJob).where(QuarantinedJob.id == job_id))
    session.commit()
