"""What the dashboard's overview shows, read in one session: tasks by status, the next fires,
recent failures, late and missed runs, and the fire lag over the last day.

The lag chart's bars are computed here (pure, `lag_bars`) so that the page only draws them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler_app.api.schemas import JobPublic, RunPublic
from scheduler_app.db.engine import SessionFactory
from scheduler_app.db.models import JobRun, RunOutcome, Task, TaskStatus
from scheduler_app.engine.jobs import list_jobs, list_runs
from scheduler_app.engine.scheduler import JOBS

# A run that started this much after its time counts as late.
LATE_AFTER = timedelta(seconds=60)
LAG_WINDOW = timedelta(days=1)
LAG_BUCKETS = 24
# Runs of the last day read for the chart at most (the newest): a bound on the page's cost.
LAG_RUNS_READ = 20_000
LISTED = 8


@dataclass(frozen=True)
class LagBar:
    start: datetime
    runs: int
    max_s: float
    mean_s: float


@dataclass(frozen=True)
class LateRun:
    run: RunPublic
    lag_s: float


@dataclass(frozen=True)
class Overview:
    now: datetime
    tasks_by_status: dict[str, int]
    jobs_scheduled: int
    jobs_paused: int
    next_fires: list[JobPublic]
    recent_failures: list[RunPublic]
    late_runs: list[LateRun]
    missed_runs: list[RunPublic]
    overdue_tasks: int
    lag: list[LagBar]


def lag_bars(
    samples: Sequence[tuple[datetime, float]], since: datetime, buckets: int, width: timedelta
) -> list[LagBar]:
    """Group (scheduled time, lag in seconds) samples into `buckets` consecutive periods of
    `width` from since; samples outside are left out."""
    grouped: list[list[float]] = [[] for _ in range(buckets)]
    for scheduled, lag_s in samples:
        index = int((scheduled - since) / width)
        if 0 <= index < buckets:
            grouped[index].append(max(0.0, lag_s))
    return [
        LagBar(
            start=since + width * index,
            runs=len(lags),
            max_s=max(lags, default=0.0),
            mean_s=sum(lags) / len(lags) if lags else 0.0,
        )
        for index, lags in enumerate(grouped)
    ]


@dataclass(frozen=True)
class OverviewService:
    sessions: SessionFactory
    clock: Callable[[], datetime]

    def read(self) -> Overview:
        now = self.clock()
        since = now - LAG_WINDOW
        with self.sessions() as session:
            by_status = {
                str(status): count
                for status, count in session.execute(
                    select(Task.status, func.count()).group_by(Task.status)
                )
            }
            paused = session.scalar(
                select(func.count()).select_from(JOBS).where(JOBS.c.next_run_time.is_(None))
            )
            total = session.scalar(select(func.count()).select_from(JOBS))
            next_fires = list_jobs(
                session, kind=None, q=None, limit=LISTED, cursor=None, state="scheduled"
            ).items
            failures = list_runs(
                session, job_id=None, outcome=RunOutcome.ERROR, limit=LISTED, cursor=None
            ).items
            missed = [
                run
                for run in list_runs(
                    session, job_id=None, outcome=RunOutcome.MISSED, limit=LISTED, cursor=None
                ).items
                if run.scheduled_for >= since
            ]
            overdue = session.scalar(
                select(func.count())
                .select_from(Task)
                .where(Task.status == TaskStatus.SCHEDULED, Task.run_at < now - LATE_AFTER)
            )
            samples, late = _lags(session, since)
        width = LAG_WINDOW / LAG_BUCKETS
        return Overview(
            now=now,
            tasks_by_status={status: by_status.get(status, 0) for status in TaskStatus},
            jobs_scheduled=(total or 0) - (paused or 0),
            jobs_paused=paused or 0,
            next_fires=next_fires,
            recent_failures=failures,
            late_runs=late,
            missed_runs=missed,
            overdue_tasks=overdue or 0,
            lag=lag_bars(samples, now - width * LAG_BUCKETS, LAG_BUCKETS, width),
        )


def _lags(session: Session, since: datetime) -> tuple[list[tuple[datetime, float]], list[LateRun]]:
    """The lag of every scheduled (not manual) run of the last day, and the latest late ones."""
    runs = session.scalars(
        select(JobRun)
        .where(
            JobRun.scheduled_for >= since,
            JobRun.started_at.is_not(None),
            JobRun.manual.is_(False),
        )
        .order_by(JobRun.scheduled_for.desc())
        .limit(LAG_RUNS_READ)
    ).all()
    samples: list[tuple[datetime, float]] = []
    late: list[LateRun] = []
    for run in runs:
        assert run.started_at is not None
        lag_s = (run.started_at - run.scheduled_for).total_seconds()
        samples.append((run.scheduled_for, lag_s))
        if lag_s > LATE_AFTER.total_seconds() and len(late) < LISTED:
            late.append(LateRun(RunPublic.model_validate(run, from_attributes=True), lag_s))
    return samples, late
