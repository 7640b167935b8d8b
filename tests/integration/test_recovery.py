"""Start-up recovery: reminders whose job was lost are scheduled again, or marked missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from scheduler_app.api.schemas import ReminderCreate
from scheduler_app.app import create_app
from scheduler_app.db.engine import create_db_engine, create_session_factory
from scheduler_app.db.migrate import upgrade_database
from scheduler_app.db.models import Task
from scheduler_app.engine.scheduler import JOBS, task_job_id
from scheduler_app.reminders import service as reminders
from scheduler_app.settings import Settings
from tests.support import make_settings, outbox_messages, wait_for_status


def store_reminder_without_job(settings: Settings, due: datetime) -> str:
    """The state a crash mid-delivery leaves: the row is scheduled, the job is gone."""
    engine = create_db_engine(settings.database_url)
    upgrade_database(engine)
    created_at = due - timedelta(minutes=5)
    with create_session_factory(engine)() as session:
        request = ReminderCreate(email="ada@example.com", delay_seconds=300)
        [subscription] = reminders.subscribe_all(
            session, [reminders.SubscribeRequest(request, created_at, due, settings.reminders)]
        )
        session.execute(
            delete(JOBS).where(JOBS.c.id == task_job_id("reminder", subscription.reminder_id))
        )
        session.commit()
    engine.dispose()
    return subscription.reminder_id


def test_a_reminder_that_lost_its_job_is_delivered_at_start(settings: Settings) -> None:
    reminder_id = store_reminder_without_job(settings, datetime.now(UTC) - timedelta(hours=2))

    with TestClient(create_app(settings)) as client:
        shown = wait_for_status(client, reminder_id, "sent")
    assert shown["attempts"] == 1
    [message] = outbox_messages(settings.mail.outbox_dir)
    assert message["X-Reminder-Id"] == reminder_id


def test_a_reminder_past_the_late_window_is_missed_with_the_reason(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url, reminders={"late_window_s": 3600})
    reminder_id = store_reminder_without_job(settings, datetime.now(UTC) - timedelta(hours=2))

    with TestClient(create_app(settings)) as client:
        shown = wait_for_status(client, reminder_id, "missed")
    assert shown["attempts"] == 0
    assert "past the late-delivery window of 1h00m00s" in str(shown["last_error"])
    assert shown["finished_at"] is not None
    assert outbox_messages(settings.mail.outbox_dir) == []


def test_the_periodic_sweep_recovers_without_a_restart(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, scheduler={"recovery_interval_s": 0.2})
    with TestClient(create_app(settings)) as client:
        created = client.post(
            "/subscribe", json={"email": "ada@example.com", "delay_seconds": 3600}
        ).json()
        engine = create_db_engine(settings.database_url)
        with create_session_factory(engine)() as session:
            # As if the job insert had failed after the row was committed.
            client.app_state["runtime"].unschedule_task("deliver_reminder", created["id"])
            session.execute(
                update(Task)
                .where(Task.id == created["id"])
                .values(run_at=datetime.now(UTC) - timedelta(seconds=1))
            )
            session.commit()
        engine.dispose()
        wait_for_status(client, created["id"], "sent", timeout_s=5)


def test_restarting_keeps_one_job_per_reminder(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        ids = [
            client.post("/subscribe", json={"email": "a@example.com", "delay_seconds": 600}).json()[
                "id"
            ]
            for _ in range(3)
        ]
    for _ in range(3):
        with TestClient(create_app(settings)) as client:
            runtime = client.app_state["runtime"]
            jobs = {job.id for job in runtime.scheduler.get_jobs()}
    assert jobs - {"token-cleanup"} == {f"reminder:{reminder_id}" for reminder_id in ids}
    engine = create_db_engine(settings.database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(Task.status)).scalars().all()
    engine.dispose()
    assert rows == ["scheduled"] * 3


def test_a_lost_job_is_restored_once_its_reminder_comes_within_two_sweeps(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url, scheduler={"recovery_interval_s": 600})
    now = datetime.now(UTC)
    clock_readings = [now]
    with TestClient(create_app(settings, clock=lambda: clock_readings[-1])) as client:
        runtime = client.app_state["runtime"]
        created = client.post(
            "/subscribe", json={"email": "ada@example.com", "delay_seconds": 3600}
        ).json()
        runtime.unschedule_task("deliver_reminder", created["id"])
        assert client.portal is not None

        # Due in an hour, past the horizon of two sweeps (20 min): not looked at yet.
        assert client.portal.call(runtime.recover) == 0
        clock_readings.append(now + timedelta(minutes=45))
        assert client.portal.call(runtime.recover) == 1
        [job] = [job for job in runtime.scheduler.get_jobs() if created["id"] in job.id]
    assert job.next_run_time == datetime.fromisoformat(created["remind_at"])
