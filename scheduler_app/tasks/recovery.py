"""Recovery: tasks that a crash interrupted, or that lost their job, are scheduled again.

APScheduler deletes a date job from its store when it submits it, so a process that dies
mid-attempt leaves a task 'running' (or 'scheduled', if it died before the attempt started) that
has no job. At start, running tasks go back to 'scheduled'; then, and periodically, every
scheduled task due soon that has no job gets one again. The attempt re-checks the row, so a task
that was in fact finished does not run twice.

The periodic pass looks only at tasks due before a horizon (two passes ahead): its cost follows
the tasks falling due, not the million that may be pending, and a task whose job was lost is
still recovered before its time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from scheduler_app.db.engine import SessionFactory
from scheduler_app.engine.scheduler import task_job_id
from scheduler_app.tasks import store

logger = logging.getLogger(__name__)


def reset_interrupted(session: Session, now: datetime, running_here: Iterable[str] = ()) -> int:
    """Put the tasks that a stopped process (or a previous leader) left running back to
    scheduled (when this process starts leading, before any job runs), except the tasks whose
    attempts run here still; how many."""
    count = store.interrupted(session, now, set(running_here))
    session.commit()
    if count:
        logger.warning("%d task(s) were interrupted mid-attempt; they are scheduled again", count)
    return count


def orphaned_tasks(
    scheduled: Iterable[tuple[str, str, datetime]],
    job_ids: Callable[[str, str], str],
    stored_job_ids: set[str],
    running_job_ids: set[str],
) -> list[tuple[str, str, datetime]]:
    """Scheduled tasks that have neither a stored nor a running job."""
    return [
        (task_id, job, due)
        for task_id, job, due in scheduled
        if job_ids(job, task_id) not in stored_job_ids
        and job_ids(job, task_id) not in running_job_ids
    ]


async def recover_tasks(
    sessions: SessionFactory,
    job_id_prefix: Callable[[str], str],
    read_stored_job_ids: Callable[[list[str]], set[str]],
    running_job_ids: Callable[[], set[str]],
    schedule: Callable[[str, str, datetime], None],
    horizon: datetime,
) -> int:
    """Schedule every orphaned task due by horizon again; return how many were.

    Args:
        sessions: sessions of the service's database.
        job_id_prefix: the job id prefix of a job's tasks (RegisteredJob.job_id_prefix).
        read_stored_job_ids: which of the given job ids the job store holds.
        running_job_ids: the ids of the jobs running in this process.
        schedule: gives a task (job, task id, due time) its job.
        horizon: tasks due after this are left to a later pass.
    """

    def job_ids(job: str, task_id: str) -> str:
        return task_job_id(job_id_prefix(job), task_id)

    def load() -> tuple[list[tuple[str, str, datetime]], set[str]]:
        with sessions() as session:
            due = store.due_by(session, horizon)
        # Read after the rows: a job removed in between is then either running or finished.
        return due, read_stored_job_ids([job_ids(job, task_id) for task_id, job, _ in due])

    due, stored = await asyncio.to_thread(load)
    orphans = orphaned_tasks(due, job_ids, stored, running_job_ids())
    for task_id, job, at in orphans:
        schedule(job, task_id, at)
    if orphans:
        logger.warning("recovered %d scheduled task(s) that had lost their job", len(orphans))
    return len(orphans)
