"""A reminder's job row written with the reminder is the row APScheduler itself would store."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import create_engine, select

from scheduler_app.engine.scheduler import (
    JOBS,
    QuarantiningJobStore,
    reminder_job_row,
    schedule_reminder_job,
)


def test_the_row_matches_what_add_job_stores(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    scheduler = BackgroundScheduler(
        jobstores={"default": QuarantiningJobStore(engine=engine)},
        job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        timezone=UTC,
    )
    due = datetime(2026, 12, 24, 18, 0, tzinfo=UTC) + timedelta(microseconds=123)
    scheduler.start(paused=True)
    try:
        schedule_reminder_job(scheduler, "r-1", due)
    finally:
        scheduler.shutdown(wait=False)
    with engine.connect() as connection:
        stored = connection.execute(select(JOBS)).one()
    engine.dispose()

    row = reminder_job_row("r-1", due)
    assert row["id"] == stored.id
    assert row["next_run_time"] == stored.next_run_time
    assert comparable(row["job_state"]) == comparable(stored.job_state)


def comparable(job_state: bytes) -> dict[str, Any]:
    """The pickled job state, with its trigger (which has no equality) as its own state."""
    state: dict[str, Any] = pickle.loads(job_state)  # noqa: S301 (rows this test wrote)
    return {**state, "trigger": state["trigger"].__getstate__()}
