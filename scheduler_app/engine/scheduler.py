"""The APScheduler set-up: one AsyncIOScheduler on the service's database.

Departures from APScheduler's defaults keep work from being lost or the loop from stalling: the
job store's I/O runs in a worker thread (a locked or slow database never blocks the event loop
that serves the API), a pass reads at most DUE_PER_PASS due jobs and removes the one-off jobs it
submitted in one statement, and a stored job that cannot be restored is set aside in
`quarantined_jobs` instead of being deleted. What of APScheduler's internals this relies on is
listed in docs/engine.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.date import DateTrigger
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Unicode,
    and_,
    delete,
    insert,
    select,
)

from scheduler_app.clock import utcnow
from scheduler_app.db.bulk import delete_rows
from scheduler_app.db.models import QuarantinedJob
from scheduler_app.engine.executor import RegistryExecutor, registered_job
from scheduler_app.engine.passes import Backlog, next_pass
from scheduler_app.settings import Settings

logger = logging.getLogger(__name__)

JOBS_TABLE = "apscheduler_jobs"
# After a failed pass over the job store, try again this soon.
STORE_RETRY_S = 2.0
# Job ids per query that asks which of them are stored (below SQLite's variable limit).
IDS_PER_QUERY = 500
# Due jobs that one pass over the job store reads. When thousands fall due together, the first
# are running while the next are read, and the event loop is never held up for the whole burst.
# A pass that leaves due jobs behind is followed by another at once, unless more than
# WAITING_BEFORE_NEXT_PASS jobs still wait in the executor for a slot: then the next pass comes
# when they are down to that many (see passes.next_pass). A burst is read as it is worked off,
# so memory holds a pass or two of it rather than every job (50,000 due at once: peak RSS
# 134 MB instead of 183 MB), and the passes' reads and deletes are spread over the burst
# instead of crowding its start.
DUE_PER_PASS = 500
WAITING_BEFORE_NEXT_PASS = DUE_PER_PASS // 2
# GET /jobs pages by (next_run_time, id); APScheduler indexes next_run_time alone. Without this
# index, a page over jobs due at the same instant (a burst of reminders) first sorts every one
# of them by id: 20 ms for 5,000 on PostgreSQL, on every page. Made by migration 0006.
LISTING_INDEX = "ix_apscheduler_jobs_next_run_time_id"
# The job table, declared as APScheduler 3.11's SQLAlchemyJobStore declares it (its __init__),
# plus the listing index: the one declaration that the service's queries and the job store use.
JOBS = Table(
    JOBS_TABLE,
    MetaData(),
    # 191: the longest key MySQL indexes in utf8mb4; 25: the precision of an 8-byte float.
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
    Index(LISTING_INDEX, "next_run_time", "id"),
)
_ZONE_ONLY = SimpleNamespace(timezone=UTC)
# APScheduler's own default grace is 1 s, which silently drops any job that starts late;
# reminders enforce their own late-delivery window when they run.
JOB_DEFAULTS: dict[str, Any] = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}


# APScheduler ships no type hints, so mypy sees its classes as Any; subclassing one needs the
# ignore (here and on QuarantiningJobStore).
class OffLoopScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """An AsyncIOScheduler whose passes over the job store run in one worker thread, and which
    only wakes up for a new job that is due before its next planned wake-up.

    It keeps its own timer instead of AsyncIOScheduler's: wakeup() is the only user of that
    timer, and is replaced here.
    """

    def __init__(self, backlog: Backlog | None = None, **options: Any) -> None:
        """backlog: what holds submitted jobs until they run (the executor); passes wait while
        it holds many (see passes.next_pass). options: as for AsyncIOScheduler."""
        super().__init__(**options)
        self._backlog = backlog
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="job-store")
        # Set at start; every attribute below is read and written on this loop only.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._pass: asyncio.Future[Any] | None = None
        self._again = False
        self._timer: asyncio.TimerHandle | None = None
        # When the timer fires next (None: no timer).
        self._planned: float | None = None
        # The earliest job added while a pass was under way, which that pass may not have seen.
        self._added_during_pass: float | None = None
        # Set while this thread adds a job: the wake-up that adding asks for is skipped.
        self._adding = threading.local()

    def start(self, paused: bool = False) -> None:
        self._loop = asyncio.get_running_loop()  # as AsyncIOScheduler.start finds its loop
        super().start(paused)

    def add_job(self, *args: Any, **kwargs: Any) -> Job:
        # APScheduler wakes up for every job added, which at hundreds of new reminders a second
        # is a pass over the job store each; a job due after the planned wake-up needs none.
        self._adding.active = True
        try:
            job: Job = super().add_job(*args, **kwargs)
        finally:
            self._adding.active = False
        # Unset while the scheduler is stopped: the job is added, and due-checked, at start.
        due: datetime | None = getattr(job, "next_run_time", None)
        if due is not None:
            self.wake_by(due)
        return job

    def wakeup(self) -> None:
        if getattr(self._adding, "active", False) or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._wakeup_now)

    def poll(self) -> None:
        """Look at the job store now, for jobs that other processes stored behind its back,
        unless a pass is under way or the backlog holds jobs: a busy scheduler passes again
        soon anyway, and a pass that jumped the backlog's queue would only grow it."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._poll_now)

    def _poll_now(self) -> None:
        busy = self._backlog is not None and self._backlog.waiting() > 0
        if self._pass is None and not busy and self.state == STATE_RUNNING:
            self._wakeup_now()

    def _wakeup_now(self) -> None:
        self._cancel_timer()
        if self._closed:
            return
        if self._pass is not None:
            self._again = True  # a pass is under way; run one more right after it
            return
        self._pass = asyncio.wrap_future(self._store_thread.submit(self._process_jobs))
        self._pass.add_done_callback(self._pass_done)

    def wake_by(self, due_time: datetime) -> None:
        """Make sure the scheduler wakes up by due_time, for a job stored behind its back."""
        if self.state != STATE_RUNNING or self._loop is None:
            return
        due = due_time.timestamp()
        if _running_loop() is self._loop:
            self._wake_by(due)  # on the loop already (POST /subscribe): no hop through its pipe
        else:
            self._loop.call_soon_threadsafe(self._wake_by, due)

    def _wake_by(self, due: float) -> None:
        if self._pass is not None:
            if self._added_during_pass is None or due < self._added_during_pass:
                self._added_during_pass = due
            return
        if self._planned is None or due < self._planned:
            self._plan_pass(max(due - time.time(), 0))

    def _plan_pass(self, wait_seconds: float | None) -> None:
        self._cancel_timer()
        if wait_seconds is None or self._loop is None:
            return
        self._timer = self._loop.call_later(wait_seconds, self._wakeup_now)
        self._planned = time.time() + wait_seconds

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._planned = None

    def _pass_done(self, finished: asyncio.Future[Any]) -> None:
        self._pass = None
        try:
            wait_seconds = finished.result()
        except Exception:
            logger.exception("a pass over the job store failed; retrying in %ss", STORE_RETRY_S)
            wait_seconds = STORE_RETRY_S
        if self._closed:
            return
        added = self._added_during_pass
        plan = next_pass(
            wait_seconds,
            woken_during_pass=self._again,
            added_due_in_s=None if added is None else added - time.time(),
            waiting=0 if self._backlog is None else self._backlog.waiting(),
            waiting_limit=WAITING_BEFORE_NEXT_PASS,
            fallback_s=STORE_RETRY_S,
        )
        self._again = False
        self._added_during_pass = None
        if plan.resume_at_waiting is not None and self._backlog is not None:
            self._backlog.call_when_waiting_at_most(plan.resume_at_waiting, self._resume_passes)
        self._plan_pass(plan.wait_s)

    def _resume_passes(self) -> None:
        if self.state == STATE_RUNNING:
            self._wakeup_now()

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)
        self._closed = True
        self._store_thread.shutdown(wait=False)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_timer)

    async def finish_pass(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for the pass under way, if any, to end; whether it did.

        Shutting down waits for APScheduler's job store lock, but a pass may take that lock
        after, and open a connection that disposing of the engine would leave open.
        """
        if self._pass is None:
            return True
        finished, _ = await asyncio.wait({self._pass}, timeout=timeout_s)
        return bool(finished)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class QuarantiningJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """A SQLAlchemyJobStore on JOBS that sets undecodable jobs aside instead of deleting them,
    reads at most DUE_PER_PASS due jobs a pass, and removes the one-off jobs that a pass
    submitted in one statement at the end of the pass.

    An engine passed in stays its owner's to dispose of: APScheduler's store disposes of it on
    shutdown, which orphaned the connections still checked out (a delivery finishing, a worker
    thread) in a pool that nobody closes, where the owner's wait for them could not see them.
    """

    def __init__(self, *, engine: Engine | None = None, url: str | None = None) -> None:
        super().__init__(engine=engine, url=url, tablename=JOBS.name)
        # The same table as the one APScheduler declared, and the listing index with it.
        self.jobs_t = JOBS
        self._owns_engine = engine is None
        # While a pass is under way: the stored run time of each due job it read. Then the
        # submitted jobs it will remove.
        self._due_run_times: dict[str, float] = {}
        self._submitted: list[tuple[str, float]] = []

    def shutdown(self) -> None:
        if self._owns_engine:
            super().shutdown()

    def get_due_jobs(self, now: datetime) -> list[Job]:
        # A pass starts with this call and ends with get_next_run_time; in between, it holds the
        # scheduler's job store lock (BaseScheduler._process_jobs), so every remove_job meanwhile
        # is the pass's own: the one-off jobs it submitted.
        self._remove_submitted()
        due = JOBS.c.next_run_time <= datetime_to_utc_timestamp(now)
        read: dict[str, float] = {}
        jobs = self._read(due, remember=read, limit=DUE_PER_PASS)
        self._due_run_times = read
        return jobs

    def remove_job(self, job_id: str) -> None:
        run_time = self._due_run_times.get(job_id)
        if run_time is None:
            super().remove_job(job_id)
            return
        # APScheduler deletes each submitted one-off job in its own transaction: 5,000 commits
        # when 5,000 reminders fall due together.
        self._submitted.append((job_id, run_time))

    def get_next_run_time(self) -> datetime | None:
        self._remove_submitted()
        next_run_time: datetime | None = super().get_next_run_time()
        return next_run_time

    def get_all_jobs(self) -> list[Job]:
        jobs = self._read()
        jobs.sort(key=lambda job: job.next_run_time is None)  # paused jobs last, as APScheduler
        return jobs

    def _remove_submitted(self) -> None:
        self._due_run_times = {}  # the pass is over
        if not self._submitted:
            return
        # Only the row as it was read: a job that already ran and stored a retry under the
        # same id has a new run time, and that retry stays.
        with self.engine.begin() as connection:
            delete_rows(connection, JOBS, ("id", "next_run_time"), self._submitted)
        self._submitted = []

    def _read(
        self,
        *conditions: Any,
        remember: dict[str, float] | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """The jobs that match conditions, by next run time; those that cannot be restored are
        quarantined (where APScheduler's _get_jobs deletes them)."""
        jobs: list[Job] = []
        query = select(JOBS).order_by(JOBS.c.next_run_time).limit(limit)
        if conditions:
            query = query.where(and_(*conditions))
        with self.engine.begin() as connection:
            for row in connection.execute(query):
                try:
                    jobs.append(self._reconstitute_job(row.job_state))
                except Exception as exc:
                    self._quarantine(connection, row, exc)
                    continue
                if remember is not None:
                    remember[row.id] = row.next_run_time
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
        connection.execute(delete(JOBS).where(JOBS.c.id == row.id))


def build_scheduler(
    settings: Settings, engine: Engine, executor: RegistryExecutor
) -> OffLoopScheduler:
    """An AsyncIOScheduler whose defaults never drop late work.

    Args:
        settings: the service's settings (time zone).
        engine: the engine of the service's database, which also holds the job table.
        executor: runs the jobs with the service's context.
    """
    return OffLoopScheduler(
        backlog=executor,
        jobstores={"default": QuarantiningJobStore(engine=engine)},
        executors={"default": executor},
        job_defaults=JOB_DEFAULTS,
        timezone=settings.zone,
        jobstore_retry_interval=STORE_RETRY_S,
    )


def task_job_id(prefix: str, task_id: str) -> str:
    """The id of the job that fires a task: its job's prefix (RegisteredJob.job_id_prefix)
    and the task's id, e.g. reminder:<id>."""
    return f"{prefix}:{task_id}"


def _task_job(job: str, prefix: str, task_id: str, due: datetime) -> dict[str, Any]:
    job_id = task_job_id(prefix, task_id)
    return {
        "func": registered_job,
        "trigger": DateTrigger(run_date=due),
        # The job's name and the task's id: everything else is in the task's row.
        "args": (job, task_id),
        "id": job_id,
        "name": job_id,
        "misfire_grace_time": None,
    }


def schedule_task_job(
    scheduler: AsyncIOScheduler, job: str, prefix: str, task_id: str, due: datetime
) -> None:
    # replace_existing keeps this idempotent: scheduling the same task twice keeps one job.
    scheduler.add_job(**_task_job(job, prefix, task_id, due), replace_existing=True)


def task_job_row(
    job: str, prefix: str, task_id: str, due: datetime, *, paused: bool = False
) -> dict[str, Any]:
    """The job store row of a task's job, exactly as schedule_task_job would store it, for
    writing in the same transaction as the task."""
    next_run_time = None if paused else due
    own = _task_job(job, prefix, task_id, due)
    state = {
        **_template_job_state(),
        **{field: own[field] for field in _OWN_FIELDS},
        "next_run_time": next_run_time,
    }
    return {
        "id": own["id"],
        "next_run_time": datetime_to_utc_timestamp(next_run_time),
        "job_state": pickle.dumps(state, pickle.HIGHEST_PROTOCOL),
    }


# What sets one task's job apart from another's; the rest of its state is the template's.
_OWN_FIELDS = ("id", "name", "args", "trigger")


@functools.cache
def _template_job_state() -> dict[str, Any]:
    # Building a Job checks its function's signature each time, which made up most of the
    # time spent on a task's write; one Job's state, with each task's own fields put in, is
    # the same state.
    own = _task_job("template", "task", "template", datetime.fromtimestamp(0, UTC))
    job = Job(
        _ZONE_ONLY,  # a Job reads only its scheduler's time zone
        **{**JOB_DEFAULTS, **own},
        kwargs={},
        executor="default",
        next_run_time=None,
    )
    state: dict[str, Any] = job.__getstate__()
    return state


def unschedule_task_job(scheduler: AsyncIOScheduler, prefix: str, task_id: str) -> None:
    with contextlib.suppress(JobLookupError):
        scheduler.remove_job(task_job_id(prefix, task_id))


def stored_job_ids(engine: Engine, job_ids: list[str]) -> set[str]:
    """Which of job_ids are stored, read without unpickling any job."""
    found: set[str] = set()
    with engine.connect() as connection:
        for start in range(0, len(job_ids), IDS_PER_QUERY):
            chunk = job_ids[start : start + IDS_PER_QUERY]
            found.update(connection.scalars(select(JOBS.c.id).where(JOBS.c.id.in_(chunk))))
    return found
