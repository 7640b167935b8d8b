"""A stored job that cannot be restored is set aside and shown, never silently deleted."""

from __future__ import annotations

import logging
import pickle
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert, select, update

from scheduler_app.app import create_app
from scheduler_app.engine.scheduler import JOBS
from tests.support import ADMIN, make_settings, outbox_messages, seed_reminder_jobs, wait_until


def test_undecodable_jobs_are_quarantined_and_the_rest_runs(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, database_url, scheduler={"recovery_interval_s": 0.3})
    with TestClient(create_app(settings)):
        pass  # creates the schema and the job table
    due = datetime.now(UTC) - timedelta(seconds=1)
    [broken_reminder_job, healthy_job] = seed_reminder_jobs(database_url, [due, due])
    engine = create_engine(database_url)
    with engine.begin() as connection:
        # A job whose function was renamed: a real stored state pointing at a missing module.
        stored = connection.execute(select(JOBS.c.job_state).where(JOBS.c.id == healthy_job))
        renamed = pickle.loads(stored.scalar_one())  # noqa: S301 (our own test data)
        renamed.update(id="nightly-export", func="scheduler_app.gone:export")
        connection.execute(
            update(JOBS).where(JOBS.c.id == broken_reminder_job).values(job_state=b"\x80garbage")
        )
        connection.execute(
            insert(JOBS).values(
                id="nightly-export",
                next_run_time=time.time() - 1,
                job_state=pickle.dumps(renamed),
            )
        )
    engine.dispose()

    caplog.set_level(logging.ERROR, logger="scheduler_app.engine.scheduler")
    with TestClient(create_app(settings)) as client:
        listed = wait_until(
            lambda: (
                items
                if len(items := client.get("/admin/quarantined-jobs", headers=ADMIN).json()) == 2
                else None
            )
        )
        assert {item["id"] for item in listed} == {broken_reminder_job, "nightly-export"}
        assert all(item["error"] for item in listed)
        assert client.get("/admin/quarantined-jobs").status_code == 401

        # The reminder row is the truth: recovery gives it a fresh job, and it is delivered.
        reminder_id = broken_reminder_job.removeprefix("reminder:")
        wait_until(
            lambda: (
                client.get(f"/reminders/{reminder_id}", headers=ADMIN).json()["status"] == "sent"
            )
        )
        healthy_id = healthy_job.removeprefix("reminder:")
        assert client.get(f"/reminders/{healthy_id}", headers=ADMIN).json()["status"] == "sent"

        # Restoring an unrepaired job puts it back; the scheduler sets it aside again.
        assert (
            client.post("/admin/quarantined-jobs/nightly-export/restore", headers=ADMIN).status_code
            == 204
        )
        wait_until(
            lambda: (
                "nightly-export"
                in {
                    item["id"]
                    for item in client.get("/admin/quarantined-jobs", headers=ADMIN).json()
                }
            )
        )
        missing = client.post("/admin/quarantined-jobs/none/restore", headers=ADMIN)
        assert missing.status_code == 404
    assert "set aside in quarantined_jobs" in caplog.text
    ids = {str(message["X-Reminder-Id"]) for message in outbox_messages(settings.mail.outbox_dir)}
    assert ids == {reminder_id, healthy_id}
