"""Operator service: list and inspect every scheduled job, pause, resume, cancel, run now.

`JobsService` is what the routes call, one method per action; the functions below it do the
work in a session they are given.

Listing reads the job store's `id` and `next_run_time` columns joined with the service's own
tables; it never unpickles a stored job, so a page costs the same with 100 or 1,000,000 jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal, Protocol, TypeVar

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler
from pydantic import AfterValidator, Field, FiniteFloat, StrictInt, TypeAdapter
from sqlalchemy import BindParameter, Row, Select, and_, bindparam, case, func, or_, select
from sqlalchemy.orm import Session, aliased

from scheduler_app.api.schemas import JobDetail, JobPublic, JobsPage, LastRun, RunPublic, RunsPage
from scheduler_app.clock import Clock
from scheduler_app.cron.crontab import describe_crontab
from scheduler_app.db.engine import SessionFactory
from scheduler_app.db.models import OPEN_STATUSES, CronJob, JobRun, Task, TaskStatus
from scheduler_app.db.paging import (
    STRICT,
    TIME_POSITION,
    CursorId,
    TimePosition,
    encode_cursor,
    keyset_page,
    older_than,
    time_cursor,
)
from scheduler_app.engine.executor import RegistryExecutor
from scheduler_app.engine.scheduler import JOBS, task_job_id
from scheduler_app.errors import Conflict, NotFound
from scheduler_app.reminders.job import REMINDER_JOB, REMINDER_JOB_PREFIX
from scheduler_app.tasks import store

JobKind = Literal["cron", "reminder", "task"]
JobState = Literal["scheduled", "paused"]
RECENT_RUNS = 10
_SCHEDULED, _PAUSED = 0, 1
T = TypeVar("T")


class Reader(Protocol):
    """Runs a read-only piece of work with a session; `indexed` when it follows an index."""

    def __call__(self, work: Callable[[Session], T], *, indexed: bool) -> Awaitable[T]: ...


@dataclass(frozen=True)
class JobsService:
    """The operator's actions on jobs, each in a session of its own."""

    sessions: SessionFactory
    scheduler: BaseScheduler
    executor: RegistryExecutor
    clock: Clock
    read: Reader
    # Tells the leader (this process or another) to look at the job store now.
    wake_leader: Callable[[], None] = lambda: None

    async def page_json(
        self, *, kind: JobKind | None, q: str | None, limit: int, cursor: str | None
    ) -> str:
        """One page of jobs (see list_jobs), as JSON."""

        def dump_page(session: Session) -> str:
            page = list_jobs(session, kind=kind, q=q, limit=limit, cursor=cursor)
            return page.model_dump_json()

        # The query and the JSON in one step: a plain route with a session takes four hops to a
        # worker thread (opening the session, the query, FastAPI's validation of the answer,
        # closing the session), and while deliveries keep the interpreter busy each hop waits
        # its turn for it. Without a search, a page follows the listing index.
        return await self.read(dump_page, indexed=q is None)

    async def page(
        self,
        *,
        kind: JobKind | None,
        q: str | None,
        state: JobState | None,
        limit: int,
        cursor: str | None,
    ) -> JobsPage:
        """One page of jobs (see list_jobs); state keeps only scheduled or only paused ones."""

        def read_page(session: Session) -> JobsPage:
            return list_jobs(session, kind=kind, q=q, limit=limit, cursor=cursor, state=state)

        return await self.read(read_page, indexed=q is None)

    def detail(self, job_id: str) -> JobDetail:
        with self.sessions() as session:
            return get_job(session, job_id)

    def runs(
        self, *, job_id: str | None, outcome: str | None, limit: int, cursor: str | None
    ) -> RunsPage:
        """Runs of one job (404 for a job neither known nor run) or of all, newest first."""
        with self.sessions() as session:
            if job_id is not None:
                require_runs_or_job(session, job_id)
            return list_runs(session, job_id=job_id, outcome=outcome, limit=limit, cursor=cursor)

    def pause(self, job_id: str) -> JobDetail:
        with self.sessions() as session:
            pause_job(session, self.scheduler, job_id, self.clock())
            return get_job(session, job_id)

    def resume(self, job_id: str) -> JobDetail:
        with self.sessions() as session:
            resume_job(session, self.scheduler, job_id, self.clock())
            self.wake_leader()
            return get_job(session, job_id)

    def cancel(self, job_id: str) -> None:
        with self.sessions() as session:
            cancel_job(session, self.scheduler, job_id, self.clock())

    async def run_now(self, job_id: str) -> str:
        """Start a run of the job now; its run id."""
        name, args, kwargs = await asyncio.to_thread(self._runnable, job_id)
        run_id = await self.executor.run_now(job_id, name, args, kwargs)
        self.wake_leader()
        return run_id

    def _runnable(self, job_id: str) -> tuple[str, Sequence[Any], dict[str, Any]]:
        with self.sessions() as session:
            return runnable(session, job_id)


def _phase_matches_time(position: JobsPosition) -> JobsPosition:
    phase, after_time, _ = position
    if (phase == _PAUSED) != (after_time is None):
        raise ValueError("a paused job has no next run time, a scheduled one has")
    return position


# A page of jobs ends at [phase, next run time, job id]: [0, float, id] among the scheduled jobs,
# [1, null, id] among the paused ones. (A StrictInt, as Literal[0] takes JSON `false`.)
JobsPosition = Annotated[
    tuple[Annotated[StrictInt, Field(ge=_SCHEDULED, le=_PAUSED)], FiniteFloat | None, CursorId],
    AfterValidator(_phase_matches_time),
]
_JOBS_POSITION: TypeAdapter[tuple[int, float | None, str]] = TypeAdapter(
    JobsPosition, config=STRICT
)
_FIRST_JOB = (_SCHEDULED, None, None)


# The id of a reminder's job: reminder:<reminder id>.
REMINDER_JOB_ID_PREFIX = task_job_id(REMINDER_JOB_PREFIX, "")


# The id of the job of a task of your own jobs: task:<task id>.
TASK_JOB_ID_PREFIX = task_job_id("task", "")


def _is_reminder(job_id: str) -> bool:
    return job_id.startswith(REMINDER_JOB_ID_PREFIX)


def _task_id(job_id: str) -> str | None:
    """The id of the task (a reminder's or one of your jobs') that job_id fires, if any."""
    for prefix in (REMINDER_JOB_ID_PREFIX, TASK_JOB_ID_PREFIX):
        if job_id.startswith(prefix):
            return job_id.removeprefix(prefix)
    return None


@lru_cache(maxsize=1)
def _listing() -> Select[Any]:
    """Jobs with what a listing shows of them, their last run included: one statement, so that a
    page costs one round trip to the database (a page answered during a burst of deliveries waits
    for the interpreter lock at each one). Built once: building it took longer than running it."""
    task_id = case(
        (
            JOBS.c.id.startswith(TASK_JOB_ID_PREFIX),
            func.substr(JOBS.c.id, len(TASK_JOB_ID_PREFIX) + 1),
        ),
        else_=func.substr(JOBS.c.id, len(REMINDER_JOB_ID_PREFIX) + 1),
    )
    # The latest run by scheduled time, found through the (job_id, scheduled_for) index.
    latest_run_id = (
        select(JobRun.id)
        .where(JobRun.job_id == JOBS.c.id)
        .order_by(JobRun.scheduled_for.desc())
        .limit(1)
        .correlate(JOBS)
        .scalar_subquery()
    )
    last_run = aliased(JobRun, name="last_run")
    return select(
        JOBS.c.id,
        JOBS.c.next_run_time,
        CronJob.job,
        CronJob.cron,
        CronJob.timezone,
        CronJob.description,
        CronJob.source,
        Task.recipient,
        Task.args,
        Task.run_at,
        Task.job.label("task_job"),
        last_run.id.label("last_run_id"),
        last_run.outcome.label("last_run_outcome"),
        last_run.scheduled_for.label("last_run_scheduled_for"),
        last_run.finished_at.label("last_run_finished_at"),
    ).select_from(
        JOBS.outerjoin(CronJob, CronJob.id == JOBS.c.id)
        .outerjoin(Task, Task.id == task_id)
        .outerjoin(last_run, last_run.id == latest_run_id)
    )


def list_jobs(
    session: Session,
    *,
    kind: JobKind | None,
    q: str | None,
    limit: int,
    cursor: str | None,
    state: JobState | None = None,
) -> JobsPage:
    """One page of jobs by next run time, paused ones last (or only one of the two parts)."""
    values: dict[str, Any] = {}
    if kind == "cron":
        values["cron_ids"] = session.scalars(select(CronJob.id)).all()

    matching = (
        or_(
            JOBS.c.id.icontains(q, autoescape=True),
            CronJob.description.icontains(q, autoescape=True),
            Task.recipient.icontains(q, autoescape=True),
            # The reminder's subject is among its arguments.
            Task.args.icontains(q, autoescape=True),
        )
        if q
        else None
    )

    def part(part_phase: int, after: bool, count: int) -> Sequence[Row[Any]]:
        statement = _page_part(kind, part_phase, after)
        if matching is not None:
            statement = statement.where(matching)
        return session.execute(statement, {**values, "limit": count}).all()

    def fetch(position: tuple[int, float | None, str | None] | None, count: int) -> list[Row[Any]]:
        phase, after_time, after_id = position or _FIRST_JOB
        values.update(after_time=after_time, after_id=after_id)
        rows: list[Row[Any]] = []
        if phase == _SCHEDULED and state != "paused":
            rows += part(_SCHEDULED, after_id is not None, count)
        if len(rows) < count and state != "scheduled":
            rows += part(_PAUSED, phase == _PAUSED, count - len(rows))
        return rows

    page = keyset_page(
        fetch, cursor=cursor, position=_JOBS_POSITION, limit=limit, cursor_after=_cursor_after
    )
    return JobsPage(items=[_item(row) for row in page.items], next_cursor=page.next_cursor)


def _cursor_after(row: Row[Any]) -> str:
    phase = _PAUSED if row.next_run_time is None else _SCHEDULED
    return encode_cursor(phase, row.next_run_time, row.id)


@lru_cache(maxsize=16)
def _page_part(kind: JobKind | None, phase: int, after: bool) -> Select[Any]:
    """The statement for the scheduled or the paused part of a page, built once per shape with
    its values bound at execution (limit, after_time, after_id, cron_ids): deriving it again
    for every page, and SQLAlchemy's cache key for it, took about 0.45 ms, some 40 % of running
    it on SQLite.

    Two index-friendly scans instead of one ORDER BY over "IS NULL": scheduled jobs by
    (next_run_time, id), then paused ones (no next run) by id; `after` continues past a cursor.
    """
    query = _listing()
    if kind == "reminder":
        query = query.where(JOBS.c.id.startswith(REMINDER_JOB_ID_PREFIX))
    elif kind == "task":
        query = query.where(JOBS.c.id.startswith(TASK_JOB_ID_PREFIX))
    elif kind == "cron":
        # The config declares few cron jobs: look them up by key instead of scanning every
        # reminder job for the ones that are not.
        query = query.where(JOBS.c.id.in_(bindparam("cron_ids", expanding=True)))
    if phase == _SCHEDULED:
        query = query.where(JOBS.c.next_run_time.is_not(None))
        if after:
            after_time: BindParameter[Any] = bindparam("after_time")
            after_id: BindParameter[Any] = bindparam("after_id")
            query = query.where(
                # The first condition is implied by the second; it lets the index seek.
                JOBS.c.next_run_time >= after_time,
                or_(
                    JOBS.c.next_run_time > after_time,
                    and_(JOBS.c.next_run_time == after_time, JOBS.c.id > after_id),
                ),
            )
        return query.order_by(JOBS.c.next_run_time, JOBS.c.id).limit(bindparam("limit"))
    query = query.where(JOBS.c.next_run_time.is_(None))
    if after:
        query = query.where(JOBS.c.id > bindparam("after_id"))
    return query.order_by(JOBS.c.id).limit(bindparam("limit"))


def get_job(session: Session, job_id: str) -> JobDetail:
    """The job with its most recent runs."""
    row = session.execute(_listing().where(JOBS.c.id == job_id)).one_or_none()
    if row is None:
        raise NotFound(f"no scheduled job with id '{job_id}'")
    recent = list_runs(session, job_id=job_id, outcome=None, limit=RECENT_RUNS, cursor=None)
    item = _item(row)
    return JobDetail(**item.model_dump(), recent_runs=recent.items)


def list_runs(
    session: Session, *, job_id: str | None, outcome: str | None, limit: int, cursor: str | None
) -> RunsPage:
    """Run records, newest first."""
    query = select(JobRun)
    if job_id is not None:
        query = query.where(JobRun.job_id == job_id)
    if outcome is not None:
        query = query.where(JobRun.outcome == outcome)

    def fetch(before: TimePosition | None, count: int) -> Sequence[JobRun]:
        older = query
        if before is not None:
            older = query.where(older_than(JobRun.scheduled_for, JobRun.id, before))
        newest_first = older.order_by(JobRun.scheduled_for.desc(), JobRun.id.desc())
        return session.scalars(newest_first.limit(count)).all()

    page = keyset_page(
        fetch, cursor=cursor, position=TIME_POSITION, limit=limit, cursor_after=_run_cursor
    )
    return RunsPage(
        items=[RunPublic.model_validate(run, from_attributes=True) for run in page.items],
        next_cursor=page.next_cursor,
    )


def _run_cursor(run: JobRun) -> str:
    return time_cursor(run.scheduled_for, run.id)


def require_runs_or_job(session: Session, job_id: str) -> None:
    """404 unless the job is scheduled, has a run history, or is the job of a known reminder
    (which is between its job's removal and its first run record while a delivery starts)."""
    has_job = session.scalar(select(JOBS.c.id).where(JOBS.c.id == job_id)) is not None
    has_runs = session.scalar(select(JobRun.id).where(JobRun.job_id == job_id).limit(1))
    task_id = _task_id(job_id)
    is_task = task_id is not None and session.get(Task, task_id) is not None
    if not (has_job or has_runs or is_task):
        raise NotFound(f"no job or run history with id '{job_id}'")


def pause_job(session: Session, scheduler: BaseScheduler, job_id: str, now: datetime) -> None:
    _require_scheduled(scheduler, job_id)
    scheduler.pause_job(job_id)
    _set_operator_pause(session, job_id, paused=True, now=now)


def resume_job(session: Session, scheduler: BaseScheduler, job_id: str, now: datetime) -> None:
    job = _require_scheduled(scheduler, job_id)
    row = session.get(CronJob, job_id)
    if row is not None and not row.enabled:
        raise Conflict(
            f"job '{job_id}' is disabled in config.yaml (enabled: false); enable it there"
        )
    if job.next_run_time is None:  # resuming a running job would move its next run
        scheduler.resume_job(job_id)
    _set_operator_pause(session, job_id, paused=False, now=now)


def cancel_job(session: Session, scheduler: BaseScheduler, job_id: str, now: datetime) -> None:
    """Cancel a task's job (a reminder's or one of your jobs': the task becomes 'cancelled');
    config jobs are refused."""
    task_id = _task_id(job_id)
    if task_id is None:
        # Worded for every client: the API, the command line and the dashboard name the same
        # actions differently.
        row = session.get(CronJob, job_id)
        if row is not None and row.source == "builtin":
            raise Conflict(
                f"job '{job_id}' is built-in maintenance and cannot be cancelled: pause it, or "
                "give it an entry in config.yaml (enabled: false switches it off) and reload"
            )
        if row is not None:
            raise Conflict(
                f"job '{job_id}' is declared in config.yaml and cannot be cancelled: pause it, "
                "or remove it from the file and reload"
            )
        raise NotFound(f"no scheduled job with id '{job_id}'")
    task = session.get(Task, task_id)
    if task is not None and task.status == TaskStatus.CANCELLED:
        return  # cancelling again is a no-op: 204 as the first time
    if task is None or task.status not in OPEN_STATUSES:
        raise NotFound(f"no scheduled job with id '{job_id}'")
    cancelled = store.finish(session, task.id, TaskStatus.CANCELLED, now)
    session.commit()
    if not cancelled:  # it finished meanwhile
        raise Conflict(f"job '{job_id}' has just run; its task is no longer scheduled")
    with contextlib.suppress(JobLookupError):
        scheduler.remove_job(job_id)


def runnable(session: Session, job_id: str) -> tuple[str, Sequence[Any], dict[str, Any]]:
    """What running the job now calls: registry name, args, kwargs."""
    task_id = _task_id(job_id)
    if task_id is not None:
        task = session.get(Task, task_id)
        # A running one is refused by the executor as running now (409), not as unknown.
        if task is None or task.status not in OPEN_STATUSES:
            raise NotFound(f"no scheduled job with id '{job_id}'")
        return task.job, [task_id], {}
    row = session.get(CronJob, job_id)
    if row is None:
        raise NotFound(f"no scheduled job with id '{job_id}'")
    return row.job, list(row.args), dict(row.kwargs)


def _require_scheduled(scheduler: BaseScheduler, job_id: str) -> Any:
    job = scheduler.get_job(job_id)
    if job is None:
        raise NotFound(f"no scheduled job with id '{job_id}'")
    return job


def _set_operator_pause(session: Session, job_id: str, *, paused: bool, now: datetime) -> None:
    # Kept on the cron row so that restarts and config reloads respect the operator's choice;
    # a reminder's pause lives in the job store alone.
    row = session.get(CronJob, job_id)
    if row is not None and row.paused != paused:
        row.paused = paused
        row.updated_at = now
        session.commit()


def _item(row: Row[Any]) -> JobPublic:
    # Unpacked in _listing's column order: reading a row's fields by name took half the time of
    # building a page's items.
    (
        job_id,
        next_run_time,
        job,
        cron,
        timezone,
        description,
        source,
        email,
        args,
        remind_at,
        task_job,
        last_run_id,
        last_run_outcome,
        last_run_scheduled_for,
        last_run_finished_at,
    ) = tuple(row)
    last_run = None
    if last_run_id is not None:
        last_run = LastRun(
            id=last_run_id,
            outcome=last_run_outcome,
            scheduled_for=last_run_scheduled_for,
            finished_at=last_run_finished_at,
        )
    next_run = None if next_run_time is None else datetime.fromtimestamp(next_run_time, UTC)
    if _is_reminder(job_id):
        due = _utc_text(remind_at) if remind_at is not None else "unknown"
        return JobPublic(
            id=job_id,
            kind="reminder",
            job=REMINDER_JOB,
            description=_reminder_description(email, args),
            trigger=f"date: {due}",
            cron=None,
            timezone=None,
            schedule_text=f"Once, at {due}",
            next_run_time=next_run,
            paused=next_run is None,
            source="api",
            last_run=last_run,
        )
    if job_id.startswith(TASK_JOB_ID_PREFIX):
        due = _utc_text(remind_at) if remind_at is not None else "unknown"
        return JobPublic(
            id=job_id,
            kind="task",
            job=task_job or "unknown",
            description=f"Task of {task_job}" if task_job else "Task",
            trigger=f"date: {due}",
            cron=None,
            timezone=None,
            schedule_text=f"Once, at {due}",
            next_run_time=next_run,
            paused=next_run is None,
            source="api",
            last_run=last_run,
        )
    return JobPublic(
        id=job_id,
        kind="cron",
        job=job or "unknown",
        description=description or "",
        trigger=f"cron: {cron} ({timezone})" if cron else "cron",
        # From the cron_jobs row, as the trigger text is: null too for a job without one.
        cron=cron,
        timezone=timezone if cron else None,
        schedule_text=_describe(cron) if cron else "",
        next_run_time=next_run,
        paused=next_run is None,
        source=source or "config",
        last_run=last_run,
    )


@lru_cache(maxsize=256)
def _reminder_description(email: str | None, args: str | None) -> str:
    if email is None or args is None:
        return "Reminder"
    return f"Reminder to {email}: {json.loads(args)['subject']}"


def _describe(expression: str) -> str:
    return describe_crontab(expression)


def _utc_text(moment: datetime) -> str:
    return f"{moment.astimezone(UTC).isoformat(timespec='seconds')[:19]}Z"
