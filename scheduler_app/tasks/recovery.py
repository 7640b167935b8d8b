"""Recovery: give every scheduled reminder that falls due soon a job again.

APScheduler deletes a date job from its store when it submits it, so a process that dies
mid-delivery leaves a reminder that is still 'scheduled' but has no job. This pass finds such
reminders and schedules them again; delivery then re-checks the row, so a reminder that was in
fact finished is not sent twice.

The pass looks only at reminders due before a horizon (two passes ahead): its cost follows the
reminders falling due, not the million that may be pending, and a reminder whose job was lost
is still recovered before its time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from scheduler_app.db.engine import SessionFactory
from scheduler_app.engine.scheduler import reminder_job_id
from scheduler_app.reminders import service as reminders

logger = logging.getLogger(__name__)


def orphaned_reminders(
    scheduled: Iterable[tuple[str, datetime]],
    stored_job_ids: set[str],
    running_job_ids: set[str],
) -> list[tuple[str, datetime]]:
    """Scheduled reminders that have neither a stored nor a running job."""
    return [
        (reminder_id, due)
        for reminder_id, due in scheduled
        if reminder_job_id(reminder_id) not in stored_job_ids
        and reminder_job_id(reminder_id) not in running_job_ids
    ]


async def recover_reminders(
    sessions: SessionFactory,
    read_stored_job_ids: Callable[[list[str]], set[str]],
    running_job_ids: Callable[[], set[str]],
    schedule: Callable[[str, datetime], None],
    horizon: datetime,
) -> int:
    """Schedule every orphaned reminder due by horizon again; return how many were."""

    def load() -> tuple[list[tuple[str, datetime]], set[str]]:
        with sessions() as session:
            due = reminders.reminders_due_by(session, horizon)
        # Read after the rows: a job removed in between is then either running or finished.
        return due, read_stored_job_ids([reminder_job_id(reminder_id) for reminder_id, _ in due])

    due, stored = await asyncio.to_thread(load)
    orphans = orphaned_reminders(due, stored, running_job_ids())
    for reminder_id, at in orphans:
        schedule(reminder_id, at)
    if orphans:
        logger.warning("recovered %d scheduled reminder(s) that had lost their job", len(orphans))
    return len(orphans)
