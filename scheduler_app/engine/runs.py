"""Run records: one row per execution or missed execution of any job."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy import Table, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from scheduler_app.cluster import lease
from scheduler_app.db.batch_writer import Grouped
from scheduler_app.db.bulk import insert_rows, update_rows
from scheduler_app.db.models import JobRun, RunOutcome
from scheduler_app.ids import new_id

MAX_TEXT_LENGTH = 4000
# Multi-row statements on the table: in a burst they run for thousands of rows, where the ORM's
# bulk insert and update, or an executemany, cost more per row than the database does.
_RUNS = cast(Table, JobRun.__table__)
INTERRUPTED = "interrupted: the process stopped before the run finished"


@dataclass(frozen=True)
class RunStart:
    job_id: str
    job: str
    scheduled_for: datetime
    started_at: datetime
    manual: bool = False
    # Chosen by the caller, so that it can finish the run without waiting for the start.
    run_id: str = field(default_factory=new_id)


@dataclass(frozen=True)
class RunEnd:
    run_id: str
    finished_at: datetime
    outcome: RunOutcome
    error: str | None = None
    result: str | None = None


def start_runs(session: Session, starts: list[RunStart]) -> list[str]:
    """Record many runs as started in one statement; their ids, in order."""
    rows = [
        (
            start.run_id,
            start.job_id,
            start.job,
            start.scheduled_for,
            start.started_at,
            start.manual,
            RunOutcome.RUNNING,
        )
        for start in starts
    ]
    insert_rows(session, _RUNS, _STARTED, rows)
    return [start.run_id for start in starts]


def claim_tick(session: Session, start: RunStart, term: int | None, fenced: bool) -> bool:
    """Record the start of a recurring job's tick (its scheduled time), unless a run of the
    same tick is recorded already, or (when fenced) the lease is no longer held under term;
    whether this process may run it.

    The run records hold each (job, tick) once (a unique index): two processes that both fire
    one tick, even both believing they lead, cannot both claim it.
    """
    connection = session.connection()
    if fenced and (term is None or not lease.still_held(connection, term)):
        return False
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    result = session.execute(
        insert(_RUNS)
        .values(
            id=start.run_id,
            job_id=start.job_id,
            job=start.job,
            scheduled_for=start.scheduled_for,
            started_at=start.started_at,
            manual=False,
            outcome=RunOutcome.RUNNING,
            tick=start.scheduled_for,
        )
        .on_conflict_do_nothing(index_elements=["job_id", "tick"])
        .returning(_RUNS.c.id)
    )
    return result.scalar_one_or_none() is not None


def finish_runs(session: Session, ends: list[RunEnd]) -> list[None]:
    """Complete many run records in one statement."""
    rows = [
        (end.run_id, end.outcome, end.finished_at, _clip(end.error), _clip(end.result))
        for end in ends
    ]
    update_rows(session, _RUNS, "id", ("outcome", "finished_at", "error", "result"), rows)
    return [None] * len(ends)


_STARTED = ("id", "job_id", "job", "scheduled_for", "started_at", "manual", "outcome")


START_RUNS = Grouped("start runs", start_runs, patient=True)
# After the starts of the same batch: a short run may be started and finished in one batch.
FINISH_RUNS = Grouped("finish runs", finish_runs, phase=1, patient=True)


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
            id=new_id(),
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
