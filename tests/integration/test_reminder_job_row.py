"""A task's job row written with the task is the row APScheduler itself would store; jobs
stored by earlier versions still load."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import create_engine, select

from scheduler_app.cron.crontab import CrontabTrigger
from scheduler_app.engine.executor import registered_job
from scheduler_app.engine.scheduler import (
    JOBS,
    QuarantiningJobStore,
    schedule_task_job,
    task_job_row,
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
        schedule_task_job(scheduler, "deliver_reminder", "reminder", "r-1", due)
    finally:
        scheduler.shutdown(wait=False)
    with engine.connect() as connection:
        stored = connection.execute(select(JOBS)).one()
    engine.dispose()

    row = task_job_row("deliver_reminder", "reminder", "r-1", due)
    assert row["id"] == "reminder:r-1"
    assert row["id"] == stored.id
    assert row["next_run_time"] == stored.next_run_time
    assert comparable(row["job_state"]) == comparable(stored.job_state)


def comparable(job_state: bytes) -> dict[str, Any]:
    """The pickled job state, with its trigger (which has no equality) as its own state."""
    state: dict[str, Any] = pickle.loads(job_state)  # noqa: S301 (rows this test wrote)
    return {**state, "trigger": state["trigger"].__getstate__()}


def test_jobs_stored_under_the_old_module_paths_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored jobs name their function and pickle their trigger by module path: those written
    before the engine and cron packages existed name scheduler_app.executor and
    scheduler_app.cron."""
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    store = QuarantiningJobStore(engine=engine)
    store.jobs_t.create(engine, checkfirst=True)
    due = datetime(2026, 12, 24, 18, 0, tzinfo=UTC)
    old_task = pickle.loads(task_job_row("deliver_reminder", "reminder", "r-1", due)["job_state"])  # noqa: S301
    old_task["func"] = "scheduler_app.executor:registered_job"
    trigger = CrontabTrigger.from_crontab("0 8 * * *", timezone=ZoneInfo("UTC"))
    old_cron = {**old_task, "id": "daily-report", "args": ("daily_report",), "trigger": trigger}
    # Pickled as the old code did: the trigger's class under its old module path.
    monkeypatch.setattr(CrontabTrigger, "__module__", "scheduler_app.cron")
    rows = [
        {"id": state["id"], "next_run_time": due.timestamp(), "job_state": pickle.dumps(state)}
        for state in (old_task, old_cron)
    ]
    monkeypatch.undo()
    old_state = bytes(rows[1]["job_state"])
    assert b"scheduler_app.cron" in old_state
    assert b"scheduler_app.cron.crontab" not in old_state
    with engine.begin() as connection:
        connection.execute(JOBS.insert(), rows)

    loaded = {job.id: job for job in store.get_all_jobs()}
    engine.dispose()
    assert set(loaded) == {"reminder:r-1", "daily-report"}
    assert loaded["reminder:r-1"].func is registered_job
    assert loaded["reminder:r-1"].args == ("deliver_reminder", "r-1")
    assert isinstance(loaded["daily-report"].trigger, CrontabTrigger)
