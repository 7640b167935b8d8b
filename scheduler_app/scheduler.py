"""The APScheduler set-up: one AsyncIOScheduler on the service's database.

Two departures from APScheduler's defaults keep work from being lost or the loop from stalling:
the job store's I/O runs in a worker thread (a locked or slow database never blocks the event
loop that serves the API), and a stored job that cannot be restored is set aside in
`quarantined_jobs` instead of being deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler, run_in_event_loop
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Engine, and_, column, delete, insert, select, table

from scheduler_app.clock import utcnow
from scheduler_app.executor import RegistryExecutor, registered_job
from scheduler_app.models import QuarantinedJob
from scheduler_app.settings import Settings

logger = logging.getLogger(__name__)

JOBS_TABLE = "apscheduler_jobs"
REMINDER_JOB_PREFIX = "reminder:"
# After a failed pass over the job store, try again this soon.
STORE_RETRY_S = 2.0


class OffLoopScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """An AsyncIOScheduler whose passes over the job store run in one worker thread."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="job-store")
        self._pass: asyncio.Future[Any] | None = None
        self._again = False

    @run_in_event_loop  # type: ignore[untyped-decorator]
    def wakeup(self) -> None:
        self._stop_timer()
        if self._pass is not None:
            self._again = True  # a pass is under way; run one more right after it
            return
        self._pass = asyncio.wrap_future(self._store_thread.submit(self._process_jobs))
        self._pass.add_done_callback(self._pass_done)

    def _pass_done(self, finished: asyncio.Future[Any]) -> None:
        self._pass = None
        try:
            wait_seconds = finished.result()
        except Exception:
            logger.exception("a pass over the job store failed; retrying in %ss", STORE_RETRY_S)
            wait_seconds = STORE_RETRY_S
        if self._eventloop is None:  # shut down meanwhile
            return
        if self._again:
            self._again = False
            wait_seconds = 0
        self._start_timer(wait_seconds)

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)
        self._store_thread.shutdown(wait=False)


class QuarantiningJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """A SQLAlchemyJobStore that sets undecodable jobs aside instead of deleting them."""

    def _get_jobs(self, *conditions: Any) -> list[Job]:
        jobs: list[Job] = []
        query = select(self.jobs_t).order_by(self.jobs_t.c.next_run_time)
        if conditions:
            query = query.where(and_(*conditions))
        with self.engine.begin() as connection:
            for row in connection.execute(query):
                try:
                    jobs.append(self._reconstitute_job(row.job_state))
                except Exception as exc:
                    self._quarantine(connection, row, exc)
        return jobs

    def _quarantine(self, connection: Any, row: Any, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        logger.error(
            "job %s cannot be restored (%s); set aside in quarantined_jobs for repair",
            row.id,
            error,
        )
        connection.execute(delete(QuarantinedJob).where(QuarantinedJob.id == row.id))
        connection.execute(
            insert(QuarantinedJob).values(
                id=row.id,
                next_run_time=row.next_run_time,
                job_state=row.job_state,
                error=error[:2000],
                quarantined_at=utcnow(),
            )
        )
        connection.execute(delete(self.jobs_t).where(self.jobs_t.c.id == row.id))


def build_scheduler(
    settings: Settings, engine: Engine, executor: RegistryExecutor
) -> AsyncIOScheduler:
    """An AsyncIOScheduler whose defaults never drop late work.

    Args:
        settings: the service's settings (time zone).
        engine: the engine of the service's database, which also holds the job table.
        executor: runs the jobs with the service's context.
    """
    return OffLoopScheduler(
        jobstores={"default": QuarantiningJobStore(engine=engine, tablename=JOBS_TABLE)},
        executors={"default": executor},
        # APScheduler's own default grace is 1 s, which silently drops any job that starts late;
        # reminders enforce their own late-delivery window when they run.
        job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        timezone=settings.zone,
        jobstore_retry_interval=STORE_RETRY_S,
    )


def reminder_job_id(reminder_id: str) -> str:
    return f"{REMINDER_JOB_PREFIX}{reminder_id}"


def schedule_reminder_job(scheduler: AsyncIOScheduler, reminder_id: str, due: datetime) -> None:
    # replace_existing keeps this idempotent: scheduling the same reminder twice keeps one job.
    scheduler.add_job(
        registered_job,
        trigger=DateTrigger(run_date=due),
        args=("deliver_reminder", reminder_id),
        id=reminder_job_id(reminder_id),
        name=f"reminder {reminder_id}",
        replace_existing=True,
        misfire_grace_time=None,
    )


def unschedule_reminder_job(scheduler: AsyncIOScheduler, reminder_id: str) -> None:
    with contextlib.suppress(JobLookupError):
        scheduler.remove_job(reminder_job_id(reminder_id))


def stored_job_ids(engine: Engine, prefix: str) -> set[str]:
    """Ids of stored jobs starting with prefix, read without unpickling any job."""
    jobs = table(JOBS_TABLE, column("id"))
    with engine.connect() as connection:
        rows = connection.execute(select(jobs.c.id).where(jobs.c.id.startswith(prefix)))
        return {row.id for row in rows}
