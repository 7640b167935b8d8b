"""Stored jobs that could not be restored: listed for operators, put back once repaired."""

from __future__ import annotations

from dataclasses import dataclass

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from scheduler_app.api.schemas import QuarantinedJobPublic
from scheduler_app.db.engine import SessionFactory
from scheduler_app.db.models import QuarantinedJob
from scheduler_app.engine.scheduler import JOBS
from scheduler_app.errors import Conflict, NotFound


@dataclass(frozen=True)
class QuarantineService:
    """The operator's actions on set-aside jobs, each in a session of its own."""

    sessions: SessionFactory
    scheduler: BaseScheduler

    def list_jobs(self) -> list[QuarantinedJobPublic]:
        with self.sessions() as session:
            return [
                QuarantinedJobPublic.model_validate(job, from_attributes=True)
                for job in list_quarantined(session)
            ]

    def restore_job(self, job_id: str) -> None:
        """Put a set-aside job back and have the scheduler look at it now."""
        with self.sessions() as session:
            restore(session, job_id)
        # Its next run time may be past: without a wake-up it would wait for the next due pass.
        self.scheduler.wakeup()


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
